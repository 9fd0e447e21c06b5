"""Write TCG PC Client crypto-agile event logs.

Layout (PFP 10.4.5.1 and 10.4.3): a Spec ID Event03 header stored as a SHA1-format
TCG_PCClientPCREvent with EV_NO_ACTION, PCR 0 and a zero digest, followed by one
TCG_PCR_EVENT2 record per measurement carrying a digest for every active bank.

:func:`append_events` is crash-safe and serialised: it takes an exclusive ``flock`` on
``<log>.lock`` (:func:`locked`; a caller that holds it uses :func:`append_events_locked`),
parses the existing log (refusing one that does not parse, ends in a half-written record or
carries other banks) and replaces it atomically (:func:`tboot_py.fileio.append_atomic`). A
crash leaves either the old log or the new one, never a torn record.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from tboot_py.algorithms import HashAlg
from tboot_py.errors import EventLogAppendError, InputError
from tboot_py.eventlog.model import EV_NO_ACTION, LogFormat
from tboot_py.eventlog.parse import MAX_LOG_SIZE, SPEC_ID_EVENT03, parse_log, read_log_bytes
from tboot_py.fileio import append_atomic
from tboot_py.fileio import locked as fileio_locked

#: PFP 10.4.5.1: platformClass 0 (client), spec version 2.0 errata 0, uintnSize 2 (UINT64).
_PLATFORM_CLASS = 0
_SPEC_MAJOR, _SPEC_MINOR, _SPEC_ERRATA = 2, 0, 0
_UINTN_SIZE = 2
_MAX_PCR = 23
_MAX_EVENT_DATA = 16 * 2**20


@dataclass(frozen=True)
class NewEvent:
    """A measurement to log: ``digests`` maps bank name (``sha256``) to digest bytes."""

    pcr: int
    event_type: int
    digests: Mapping[str, bytes]
    data: bytes


def encode_spec_id(banks: Sequence[HashAlg]) -> bytes:
    """TCG_EfiSpecIDEvent for ``banks`` (PFP 10.4.5.1), vendorInfoSize 0."""
    _check_banks(banks)
    out = bytearray(SPEC_ID_EVENT03)
    out += struct.pack("<IBBBBI", _PLATFORM_CLASS, _SPEC_MINOR, _SPEC_MAJOR, _SPEC_ERRATA, _UINTN_SIZE, len(banks))
    for b in banks:
        out += struct.pack("<HH", b.alg_id, b.size)
    out += b"\x00"
    return bytes(out)


def encode_header(banks: Sequence[HashAlg]) -> bytes:
    """The first record of a crypto-agile log: Spec ID Event03 in SHA1 format (PFP 10.4.5.1)."""
    spec = encode_spec_id(banks)
    return struct.pack("<II20sI", 0, EV_NO_ACTION, b"\x00" * 20, len(spec)) + spec


def encode_event(ev: NewEvent, banks: Sequence[HashAlg]) -> bytes:
    """One TCG_PCR_EVENT2 record (PFP 10.4.3) carrying a digest for every bank, in bank order."""
    _check_banks(banks)
    if not 0 <= ev.pcr <= _MAX_PCR:
        raise InputError(f"PCR index {ev.pcr} out of range 0..{_MAX_PCR}")
    if not 0 <= ev.event_type <= 0xFFFFFFFF:
        raise InputError(f"event type {ev.event_type} does not fit in 32 bits")
    if len(ev.data) > _MAX_EVENT_DATA:
        raise InputError(f"event data of {len(ev.data)} bytes is too large")
    extra = set(ev.digests) - {b.name for b in banks}
    if extra:
        raise InputError(f"digests for banks the log does not carry: {', '.join(sorted(extra))}")
    out = bytearray(struct.pack("<III", ev.pcr, ev.event_type, len(banks)))
    for b in banks:
        d = ev.digests.get(b.name)
        if d is None:
            raise InputError(f"measurement lacks a {b.name} digest")
        if len(d) != b.size:
            raise InputError(f"{b.name} digest has {len(d)} bytes, expected {b.size}")
        out += struct.pack("<H", b.alg_id)
        out += d
    out += struct.pack("<I", len(ev.data))
    out += ev.data
    return bytes(out)


def encode_log(events: Sequence[NewEvent], banks: Sequence[HashAlg]) -> bytes:
    """A whole log: header plus ``events``."""
    return encode_header(banks) + b"".join(encode_event(e, banks) for e in events)


def _check_banks(banks: Sequence[HashAlg]) -> None:
    if not banks:
        raise InputError("an event log needs at least one bank")
    ids = [b.alg_id for b in banks]
    if len(set(ids)) != len(ids):
        raise InputError("a bank is listed twice")


def locked(path: Path) -> AbstractContextManager[None]:
    """Hold the exclusive lock of the log at ``path`` (``<path>.lock``). Not re-entrant."""
    return fileio_locked(path.with_name(path.name + ".lock"), "event-log lock")


def append_events(path: Path, events: Sequence[NewEvent], banks: Sequence[HashAlg]) -> None:
    """Append ``events`` to the log at ``path``, creating it (with a header) if missing.

    Raises ParseError for an existing log that does not parse or ends in a half-written
    record, EventLogAppendError for one with other banks or in SHA1 format, InputError for
    a bad measurement or an I/O failure. Concurrent callers serialise on ``<path>.lock``.
    """
    path = Path(path)
    encoded = b"".join(encode_event(e, banks) for e in events)  # validate before locking
    with locked(path):
        _append_encoded(path, encoded, banks)


def append_events_locked(path: Path, events: Sequence[NewEvent], banks: Sequence[HashAlg]) -> None:
    """:func:`append_events` for a caller that holds :func:`locked` on ``path``."""
    _append_encoded(Path(path), b"".join(encode_event(e, banks) for e in events), banks)


def _append_encoded(path: Path, encoded: bytes, banks: Sequence[HashAlg]) -> None:
    want = tuple((b.alg_id, b.size) for b in banks)
    try:
        exists = path.exists()
    except OSError as e:
        raise InputError(f"cannot access {path}: {e.strerror or e}") from e
    if exists:
        old = read_log_bytes(path)
        log = parse_log(old, source=str(path))  # ParseError on a bad or torn log
        if log.format is not LogFormat.CRYPTO_AGILE or log.spec_id is None:
            raise EventLogAppendError("existing log is not a crypto-agile log", 0, str(path))
        if log.spec_id.algorithms != want:
            have = ", ".join(log.spec_id.bank_names)
            raise EventLogAppendError(
                f"existing log carries banks [{have}], not [{', '.join(b.name for b in banks)}]", 0, str(path))
    else:
        old = encode_header(banks)
    if len(old) + len(encoded) > MAX_LOG_SIZE:
        raise InputError(f"event log {path} would exceed {MAX_LOG_SIZE} bytes")
    append_atomic(path, old, encoded, 0o644, what="event log")
