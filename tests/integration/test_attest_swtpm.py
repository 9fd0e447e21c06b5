"""Keys, credential activation and quotes on a real swtpm; tpm2-tools as the oracle."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from tboot_py.attest import credential, keys
from tboot_py.attest.quote import collect_evidence
from tboot_py.errors import InputError, TPMError
from tboot_py.tpm import wire as st
from tboot_py.tpm.esapi import EsapiTPM
from tboot_py.tpm.evidence import parse_evidence
from tboot_py.tpm.swtpm import Swtpm
from tboot_py.verify import ekcert
from tboot_py.verify import errors as ve
from tboot_py.verify.quote import TrustedAK, load_trusted_ak, verify_quote

pytestmark = pytest.mark.integration
SEL = st.PCRSelection.parse_spec("sha1:0-7+sha256:0-7,16+sha384:0")


@pytest.fixture
def tpm(swtpm: Swtpm) -> Iterator[EsapiTPM]:
    t = EsapiTPM(swtpm.tcti)
    try:
        yield t
    finally:
        t.close()


def _transient_handles(tcti: str) -> str:
    r = subprocess.run(["tpm2_getcap", "-T", tcti, "handles-transient"], capture_output=True, text=True, check=True)
    return r.stdout.strip()


@pytest.mark.parametrize("kind", ["rsa", "ecc384"])
def test_ek_certificate_chains_to_swtpm_ca(tpm: EsapiTPM, ca_dir: Path, kind: str) -> None:
    ek = keys.create_ek(tpm, kind)
    assert ek.certificate is not None
    # The key derived from the TCG template is the certified key (openssl as the oracle).
    cert = x509.load_der_x509_certificate(ek.certificate)
    assert ekcert.public_matches_certificate(ek.public, cert.public_bytes(Encoding.DER))
    chain = ekcert.verify_ek_chain(ek.certificate, ca_dir)
    assert chain[-1] == "CN=swtpm-localca-rootca"


def test_ek_chain_from_another_ca_is_refused(tpm: EsapiTPM, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "swtpm-localca")])  # same name, other key
    now = dt.datetime.now(dt.UTC)
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
          .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=9))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(key, hashes.SHA256()))
    (tmp_path / "other.pem").write_bytes(ca.public_bytes(Encoding.PEM))
    ek = keys.create_ek(tpm, "rsa")
    assert ek.certificate is not None
    with pytest.raises(ekcert.EKCertificateError, match="no trusted CA signed"):
        ekcert.verify_ek_chain(ek.certificate, tmp_path)


def test_ek_certificate_nv_padding_is_stripped(tpm: EsapiTPM) -> None:
    ek = keys.create_ek(tpm, "rsa")
    assert ek.certificate is not None
    assert ekcert.strip_der_padding(ek.certificate + b"\xff" * 40) == ek.certificate
    assert ekcert.strip_der_padding(ek.certificate + b"\x00" * 7) == ek.certificate


@pytest.mark.parametrize("ek_kind", ["rsa", "ecc"])
def test_credential_activation(tpm: EsapiTPM, swtpm: Swtpm, tmp_path: Path, ek_kind: str) -> None:
    ak = keys.load_or_create_ak(tpm, tmp_path / "ak", "rsa")
    ek = keys.create_ek(tpm, ek_kind)
    assert credential.challenge(tpm, ak, ek)
    # A credential bound to another AK name does not activate.
    blob, enc = credential.make_credential(ek.public, b"\x00\x0b" + bytes(32), os.urandom(16))
    with pytest.raises(TPMError):
        credential.activate(tpm, ak, ek_kind, blob, enc)
    assert _transient_handles(swtpm.tcti) == ""


def test_ak_persists_across_contexts_and_reloads(swtpm: Swtpm, tmp_path: Path) -> None:
    state = tmp_path / "ak"
    with_tpm = EsapiTPM(swtpm.tcti)
    first = keys.load_or_create_ak(with_tpm, state, "ecc")
    with_tpm.close()
    t = EsapiTPM(swtpm.tcti)
    try:
        assert keys.load_or_create_ak(t, state, "ecc") == first
        subprocess.run(["tpm2_evictcontrol", "-T", swtpm.tcti, "-C", "o", "-c", hex(first.handle)],
                       capture_output=True, check=True)
        again = keys.load_or_create_ak(t, state, "ecc")  # reloaded from the saved blob
        assert again.public.raw == first.public.raw
        with pytest.raises(InputError, match="already in use"):
            keys.load_or_create_ak(t, tmp_path / "other-state", "ecc")
    finally:
        t.close()
    assert _transient_handles(swtpm.tcti) == ""


@pytest.mark.parametrize("alg", ["rsa", "rsapss", "ecc", "ecc384"])
def test_tboot_quote_verifies_here_and_in_tpm2_checkquote(tpm: EsapiTPM, swtpm: Swtpm, tmp_path: Path,
                                                          alg: str) -> None:
    ak = keys.load_or_create_ak(tpm, tmp_path / "ak", alg)
    nonce = os.urandom(16)
    ev = parse_evidence(collect_evidence(tpm, ak, SEL, nonce).dumps())
    ek = keys.create_ek(tpm, "rsa")
    v = verify_quote(ev, TrustedAK.under_ek(ak.public, ek.public), nonce, SEL)
    assert v.signer_checked
    # The PCR values in the evidence are what tpm2_pcrread reads.
    r = subprocess.run(["tpm2_pcrread", "-T", swtpm.tcti, "sha256:16"], capture_output=True, text=True, check=True)
    assert v.pcrs["sha256"][16].hex().upper() in r.stdout.upper()
    with pytest.raises(ve.NonceMismatchError):
        verify_quote(ev, load_trusted_ak(tmp_path / "ak"), os.urandom(16), SEL)
    # Export in tpm2-tools formats; tpm2_checkquote is the oracle.
    out = tmp_path / "tt"
    from tboot_py.verify.tpm2_tools import export_quote

    export_quote(ev, SEL, out)
    if alg == "rsapss":
        return  # tpm2_checkquote 5.4 verifies an RSA key from PEM as PKCS#1 v1.5 only
    h = v.sign_hash
    ok = subprocess.run(["tpm2_checkquote", "-u", str(out / "ak.pem"), "-m", str(out / "quote.msg"),
                         "-s", str(out / "quote.sig"), "-f", str(out / "quote.pcrs"), "-g", h, "-q", nonce.hex()],
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(["tpm2_checkquote", "-u", str(out / "ak.pem"), "-m", str(out / "quote.msg"),
                          "-s", str(out / "quote.sig"), "-f", str(out / "quote.pcrs"), "-g", h, "-q", "00"],
                         capture_output=True, text=True, check=False)
    assert bad.returncode != 0


@pytest.mark.parametrize(("alg", "scheme"), [("rsa", "rsassa"), ("ecc", "ecdsa")])
def test_tpm2_quote_verifies_with_quote_verify_cli(swtpm: Swtpm, tmp_path: Path, alg: str, scheme: str) -> None:
    T = ["-T", swtpm.tcti]
    d = tmp_path

    def run(*cmd: str) -> None:
        subprocess.run([cmd[0], *T, *cmd[1:]], capture_output=True, check=True, cwd=d)

    run("tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub")
    run("tpm2_flushcontext", "-t")
    run("tpm2_createak", "-C", "ek.ctx", "-c", "ak.ctx", "-G", alg, "-g", "sha256", "-s", scheme,
        "-u", "ak.pub", "-n", "ak.name", "-f", "tss")
    run("tpm2_flushcontext", "-t")
    run("tpm2_quote", "-c", "ak.ctx", "-l", "sha1:0,1,7+sha256:0,1,7,16", "-q", "cafe01", "-m", "q.msg",
        "-s", "q.sig", "-o", "q.pcrs", "-g", "sha256")
    run("tpm2_flushcontext", "-t")
    args = ["quote", "verify", "--ak", str(d / "ak.pub"), "-m", str(d / "q.msg"), "-s", str(d / "q.sig"),
            "-f", str(d / "q.pcrs")]
    r = run_cli(*args, "-q", "cafe01", "--json")
    assert r.rc == 0, r.err + r.out
    out = json.loads(r.out)
    assert out["verified"] and out["selection"] == "sha1:0,1,7+sha256:0,1,7,16"
    pcrread = subprocess.run(["tpm2_pcrread", *T, "sha256:16"], capture_output=True, text=True, check=True).stdout
    assert out["pcrs"]["sha256"]["16"].upper() in pcrread.upper()
    bad = run_cli(*args, "-q", "cafe02")
    assert bad.rc == 1 and "nonce" in bad.out


def test_cli_attest_and_verify(swtpm: Swtpm, ca_dir: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    r = run_cli("attest", "ak", "--tpm", swtpm.tcti, "--state", str(state), "--json")
    assert r.rc == 0, r.err
    ev = tmp_path / "ev.json"
    r = run_cli("attest", "quote", "--tpm", swtpm.tcti, "--state", str(state), "--pcrs", "sha256:0-7",
                "--nonce", "0a0b0c0d0e0f1011", "--ek-cert", "--out", str(ev))
    assert r.rc == 0, r.err
    r = run_cli("verify", str(ev), "--ak", str(state), "--nonce", "0a0b0c0d0e0f1011", "--ek-ca", str(ca_dir),
                "--json")
    assert r.rc == 0, r.err + r.out
    assert json.loads(r.out)["signer_checked"] is True
    r = run_cli("verify", str(ev), "--ak", str(state), "--nonce", "0a0b0c0d0e0f1012")
    assert r.rc == 1 and "nonce" in r.out
    r = run_cli("verify", str(ev), "--ak", str(state), "--nonce", "0a0b0c0d0e0f1011", "--pcrs", "sha256:0-8")
    assert r.rc == 1 and "selection" in r.out
    # --pcrs names what the quote must cover at least; --exact demands that selection and no more.
    r = run_cli("verify", str(ev), "--ak", str(state), "--nonce", "0a0b0c0d0e0f1011", "--pcrs", "sha256:0-3,7")
    assert r.rc == 0, r.out
    nonce = "0a0b0c0d0e0f1011"
    r = run_cli("verify", str(ev), "--ak", str(state), "--nonce", nonce, "--pcrs", "sha256:0-3,7", "--exact")
    assert r.rc == 1 and "selection" in r.out
    r = run_cli("verify", str(ev), "--ak", str(state), "--nonce", "0a0b0c0d0e0f1011", "--pcrs", "sha256:0-7", "--exact")
    assert r.rc == 0, r.out
    r = run_cli("verify", str(ev), "--ak", str(state), "--nonce", "0a0b0c0d0e0f1011", "--pcrs", "sha1:0")
    assert r.rc == 1 and "selection" in r.out
    r = run_cli("verify", str(tmp_path / "missing.json"), "--ak", str(state), "--nonce", "0001020304050607")
    assert r.rc == 2 and "Traceback" not in r.err
    r = run_cli("attest", "activate", "--tpm", swtpm.tcti, "--state", str(state), "--ek-ca", str(ca_dir))
    assert r.rc == 0, r.err


def test_ek_certificate_of_another_tpm_is_not_accepted_for_this_ak(swtpm: Swtpm, ca_dir: Path,
                                                                   tmp_path: Path) -> None:
    """A genuine EK certificate proves nothing about an AK unless the quote's signer is an
    AK under that EK: a certificate taken from another TPM (same CA) must be refused."""
    from conftest import start_swtpm

    state = tmp_path / "state"
    assert run_cli("attest", "ak", "--tpm", swtpm.tcti, "--state", str(state)).rc == 0
    ev = tmp_path / "ev.json"
    r = run_cli("attest", "quote", "--tpm", swtpm.tcti, "--state", str(state), "--pcrs", "sha256:0-7",
                "--nonce", "0a0b0c0d0e0f1011", "--ek-cert", "--out", str(ev))
    assert r.rc == 0, r.err
    args = ["verify", str(ev), "--ak", str(state), "--nonce", "0a0b0c0d0e0f1011", "--ek-ca", str(ca_dir)]
    assert run_cli(*args).rc == 0
    other = start_swtpm(tmp_path / "other-swtpm", ca_dir)
    try:
        t = EsapiTPM(other.tcti)
        try:
            foreign = keys.read_ek_certificate(t, "rsa")
        finally:
            t.close()
    finally:
        other.stop()
    assert foreign is not None
    assert ekcert.check_ek_chain(foreign, ekcert.load_ca_dir(ca_dir)).ok  # a genuine certificate ...
    doc = json.loads(ev.read_text())
    import base64
    doc["ek_certificate"] = base64.b64encode(foreign).decode()
    ev.write_text(json.dumps(doc))
    r = run_cli(*args)
    assert r.rc == 1, r.out  # ... of another TPM
    assert "EK" in r.out


def test_quote_uses_the_ak_algorithm_recorded_in_the_state(swtpm: Swtpm, tmp_path: Path) -> None:
    state = tmp_path / "state"
    r = run_cli("attest", "ak", "--tpm", swtpm.tcti, "--state", str(state), "--alg", "ecc", "--json")
    assert r.rc == 0, r.err
    name = json.loads(r.out)["name"]
    ev = tmp_path / "ev.json"
    r = run_cli("attest", "quote", "--tpm", swtpm.tcti, "--state", str(state), "--pcrs", "sha256:0-7",
                "--nonce", "0a0b0c", "--out", str(ev))
    assert r.rc == 0, r.err
    assert r.out.startswith("quoted sha256:0,1,2,3,4,5,6,7 with the ecc AK at 0x81010002")
    assert name in r.out and str(ev) in r.out
    r = run_cli("attest", "quote", "--tpm", swtpm.tcti, "--state", str(state), "--pcrs", "sha256:0",
                "--nonce", "0a", "--out", "-", "--json")
    assert r.rc == 0 and json.loads(r.out)["format"] == "tboot-py-evidence/1"
    assert json.loads(r.err) == {"out": "-", "ak": {"alg": "ecc", "handle": "0x81010002", "name": name},
                                 "selection": "sha256:0", "nonce": "0a", "event_logs": [], "ek_certificate": False}
    r = run_cli("attest", "quote", "--tpm", swtpm.tcti, "--state", str(state), "--alg", "rsa", "--pcrs", "sha256:0",
                "--nonce", "0a", "--out", str(ev))
    assert r.rc == 2 and "holds a ecc AK" in r.err
