"""Replay a log into the PCR values a TPM would hold (TPM 2.0 Part 1, 17.2:
PCR_new = H(PCR_old || digest)).

Initial values:

* PCR 0 starts with the locality in its last byte when the log holds a StartupLocality
  EV_NO_ACTION event (PFP 10.4.5.3): 3 after TPM2_Startup at locality 3, 4 after an
  H-CRTM sequence (the H-CRTM digest itself is logged as EV_EFI_HCRTM_EVENT and extended).
* PCRs 17-22 start at all-FF (PC Client PTP, 4.6.2: reset value of the DRTM PCRs) unless
  the log records a dynamic launch (Intel TXT / Secure Launch event types). A DRTM event
  resets them to zero at locality 4 before the launch is measured.
* Every other PCR starts at zero.

EV_NO_ACTION records (PFP 10.4.5) and records for PCR index 0xFFFFFFFF are never extended.
A replay proves nothing until a verified quote backs it (DESIGN.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from tboot_py import algorithms
from tboot_py.algorithms import HashAlg
from tboot_py.errors import InputError, VerificationError
from tboot_py.eventlog.model import EV_NO_ACTION, PCR_INDEX_NONE, EventLog, bank_name

STARTUP_LOCALITY_SIG = b"StartupLocality\x00"
DRTM_PCRS = range(17, 23)


class IncompleteLogError(VerificationError):
    """An extended record lacks the digest of a bank being replayed: that bank cannot be
    reproduced from the log, so it must not be trusted."""


def startup_locality(log: EventLog) -> int | None:
    """The locality of the StartupLocality event (PFP 10.4.5.3), if the log has one."""
    for e in log.events:
        if e.event_type == EV_NO_ACTION and e.pcr == 0 and len(e.data) == 17 and e.data[:16] == STARTUP_LOCALITY_SIG:
            return e.data[16]
    return None


def initial_value(log: EventLog, pcr: int, size: int, *, locality: int | None = None,
                  drtm: bool | None = None) -> bytes:
    """The value PCR ``pcr`` holds before the first logged extend."""
    if pcr == 0:
        loc = startup_locality(log) if locality is None else locality
        if loc:
            return b"\x00" * (size - 1) + bytes([loc & 0xFF])
    if pcr in DRTM_PCRS and not (log.is_drtm if drtm is None else drtm):
        return b"\xff" * size
    return b"\x00" * size


def resolve_banks(log: EventLog, banks: Iterable[str | int | HashAlg] | None) -> list[tuple[int, str, str]]:
    """``(alg_id, bank name, hashlib name)`` for each bank to replay.

    ``banks=None`` means every bank of the log this OpenSSL can compute; a bank asked for
    explicitly that the log does not carry or that cannot be computed is an InputError.
    """
    out: list[tuple[int, str, str]] = []
    if banks is None:
        for alg_id in log.algorithms:
            alg = algorithms.by_id(alg_id)
            if alg is not None and alg.available:
                out.append((alg_id, alg.name, alg.hashlib_name))
        return out
    for b in banks:
        alg = b if isinstance(b, HashAlg) else (algorithms.by_id(b) if isinstance(b, int) else algorithms.by_name(b))
        if alg is None:
            raise InputError(f"unknown bank {b!r}")
        if alg.alg_id not in log.algorithms:
            raise InputError(f"the log carries no {alg.name} bank (it has {', '.join(log.bank_names)})")
        if not alg.available:
            raise InputError(f"bank {alg.name} cannot be computed with this OpenSSL")
        if all(alg.alg_id != a for a, _, _ in out):
            out.append((alg.alg_id, alg.name, alg.hashlib_name))
    return out


def replay_bank(log: EventLog, alg_id: int, hashlib_name: str) -> tuple[dict[int, bytes], frozenset[int]]:
    """Replay one bank: ``({pcr: value}, PCRs that cannot be reproduced)``.

    A PCR is unreproducible in a bank when a record extending it lacks that bank's digest
    (Windows logs some PCR 11-14 records in SHA-256 only); it is left out of the values.
    """
    locality = startup_locality(log)
    drtm = log.is_drtm
    size = hashlib.new(hashlib_name).digest_size
    regs: dict[int, bytes] = {}
    missing: set[int] = set()
    ctor = getattr(hashlib, hashlib_name, None)
    if ctor is None:  # algorithms hashlib only reaches through new() (sm3)
        def ctor(b: bytes) -> Any:
            return hashlib.new(hashlib_name, b)
    # Position of this bank in records that carry every bank in header order (the common case).
    pos = log.algorithms.index(alg_id) if alg_id in log.algorithms else -1
    for e in log.events:
        if e.event_type == EV_NO_ACTION or e.pcr == PCR_INDEX_NONE:
            continue
        dg = e.digests
        if 0 <= pos < len(dg) and dg[pos][0] == alg_id:
            d: bytes | None = dg[pos][1]
        else:
            d = None
            for a, dd in dg:
                if a == alg_id:
                    d = dd
                    break
        if d is None:
            missing.add(e.pcr)
            continue
        old = regs.get(e.pcr)
        if old is None:
            old = initial_value(log, e.pcr, size, locality=locality, drtm=drtm)
        h = ctor(old)
        h.update(d)
        regs[e.pcr] = h.digest()
    for pcr in missing:
        regs.pop(pcr, None)
    return regs, frozenset(missing)


def replay(log: EventLog, banks: Iterable[str | int | HashAlg] | None = None) -> dict[str, dict[int, bytes]]:
    """Replay ``log``: ``{bank name: {pcr: value}}`` holding only the PCRs the log extends.

    ``banks=None`` replays every bank of the log this OpenSSL can compute, leaving out a PCR
    whose records lack that bank's digest (it cannot be reproduced, so a verifier comparing
    against a quote that selects it finds it missing and fails). When ``banks`` names the
    banks explicitly, such a gap raises :class:`IncompleteLogError` instead.
    """
    explicit = banks is not None
    result: dict[str, dict[int, bytes]] = {}
    for alg_id, name, hname in resolve_banks(log, banks):
        regs, missing = replay_bank(log, alg_id, hname)
        if missing and explicit:
            first = next(e for e in log.events if e.extends and e.pcr in missing and e.digest(alg_id) is None)
            raise IncompleteLogError(
                f"event {first.seq} (offset {first.offset}, PCR {first.pcr}, {first.event_type_name}) "
                f"has no {name} digest")
        result[name] = regs
    return result


__all__ = [
    "IncompleteLogError", "bank_name", "initial_value", "replay", "replay_bank", "resolve_banks", "startup_locality",
]
