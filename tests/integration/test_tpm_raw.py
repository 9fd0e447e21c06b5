"""The raw swtpm command client (tboot_py.tpm.raw) against a real swtpm: its PCR values are the
TPM's, its quotes verify with the AK over the caller's nonce, and errors are one-line TPMErrors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tboot_py import algorithms
from tboot_py.attest import keys
from tboot_py.errors import Error, TPMError
from tboot_py.tpm.evidence import Evidence
from tboot_py.tpm.raw import RawTPM
from tboot_py.tpm.swtpm import Swtpm
from tboot_py.tpm.wire import PCRSelection
from tboot_py.verify.quote import verify_quote

SEL = PCRSelection.parse_spec("sha256:0-23")


@pytest.mark.parametrize("alg", ["ecc", "rsa"])
def test_raw_quote_verifies_and_matches_esapi(swtpm: Swtpm, tmp_path: Path, alg: str) -> None:
    esapi = keys.open_esapi(swtpm.tcti)
    try:
        esapi.extend(10, {"sha1": b"\x42" * 20, "sha256": b"\x42" * 32, "sha384": b"\x42" * 48})
        ak = keys.load_or_create_ak(esapi, tmp_path / "ak", alg, 0x81010010)
        want = esapi.read_pcrs(range(24), [algorithms.SHA256])
    finally:
        esapi.close()
    nonce = bytes(range(32))
    with RawTPM.from_tcti(swtpm.tcti) as raw:
        pcrs = raw.read_pcrs(SEL)
        attest, sig = raw.quote(0x81010010, SEL, nonce)
    assert pcrs == want
    ev = Evidence(attest, sig, pcrs, ak.public.raw)
    verified = verify_quote(ev, ak.public, nonce, SEL)
    assert verified.pcrs["sha256"][10] == want["sha256"][10]
    with pytest.raises(Error):  # another nonce: the signature does not cover it
        verify_quote(ev, ak.public, b"\x00" * 32, SEL)


def test_raw_errors_are_tpm_errors(swtpm: Swtpm) -> None:
    with RawTPM.from_tcti(swtpm.tcti) as raw, pytest.raises(TPMError, match="TPM2_Quote: TPM response code"):
        raw.quote(0x81010099, SEL, b"\x01" * 32)  # no key at that handle
    with pytest.raises(TPMError, match="swtpm:host=H,port=P"):
        RawTPM.from_tcti("device:/dev/tpmrm0")
