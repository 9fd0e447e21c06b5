"""The service's OpenAPI document drives schemathesis against a real server: no request it
generates (with the admin token, valid or not) gets a server error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tboot_py.server._harness import start_server
from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def test_schemathesis_finds_no_server_error(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "server")
    try:
        doc = httpx.get(srv.url + "/openapi.json").json()
        assert {"/v1/enroll", "/v1/attest", "/v1/attest/nonce", "/.well-known/jwks.json"} <= set(doc["paths"])
        st = Path(sys.executable).parent / "schemathesis"
        for token in (srv.token, "wrong-token"):
            r = subprocess.run([str(st), "run", srv.url + "/openapi.json", "--checks", "not_a_server_error",
                                "-H", f"Authorization: Bearer {token}", "-n", "20", "--seed", "1",
                                "--request-timeout", "30"], capture_output=True, text=True, timeout=600, check=False,
                               cwd=tmp_path)
            assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
            import re

            m = re.search(r"(\d+) generated, (\d+) passed", r.stdout)
            assert m and m.group(1) == m.group(2) and int(m.group(1)) > 100, r.stdout[-2000:]
        assert srv.proc.poll() is None
    finally:
        srv.stop()


def test_serve_refuses_plain_http_off_loopback(tmp_path: Path) -> None:
    r = run_cli("serve", "--state", str(tmp_path), "--listen", "0.0.0.0:7478")
    assert r.rc == 2 and "needs --tls-cert and --tls-key" in r.err
    r = run_cli("serve", "--state", str(tmp_path), "--listen", "127.0.0.1:7478", "--tls-cert", str(tmp_path / "c"))
    assert r.rc == 2 and "go together" in r.err
    r = run_cli("serve", "--state", str(tmp_path), "--listen", "nonsense")
    assert r.rc == 2 and "HOST:PORT" in r.err


def test_ear_verify_refuses_garbage(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pub = tmp_path / "k.pem"
    pub.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    r = run_cli("ear", "verify", "not.a.jwt", "--key", str(pub))
    assert r.rc == 1 and "NOT verified" in r.out
    r = run_cli("ear", "verify", "x", "--key", str(tmp_path / "missing.pem"))
    assert r.rc == 2


def test_serve_start_errors_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    r = run_cli("serve", "--state", str(tmp_path / "file" / "sub"))
    assert r.rc == 2 and len(r.err.strip().splitlines()) == 1 and "--state" in r.err, r.err
    r = run_cli("serve", "--state", str(tmp_path), "--db", "postgresql://nobody@127.0.0.1:1/none")
    assert r.rc == 3 and len(r.err.strip().splitlines()) == 1 and "database" in r.err, r.err
    r = run_cli("serve", "--state", str(tmp_path), "--db", "mysql://x/y")
    assert r.rc == 2 and "unsupported database URL" in r.err


def test_tls_listener_with_a_pinned_ca(tmp_path: Path) -> None:
    """--tls-cert/--tls-key serve HTTPS; a client pinning the CA gets through, one that does
    not trust it is refused."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from tboot_py.server.client import Client, ServerError

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tboot-py test server")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    crt, pem_key = tmp_path / "server.crt", tmp_path / "server.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem_key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    srv = start_server(tmp_path / "server", "--tls-cert", str(crt), "--tls-key", str(pem_key), scheme="https",
                       cacert=crt)
    try:
        assert srv.url.startswith("https://")
        pinned = Client([srv.url], cacert=crt)
        assert pinned.request("GET", "/v1/health")["status"] == "ok"
        pinned.close()
        stranger = Client([srv.url])
        with pytest.raises(ServerError) as e:
            stranger.request("GET", "/v1/health")
        assert "CERTIFICATE_VERIFY_FAILED" in str(e.value) or "certificate" in str(e.value).lower()
        stranger.close()
        tok = tmp_path / "server" / "admin-token"
        r = run_cli("fleet", "hosts", "--server", srv.url, "--admin-token-file", str(tok), "--cacert", str(crt),
                    "--json")
        assert r.rc == 0, r.err
    finally:
        srv.stop()
