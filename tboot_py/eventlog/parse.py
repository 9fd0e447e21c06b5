"""Bounds-checked parser for binary TCG event logs.

Handles, with one model:

* SHA1-format logs: TCG_PCClientPCREvent records (PFP 10.4.2), as TPM 1.2 firmware and
  some TPM 2.0 firmware write them. Some firmware logs events (EV_S_CRTM_VERSION) before
  the Spec ID header; those stay SHA1-format records.
* Intel TXT (TPM 1.2) DRTM logs: SHA1-format records inside a "TXT Event Container".
* Crypto-agile logs: a SHA1-format EV_NO_ACTION record holding "Spec ID Event03"
  (PFP 10.4.5.1), then TCG_PCR_EVENT2 records (PFP 10.4.3). Digest sizes come from the
  header, so unknown algorithms and SM3 parse. A record may carry fewer digests than the
  header lists (Windows WBCL does), never an algorithm the header does not list.

Only :class:`~tboot_py.errors.ParseError` (with the byte offset) leaves this module.
Every length is checked against what is left before anything is sliced or allocated.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from tboot_py import algorithms
from tboot_py.errors import ParseError
from tboot_py.eventlog.model import EV_NO_ACTION, Event, EventLog, LogFormat, SpecIdEvent

if TYPE_CHECKING:
    from pathlib import Path

#: The kernel's copy of the firmware log (Linux securityfs).
DEFAULT_LOG_PATH = "/sys/kernel/security/tpm0/binary_bios_measurements"

#: Refuse to read more than this from a file (a firmware log is tens of KiB; a synthetic
#: benchmark log of 100,000 events is ~10 MiB).
MAX_LOG_SIZE = 256 * 2**20

SPEC_ID_EVENT03 = b"Spec ID Event03\x00"
TXT_CONTAINER_SIG = b"TXT Event Container\x00"
_TXT_HDR = struct.Struct("<20s12sBBBBIII")
_SHA1_HDR = struct.Struct("<II20sI")  # pcrIndex, eventType, digest, eventDataSize (PFP 10.4.2)
_EV2_HDR = struct.Struct("<III")  # pcrIndex, eventType, TPML_DIGEST_VALUES.count (PFP 10.4.3)
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_SPEC_ID_FIXED = struct.Struct("<16sIBBBBI")
_SHA1_ALG = 0x0004

#: TPM2_NUM_PCR_BANKS bound for a Spec ID header (TPM 2.0 Part 2, TPML_PCR_SELECTION);
#: TPM_ALG_ID is 16 bits, so a real header never lists more than a handful.
MAX_SPEC_ALGS = 16
MAX_DIGEST_SIZE = 512


def read_log_bytes(path: str | Path) -> bytes:
    """A log file's bytes, at most MAX_LOG_SIZE. A FIFO, a device, a larger file or a read
    error raise InputError (never read whole)."""
    from tboot_py.fileio import read_input

    # securityfs reports size 0 for binary_bios_measurements: read_file reads to the end.
    return read_input(path, "event log", MAX_LOG_SIZE)


def read_log(path: str | Path) -> EventLog:
    """Read and parse a log file. Read errors raise InputError, bad bytes ParseError."""
    return parse_log(read_log_bytes(path), source=str(path))


def parse_log(data: bytes, source: str | None = None) -> EventLog:
    """Parse a binary event log. Raises only ParseError (with the failing byte offset)."""
    try:
        return _parse(bytes(data), source)
    except ParseError:
        raise
    except Exception as e:  # a bug must not let another exception type escape
        raise ParseError(f"internal parser failure: {type(e).__name__}: {e}", 0, source) from e


def parse_spec_id(data: bytes, base: int = 0, source: str | None = None) -> SpecIdEvent:
    """Parse TCG_EfiSpecIDEvent (PFP 10.4.5.1); ``base`` is its offset for error reports."""
    n = len(data)
    if n < _SPEC_ID_FIXED.size:
        raise ParseError("Spec ID event shorter than its fixed part", base + n, source)
    sig, pclass, minor, major, errata, uintn, nalgs = _SPEC_ID_FIXED.unpack_from(data, 0)
    if sig != SPEC_ID_EVENT03:
        raise ParseError("not a Spec ID Event03 header", base, source)
    p = _SPEC_ID_FIXED.size
    if nalgs == 0 or nalgs > MAX_SPEC_ALGS:
        raise ParseError(f"Spec ID event lists {nalgs} algorithms (1..{MAX_SPEC_ALGS} allowed)", base + p - 4, source)
    if p + 4 * nalgs + 1 > n:
        raise ParseError(f"Spec ID event too short for {nalgs} algorithms", base + n, source)
    algs: list[tuple[int, int]] = []
    for _ in range(nalgs):
        alg_id, size = struct.unpack_from("<HH", data, p)
        if size == 0 or size > MAX_DIGEST_SIZE:
            raise ParseError(f"Spec ID digest size {size} for algorithm 0x{alg_id:04x}", base + p + 2, source)
        known = algorithms.by_id(alg_id)
        if known is not None and known.size != size:
            raise ParseError(f"Spec ID gives {known.name} a {size}-byte digest, not {known.size}", base + p + 2, source)
        if any(a == alg_id for a, _ in algs):
            raise ParseError(f"Spec ID lists algorithm 0x{alg_id:04x} twice", base + p, source)
        algs.append((alg_id, size))
        p += 4
    vsize = data[p]
    p += 1
    if p + vsize > n:
        raise ParseError(f"Spec ID vendorInfoSize {vsize} exceeds the {n - p} bytes left", base + p - 1, source)
    if p + vsize != n:
        raise ParseError(f"{n - p - vsize} trailing bytes after the Spec ID event", base + p + vsize, source)
    return SpecIdEvent(pclass, major, minor, errata, uintn, tuple(algs), data[p:p + vsize])


def _parse(buf: bytes, source: str | None) -> EventLog:
    n = len(buf)
    events: list[Event] = []
    append = events.append
    off = 0
    seq = 0
    spec: SpecIdEvent | None = None
    if n == 0:
        raise ParseError("empty event log", 0, source)
    if buf[:20] == TXT_CONTAINER_SIG:
        off, n = _txt_container(buf, source)
        if off == n:
            return EventLog(LogFormat.SHA1, None, (), source)
    # SHA1-format records until (and including) a Spec ID Event03 header.
    sha1_hdr = _SHA1_HDR.unpack_from
    hsize = _SHA1_HDR.size
    while off < n:
        if off + hsize > n:
            raise ParseError(f"truncated record header: {n - off} of {hsize} bytes", off, source)
        pcr, etype, digest, size = sha1_hdr(buf, off)
        start = off + hsize
        if size > n - start:
            raise ParseError(f"event data size {size} exceeds the {n - start} bytes left", off + 28, source)
        edata = buf[start:start + size]
        append(Event(seq, off, pcr, etype, ((_SHA1_ALG, digest),), edata))
        seq += 1
        rec = off
        off = start + size
        if etype == EV_NO_ACTION and pcr == 0 and edata[:16] == SPEC_ID_EVENT03:
            spec = parse_spec_id(edata, start, source)
            if digest != b"\x00" * 20:
                raise ParseError("Spec ID header record has a non-zero digest", rec + 8, source)
            break
    if spec is None:
        return EventLog(LogFormat.SHA1, None, tuple(events), source)
    _parse_agile(buf, off, n, seq, spec, events, source)
    return EventLog(LogFormat.CRYPTO_AGILE, spec, tuple(events), source)


def _txt_container(buf: bytes, source: str | None) -> tuple[int, int]:
    """Bounds of the records in an Intel TXT TPM 1.2 event-log container (Intel TXT Software
    Development Guide, "Event Log Format"; tboot include/txt/heap.h event_log_container_t):
    signature[20], reserved[12], 4 version bytes, size, pcr_events_offset, next_event_offset."""
    if len(buf) < _TXT_HDR.size:
        raise ParseError("truncated TXT event container header", len(buf), source)
    _sig, _res, major, _minor, _emaj, _emin, size, first, nxt = _TXT_HDR.unpack_from(buf, 0)
    if major != 1:
        raise ParseError(f"TXT event container version {major} is not supported", 32, source)
    if size > len(buf):
        raise ParseError(f"TXT container size {size} exceeds the {len(buf)} bytes of the log", 36, source)
    if not _TXT_HDR.size <= first <= nxt <= size:
        raise ParseError(f"TXT container offsets {first}..{nxt} out of bounds", 40, source)
    return first, nxt


def _parse_agile(buf: bytes, off: int, n: int, seq: int, spec: SpecIdEvent, events: list[Event],
                 source: str | None) -> None:
    """TCG_PCR_EVENT2 records from ``off`` up to ``n`` (the end of the log, or of the records
    of a TXT event container: the container space after next_event_offset is unused)."""
    sizes = dict(spec.algorithms)
    nalgs = len(spec.algorithms)
    # Fast path: a record carrying every bank in header order has a fixed layout.
    fast_fmt = "<III" + "".join(f"H{size}s" for _, size in spec.algorithms) + "I"
    fast = struct.Struct(fast_fmt)
    fast_size = fast.size
    fast_unpack = fast.unpack_from
    alg_ids = tuple(a for a, _ in spec.algorithms)
    a0, a1, a2 = (*alg_ids, 0, 0)[:3]
    hdr_unpack = _EV2_HDR.unpack_from
    u16 = _U16.unpack_from
    u32 = _U32.unpack_from
    append = events.append
    while off < n:
        rec = off
        if off + fast_size <= n:
            vals = fast_unpack(buf, off)
            if vals[2] == nalgs and vals[3:-1:2] == alg_ids:
                size = vals[-1]
                start = off + fast_size
                if size > n - start:
                    raise ParseError(f"event data size {size} exceeds the {n - start} bytes left",
                                     start - 4, source)
                digests: tuple[tuple[int, bytes], ...]
                if nalgs == 2:
                    digests = ((a0, vals[4]), (a1, vals[6]))
                elif nalgs == 3:
                    digests = ((a0, vals[4]), (a1, vals[6]), (a2, vals[8]))
                elif nalgs == 1:
                    digests = ((a0, vals[4]),)
                else:
                    digests = tuple(zip(alg_ids, vals[4:-1:2], strict=True))
                append(Event(seq, rec, vals[0], vals[1], digests, buf[start:start + size]))
                seq += 1
                off = start + size
                continue
        if off + 12 > n:
            raise ParseError(f"truncated record header: {n - off} of 12 bytes", off, source)
        pcr, etype, count = hdr_unpack(buf, off)
        if count > nalgs:
            raise ParseError(f"record carries {count} digests, the header lists {nalgs} algorithms", off + 8, source)
        p = off + 12
        dl: list[tuple[int, bytes]] = []
        for _ in range(count):
            if p + 2 > n:
                raise ParseError("truncated digest algorithm id", p, source)
            (alg,) = u16(buf, p)
            dsize = sizes.get(alg)
            if dsize is None:
                raise ParseError(f"digest algorithm 0x{alg:04x} is not in the Spec ID header", p, source)
            if any(a == alg for a, _ in dl):
                raise ParseError(f"digest algorithm 0x{alg:04x} appears twice in one record", p, source)
            p += 2
            if dsize > n - p:
                raise ParseError(f"truncated {dsize}-byte digest", p, source)
            dl.append((alg, buf[p:p + dsize]))
            p += dsize
        if p + 4 > n:
            raise ParseError("truncated event data size", p, source)
        (size,) = u32(buf, p)
        p += 4
        if size > n - p:
            raise ParseError(f"event data size {size} exceeds the {n - p} bytes left", p - 4, source)
        append(Event(seq, rec, pcr, etype, tuple(dl), buf[p:p + size]))
        seq += 1
        off = p + size
