"""TPM2_Quote over a PCR selection with a verifier nonce, packed as evidence."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from tboot_py import algorithms
from tboot_py.attest.keys import AK
from tboot_py.errors import InputError, TPMError
from tboot_py.tpm import wire as st
from tboot_py.tpm.evidence import EventLogBlob, Evidence, pcr_digest

if TYPE_CHECKING:
    from tboot_py.tpm.esapi import EsapiTPM

#: TPM2B_DATA is limited to the size of the largest digest (Part 2, 10.4.3).
MAX_NONCE = 64


def quote(tpm: EsapiTPM, ak: AK, selection: st.PCRSelection, nonce: bytes) -> tuple[bytes, bytes]:
    """Quote ``selection`` with the AK; returns (TPMS_ATTEST, TPMT_SIGNATURE) bytes."""
    from tboot_py.tpm import keyops as ops

    if len(nonce) > MAX_NONCE:
        raise InputError(f"nonce is {len(nonce)} bytes; at most {MAX_NONCE}")
    if not selection.banks or not any(b.pcrs for b in selection.banks):
        raise InputError("empty PCR selection")
    with ops.persistent(tpm, ak.handle) as key:
        if key.public != ak.public.raw:
            raise TPMError(f"persistent handle 0x{ak.handle:08x} no longer holds this AK")
        return ops.quote(tpm, key, selection.marshal(), nonce)


def collect_evidence(tpm: EsapiTPM, ak: AK, selection: st.PCRSelection, nonce: bytes,
                     event_logs: Iterable[EventLogBlob] = (), ek_certificate: bytes | None = None,
                     attempts: int = 3) -> Evidence:
    """Read the selected PCRs and quote them. Retries when a PCR changed in between (an
    extend raced with the quote), so the PCR values in the evidence match the pcrDigest."""
    banks = [b.alg for b in selection.banks]
    if any(a is None for a in banks):
        raise InputError(f"PCR selection {selection} names an unknown bank")
    sign_alg = algorithms.by_id(ak.public.scheme_hash) or algorithms.SHA256
    for _ in range(attempts):
        pcrs: dict[str, dict[int, bytes]] = {}
        for b in selection.banks:
            alg = b.alg
            assert alg is not None
            pcrs.update(tpm.read_pcrs(b.pcrs, [alg]))
        attest, sig = quote(tpm, ak, selection, nonce)
        parsed = st.parse_attest(attest, source="TPM2_Quote")
        if parsed.quote is not None and parsed.quote.pcr_digest == pcr_digest(pcrs, selection, sign_alg):
            return Evidence(attest, sig, pcrs, ak.public.raw, tuple(event_logs), ek_certificate)
    raise TPMError("PCR values kept changing while quoting")
