"""The TPM 2.0 quote from a Windows GCE Shielded VM (go-attestation test data) verifies, and
stops verifying when any byte of its attestation or signature changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CORPUS, HAVE_CORPUS

from tboot_py.tpm import wire as st
from tboot_py.tpm.evidence import Evidence, parse_pcr_json
from tboot_py.verify.errors import NonceTooShortError
from tboot_py.verify.quote import check_quote, verify_quote

STEM = "go-attestation__windows_gcp_shielded_vm"
pytestmark = pytest.mark.corpus


def _bundle(corpus_dir: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((corpus_dir / "expected" / f"{STEM}.quote.json").read_text())
    return data


def _evidence(b: dict[str, object], attest: bytes | None = None, sig: bytes | None = None) -> Evidence:
    return Evidence(attest if attest is not None else bytes.fromhex(str(b["quote_hex"])),
                    sig if sig is not None else bytes.fromhex(str(b["signature_hex"])),
                    parse_pcr_json(b["pcrs"]))


def test_corpus_quote_verifies(corpus_dir: Path) -> None:
    b = _bundle(corpus_dir)
    ak = st.parse_public(bytes.fromhex(str(b["ak_public_hex"])))
    assert b["nonce_hex"] == ""  # an archived quote over no nonce: it proves no freshness
    with pytest.raises(NonceTooShortError):
        verify_quote(_evidence(b), ak, b"", st.PCRSelection.of({"sha1": range(24)}))
    v = verify_quote(_evidence(b), ak, b"", st.PCRSelection.of({"sha1": range(24)}), allow_empty_nonce=True)
    assert v.sign_hash == "sha1"
    # The quoted values are the TPM-read PCRs the corpus records independently.
    expected = json.loads((corpus_dir / "expected" / f"{STEM}.pcrs.json").read_text())
    assert {str(i): v.pcrs["sha1"][i].hex() for i in range(24)} == expected["sha1"]
    # The AK was created under the SRK, whose name the bundle does not carry.
    assert not v.signer_checked


def _cases() -> list[tuple[str, int]]:
    if not HAVE_CORPUS:
        return []
    b = json.loads((CORPUS / "expected" / f"{STEM}.quote.json").read_text())
    return [("attest", i) for i in range(len(b["quote_hex"]) // 2)] + \
        [("signature", i) for i in range(len(b["signature_hex"]) // 2)]


@pytest.mark.parametrize(("part", "offset"), _cases())
def test_flipped_byte_fails(corpus_dir: Path, part: str, offset: int) -> None:
    b = _bundle(corpus_dir)
    ak = st.parse_public(bytes.fromhex(str(b["ak_public_hex"])))
    raw = bytearray.fromhex(str(b["quote_hex"] if part == "attest" else b["signature_hex"]))
    raw[offset] ^= 0x5A
    ev = _evidence(b, attest=bytes(raw)) if part == "attest" else _evidence(b, sig=bytes(raw))
    r = check_quote(ev, ak, b"", allow_empty_nonce=True)
    assert not r.ok, f"{part} byte {offset} changed and the quote still verified"
    assert r.error is not None and r.reason
