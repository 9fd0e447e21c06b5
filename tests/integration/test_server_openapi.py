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
