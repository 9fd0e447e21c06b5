"""TCG Canonical Event Log (CEL), JSON encoding: export and import.

Each record (TCG CEL 1.0, "CEL-JSON") is::

    {"recnum": 0, "pcr": 0, "digests": [{"hashAlg": "sha256", "digest": "<hex>"}],
     "content_type": "pcclient_std",
     "content": {"event_type": 3, "event_data": "<base64>"}}

Import re-encodes the records into the binary PC Client form and parses that, so an imported
log goes through the same bounds checks and yields the same model. Only ParseError escapes.
"""

from __future__ import annotations

import base64
import binascii
import struct
from typing import Any

from tboot_py import algorithms, jsonin
from tboot_py.errors import ParseError, UnknownAlgorithmError
from tboot_py.eventlog.model import EV_NO_ACTION, EventLog, LogFormat, bank_name
from tboot_py.eventlog.parse import SPEC_ID_EVENT03, parse_log, parse_spec_id

MAX_CEL_JSON = 512 * 2**20
MAX_RECORDS = 2_000_000


def to_cel(log: EventLog) -> list[dict[str, Any]]:
    """The log as a CEL-JSON array (every record, header included)."""
    return [
        {
            "recnum": e.seq,
            "pcr": e.pcr,
            "digests": [{"hashAlg": bank_name(a), "digest": d.hex()} for a, d in e.digests],
            "content_type": "pcclient_std",
            "content": {"event_type": e.event_type, "event_data": base64.b64encode(e.data).decode("ascii")},
        }
        for e in log.events
    ]


def _alg_id(name: Any, where: int) -> int:
    if not isinstance(name, str):
        raise ParseError("hashAlg must be a string", where)
    if name.lower().startswith("alg_0x"):
        try:
            return int(name[6:], 16)
        except ValueError as e:
            raise ParseError(f"bad hashAlg {name!r}", where) from e
    try:
        return algorithms.by_name(name).alg_id
    except UnknownAlgorithmError as e:
        raise ParseError(f"unknown hashAlg {name!r}", where) from e


def _u32(v: Any, what: str, where: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 0xFFFFFFFF:
        raise ParseError(f"{what} must be a 32-bit unsigned integer", where)
    return v


def from_cel(text: str | bytes, source: str | None = None) -> EventLog:
    """Parse CEL-JSON (an array of pcclient_std records). ``ParseError.offset`` is the record
    index for structural errors."""
    try:
        return _from_cel(text, source)
    except ParseError as e:
        if e.source is None:
            e.source = source
        raise
    except Exception as e:  # never let another exception type escape a parser
        raise ParseError(f"internal CEL import failure: {type(e).__name__}", 0, source) from e


def _from_cel(text: str | bytes, source: str | None) -> EventLog:
    if len(text) > MAX_CEL_JSON:
        raise ParseError("CEL document too large", 0)
    try:
        doc = jsonin.loads(text)
    except (ValueError, RecursionError) as e:
        raise ParseError(f"not JSON: {e}", getattr(e, "pos", 0) or 0) from e
    if isinstance(doc, dict) and isinstance(doc.get("events"), list):
        doc = doc["events"]
    if not isinstance(doc, list) or not doc:
        raise ParseError("CEL-JSON must be a non-empty array of records", 0)
    if len(doc) > MAX_RECORDS:
        raise ParseError("too many CEL records", 0)
    records: list[tuple[int, int, list[tuple[int, bytes]], bytes]] = []
    for i, rec in enumerate(doc):
        if not isinstance(rec, dict):
            raise ParseError(f"record {i} is not an object", i)
        if rec.get("content_type") != "pcclient_std":
            raise ParseError(f"record {i}: content_type {rec.get('content_type')!r} is not supported", i)
        if "recnum" in rec and rec["recnum"] != i:
            raise ParseError(f"record {i}: recnum {rec['recnum']!r} out of sequence", i)
        pcr = _u32(rec.get("pcr"), "pcr", i)
        content = rec.get("content")
        if not isinstance(content, dict):
            raise ParseError(f"record {i}: content must be an object", i)
        etype = _u32(content.get("event_type"), "event_type", i)
        raw = content.get("event_data", "")
        if not isinstance(raw, str):
            raise ParseError(f"record {i}: event_data must be base64 text", i)
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ParseError(f"record {i}: event_data is not base64", i) from e
        digests = rec.get("digests")
        if not isinstance(digests, list):
            raise ParseError(f"record {i}: digests must be an array", i)
        dl: list[tuple[int, bytes]] = []
        for d in digests:
            if not isinstance(d, dict) or not isinstance(d.get("digest"), str):
                raise ParseError(f"record {i}: bad digest entry", i)
            try:
                value = bytes.fromhex(d["digest"])
            except ValueError as e:
                raise ParseError(f"record {i}: digest is not hex", i) from e
            dl.append((_alg_id(d.get("hashAlg"), i), value))
        records.append((pcr, etype, dl, data))
    return parse_log(_encode(records), source=source)


def _encode(records: list[tuple[int, int, list[tuple[int, bytes]], bytes]]) -> bytes:
    out = bytearray()
    sizes: dict[int, int] | None = None
    for i, (pcr, etype, dl, data) in enumerate(records):
        if sizes is None:
            if len(dl) != 1 or dl[0][0] != algorithms.SHA1.alg_id or len(dl[0][1]) != 20:
                raise ParseError(f"record {i}: a SHA1-format record needs exactly one 20-byte sha1 digest", i)
            out += struct.pack("<II", pcr, etype) + dl[0][1] + struct.pack("<I", len(data)) + data
            if etype == EV_NO_ACTION and pcr == 0 and data[:16] == SPEC_ID_EVENT03:
                sizes = dict(parse_spec_id(data, 0).algorithms)
            continue
        out += struct.pack("<III", pcr, etype, len(dl))
        for alg, d in dl:
            if sizes.get(alg) != len(d):
                raise ParseError(f"record {i}: {bank_name(alg)} digest of {len(d)} bytes does not fit the header", i)
            out += struct.pack("<H", alg) + d
        out += struct.pack("<I", len(data)) + data
    return bytes(out)


__all__ = ["LogFormat", "from_cel", "to_cel"]
