"""The evidence bundle: a TPM quote, the quoted PCR values, the AK and the event logs.

JSON schema (``format`` = ``tboot-py-evidence/1``; see README.md, "Evidence")::

    {
      "format": "tboot-py-evidence/1",
      "attest": "<base64 TPMS_ATTEST>",
      "signature": "<base64 TPMT_SIGNATURE>",
      "ak_public": "<base64 TPMT_PUBLIC>",
      "pcrs": {"sha256": {"0": "<hex>", ...}, ...},
      "event_logs": [{"name": "firmware", "log": "<base64 binary TCG log>"}, ...],
      "ek_certificate": "<base64 DER>" | null
    }

Everything parsed here is untrusted until :func:`tboot_py.verify.verify_quote` checks it,
hence the ``untrusted_`` names.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tboot_py import algorithms, jsonin
from tboot_py.errors import ParseError
from tboot_py.tpm import wire as st

FORMAT = "tboot-py-evidence/1"
MAX_EVIDENCE_BYTES = 64 * 1024 * 1024
MAX_LOGS = 8


@dataclass(frozen=True)
class EventLogBlob:
    name: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class Evidence:
    """An evidence bundle, as produced by a TPM and not yet verified."""

    untrusted_attest: bytes = field(repr=False)
    untrusted_signature: bytes = field(repr=False)
    untrusted_pcrs: Mapping[str, Mapping[int, bytes]]
    untrusted_ak_public: bytes | None = field(default=None, repr=False)
    event_logs: tuple[EventLogBlob, ...] = ()
    ek_certificate: bytes | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "attest": _b64(self.untrusted_attest),
            "signature": _b64(self.untrusted_signature),
            "ak_public": None if self.untrusted_ak_public is None else _b64(self.untrusted_ak_public),
            "pcrs": {b: {str(i): v[i].hex() for i in sorted(v)} for b, v in self.untrusted_pcrs.items()},
            "event_logs": [{"name": e.name, "log": _b64(e.data)} for e in self.event_logs],
            "ek_certificate": None if self.ek_certificate is None else _b64(self.ek_certificate),
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(v: object, what: str) -> bytes:
    if not isinstance(v, str):
        raise ParseError(f"{what}: expected a base64 string", 0, "evidence")
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ParseError(f"{what}: bad base64: {e}", 0, "evidence") from e


def parse_pcr_json(obj: object, source: str = "pcrs") -> dict[str, dict[int, bytes]]:
    """``{"sha256": {"0": "<hex>"}}`` into ``{bank: {pcr: bytes}}`` with strict checks."""
    if not isinstance(obj, dict):
        raise ParseError("PCR values: expected an object of banks", 0, source)
    out: dict[str, dict[int, bytes]] = {}
    for bank, regs in obj.items():
        try:
            alg = algorithms.by_name(str(bank))
        except Exception as e:
            raise ParseError(f"PCR values: unknown bank {bank!r}", 0, source) from e
        if not isinstance(regs, dict):
            raise ParseError(f"PCR values for {bank}: expected an object", 0, source)
        vals: dict[int, bytes] = {}
        for k, v in regs.items():
            if not (isinstance(k, str) and k.isascii() and k.isdigit() and int(k) < 24):
                raise ParseError(f"PCR values for {bank}: bad PCR index {k!r}", 0, source)
            try:
                d = bytes.fromhex(v) if isinstance(v, str) else None
            except ValueError:
                d = None
            if d is None or len(d) != alg.size:
                raise ParseError(f"PCR {bank}:{k}: expected {alg.size} hex bytes", 0, source)
            vals[int(k)] = d
        out[alg.name] = vals
    return out


def parse_evidence(data: bytes | str, source: str = "evidence") -> Evidence:
    """Parse an evidence bundle (JSON). Raises only ParseError."""
    if isinstance(data, str):
        data = data.encode()
    if len(data) > MAX_EVIDENCE_BYTES:
        raise ParseError(f"evidence is larger than {MAX_EVIDENCE_BYTES} bytes", 0, source)
    try:
        obj = jsonin.loads(data)
    except (ValueError, RecursionError) as e:
        raise ParseError(f"evidence is not JSON: {e}", getattr(e, "pos", 0) or 0, source) from e
    if not isinstance(obj, dict):
        raise ParseError("evidence: expected a JSON object", 0, source)
    if obj.get("format") != FORMAT:
        raise ParseError(f"evidence: format is {obj.get('format')!r}, expected {FORMAT!r}", 0, source)
    attest = _unb64(obj.get("attest"), "attest")
    sig = _unb64(obj.get("signature"), "signature")
    akp = obj.get("ak_public")
    ak = None if akp is None else _unb64(akp, "ak_public")
    pcrs = parse_pcr_json(obj.get("pcrs"), source)
    logs_obj = obj.get("event_logs", [])
    if not isinstance(logs_obj, list) or len(logs_obj) > MAX_LOGS:
        raise ParseError(f"evidence: event_logs must be a list of at most {MAX_LOGS}", 0, source)
    logs: list[EventLogBlob] = []
    for i, item in enumerate(logs_obj):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ParseError(f"evidence: event_logs[{i}] needs a name and a log", 0, source)
        logs.append(EventLogBlob(item["name"], _unb64(item.get("log"), f"event_logs[{i}].log")))
    ekc = obj.get("ek_certificate")
    return Evidence(attest, sig, pcrs, ak, tuple(logs), None if ekc is None else _unb64(ekc, "ek_certificate"))


def pcr_digest(pcrs: Mapping[str, Mapping[int, bytes]], selection: st.PCRSelection, alg: algorithms.HashAlg) -> bytes:
    """The quote's pcrDigest: H(PCR values concatenated in selection order) (Part 3, 18.4.1)."""
    h = alg.new()
    for b in selection.banks:
        vals = pcrs.get(b.bank)
        if vals is None:
            raise KeyError(b.bank)
        for i in b.pcrs:
            h.update(vals[i])
    return bytes(h.digest())
