"""tpm2-tools file formats for quotes (interop with ``tpm2_quote`` and ``tpm2_checkquote``).

``tpm2_quote -o`` (default ``--pcrs_format serialized``) writes in-memory C structures in
host byte order (little-endian on x86), not TPM wire format:

* ``TPML_PCR_SELECTION`` (132 bytes): UINT32 count, then 16 (TPM2_NUM_PCR_BANKS) entries of
  8 bytes: UINT16 hash, UINT8 sizeofSelect, BYTE pcrSelect[4], one padding byte;
* UINT32 number of ``TPML_DIGEST`` that follow;
* each ``TPML_DIGEST`` (532 bytes): UINT32 count, then 8 ``TPM2B_DIGEST`` of 66 bytes
  (UINT16 size, BYTE buffer[64]).

The digests fill the lists in selection order (bank by bank, PCRs ascending), 8 per list.
``-m`` holds the TPMS_ATTEST and ``-s`` the TPMT_SIGNATURE in TPM wire format.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING

from tboot_py import jsonin
from tboot_py.errors import ParseError
from tboot_py.tpm import wire as st
from tboot_py.tpm.evidence import Evidence

if TYPE_CHECKING:
    from pathlib import Path

_NUM_BANKS = 16
_SEL_ENTRY = 8
_SEL_SIZE = 4 + _NUM_BANKS * _SEL_ENTRY
_DIGESTS_PER_LIST = 8
_TPM2B_DIGEST = 2 + 64
_LIST_SIZE = 4 + _DIGESTS_PER_LIST * _TPM2B_DIGEST
_MAX_LISTS = 64  # 16 banks x 24 PCRs / 8 per list = 48


def parse_pcrs_serialized(data: bytes, source: str | None = None
                          ) -> tuple[st.PCRSelection, dict[str, dict[int, bytes]]]:
    """Parse ``tpm2_quote -o`` output. Raises only ParseError."""
    if len(data) < _SEL_SIZE + 4:
        raise ParseError(f"tpm2-tools PCR file is {len(data)} bytes, shorter than its header", len(data), source)
    count = struct.unpack_from("<I", data, 0)[0]
    if count > _NUM_BANKS:
        raise ParseError(f"selection count {count} exceeds {_NUM_BANKS}", 0, source)
    banks: list[st.PCRBankSelection] = []
    for i in range(count):
        off = 4 + i * _SEL_ENTRY
        alg_id, size = struct.unpack_from("<HB", data, off)
        if size > 4:
            raise ParseError(f"sizeofSelect {size} exceeds 4", off + 2, source)
        bits = data[off + 3 : off + 3 + size]
        pcrs = tuple(j for j in range(size * 8) if bits[j // 8] >> (j % 8) & 1)
        banks.append(st.PCRBankSelection(alg_id, pcrs, size))
    sel = st.PCRSelection(tuple(banks))
    nlists = struct.unpack_from("<I", data, _SEL_SIZE)[0]
    if nlists > _MAX_LISTS:
        raise ParseError(f"digest list count {nlists} exceeds {_MAX_LISTS}", _SEL_SIZE, source)
    expected_len = _SEL_SIZE + 4 + nlists * _LIST_SIZE
    if len(data) != expected_len:
        raise ParseError(f"tpm2-tools PCR file is {len(data)} bytes; its header announces {expected_len}",
                         min(len(data), expected_len), source)
    digests: list[bytes] = []
    for li in range(nlists):
        off = _SEL_SIZE + 4 + li * _LIST_SIZE
        n = struct.unpack_from("<I", data, off)[0]
        if n > _DIGESTS_PER_LIST:
            raise ParseError(f"TPML_DIGEST count {n} exceeds {_DIGESTS_PER_LIST}", off, source)
        for k in range(n):
            doff = off + 4 + k * _TPM2B_DIGEST
            size = struct.unpack_from("<H", data, doff)[0]
            if size > 64:
                raise ParseError(f"TPM2B_DIGEST size {size} exceeds 64", doff, source)
            digests.append(data[doff + 2 : doff + 2 + size])
    values: dict[str, dict[int, bytes]] = {}
    it = iter(digests)
    for b in sel.banks:
        alg = b.alg
        if alg is None:
            raise ParseError(f"unknown bank 0x{b.alg_id:04x} in the selection", 4, source)
        regs = values.setdefault(alg.name, {})
        for pcr in b.pcrs:
            d = next(it, None)
            if d is None:
                raise ParseError("fewer digests than selected PCRs", len(data), source)
            if len(d) != alg.size:
                raise ParseError(f"{alg.name} PCR {pcr} digest has {len(d)} bytes, not {alg.size}", 0, source)
            regs[pcr] = d
    if next(it, None) is not None:
        raise ParseError("more digests than selected PCRs", len(data), source)
    return sel, values


def write_pcrs_serialized(selection: st.PCRSelection, values: Mapping[str, Mapping[int, bytes]]) -> bytes:
    """Write PCR values in the ``tpm2_quote -o`` layout, for ``tpm2_checkquote -f``."""
    out = bytearray(struct.pack("<I", len(selection.banks)))
    flat: list[bytes] = []
    for b in selection.banks:
        bits = bytearray(4)
        for i in b.pcrs:
            bits[i // 8] |= 1 << (i % 8)
        out += struct.pack("<HB", b.alg_id, b.size_of_select) + bytes(bits) + b"\x00"
        flat.extend(values[b.bank][i] for i in b.pcrs)
    out += bytes(_SEL_ENTRY * (_NUM_BANKS - len(selection.banks)))
    lists = [flat[i : i + _DIGESTS_PER_LIST] for i in range(0, len(flat), _DIGESTS_PER_LIST)]
    out += struct.pack("<I", len(lists))
    for lst in lists:
        out += struct.pack("<I", len(lst))
        for d in lst:
            out += struct.pack("<H", len(d)) + d + bytes(64 - len(d))
        out += bytes(_TPM2B_DIGEST * (_DIGESTS_PER_LIST - len(lst)))
    return bytes(out)


def read_pcrs_file(data: bytes, source: str | None = None) -> dict[str, dict[int, bytes]]:
    """PCR values from JSON ``{"sha256": {"0": "<hex>"}}`` or a ``tpm2_quote -o`` file."""
    from tboot_py.tpm.evidence import parse_pcr_json

    if data.lstrip().startswith(b"{"):
        try:
            obj = jsonin.loads(data)
        except (ValueError, RecursionError) as e:
            raise ParseError(f"PCR file is not JSON: {e}", 0, source) from e
        if isinstance(obj, dict) and "pcrs" in obj:
            obj = obj["pcrs"]
        return parse_pcr_json(obj, source or "pcrs")
    return parse_pcrs_serialized(data, source)[1]


__all__ = ["export_quote", "parse_pcrs_serialized", "read_pcrs_file", "write_pcrs_serialized"]


def export_quote(evidence: Evidence, selection: st.PCRSelection, out: Path) -> None:
    """Write an evidence bundle's quote as tpm2-tools files: quote.msg (TPMS_ATTEST),
    quote.sig (TPMT_SIGNATURE), quote.pcrs (``tpm2_quote -o`` layout) and ak.pem."""
    from cryptography.hazmat.primitives import serialization

    from tboot_py.errors import InputError
    from tboot_py.fileio import write_atomic

    if evidence.untrusted_ak_public is None:
        raise InputError("the evidence carries no AK public area")
    ak = st.parse_public(evidence.untrusted_ak_public, source="AK public")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create {out}: {e.strerror}") from e
    files = {
        "quote.msg": evidence.untrusted_attest,
        "quote.sig": evidence.untrusted_signature,
        "quote.pcrs": write_pcrs_serialized(selection, evidence.untrusted_pcrs),
        "ak.pem": ak.crypto_key.public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo),
    }
    for name, data in files.items():
        write_atomic(out / name, data, what="tpm2-tools file")
