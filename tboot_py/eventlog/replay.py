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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from tboot_py import algorithms
from tboot_py.algorithms import HashAlg
from tboot_py.errors import InputError, VerificationError
from tboot_py.eventlog.model import EV_EFI_HCRTM_EVENT, EV_NO_ACTION, PCR_INDEX_NONE, Event, EventLog, bank_name

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


def _hcrtm_first(events: Iterable[Event]) -> bool:
    """Whether the first record extending PCR 0 is the H-CRTM measurement (PFP 10.4.5.3 and
    TPM 2.0 Part 1, 34.3: _TPM_Hash_End resets PCR 0 to locality 4, 0...04, and extends the
    H-CRTM digest into it)."""
    for e in events:
        if e.pcr == 0 and e.extends:
            return e.event_type == EV_EFI_HCRTM_EVENT
    return False


@dataclass(frozen=True, slots=True)
class StartState:
    """What decides the values PCRs hold before the first logged extend."""

    #: TPM2_Startup locality from a StartupLocality event, or 4 when the log opens with the
    #: H-CRTM event and records no StartupLocality (PFP 10.4.5.3).
    locality: int | None
    #: Whether a dynamic launch is recorded (PCRs 17-22 then start at zero).
    drtm: bool

    @classmethod
    def of(cls, logs: Sequence[EventLog]) -> StartState:
        """For logs replayed as one sequence: the first log that says wins."""
        loc: int | None = None
        for log in logs:
            loc = startup_locality(log)
            if loc is not None:
                break
        if loc is None and logs and _hcrtm_first(e for log in logs for e in log.events):
            loc = 4
        return cls(loc, any(log.is_drtm for log in logs))

    def initial(self, pcr: int, size: int) -> bytes:
        if pcr == 0 and self.locality:
            return b"\x00" * (size - 1) + bytes([self.locality & 0xFF])
        if pcr in DRTM_PCRS and not self.drtm:
            return b"\xff" * size
        return b"\x00" * size


def initial_value(log: EventLog, pcr: int, size: int) -> bytes:
    """The value PCR ``pcr`` holds before the first logged extend of ``log``."""
    return StartState.of((log,)).initial(pcr, size)


def fold(alg: HashAlg, init: bytes, digests: Iterable[bytes]) -> bytes:
    """TPM 2.0 Part 1, 17.2: PCR_new = H(PCR_old || digest), for each digest in order."""
    ctor = alg.ctor
    v = init
    for d in digests:
        h = ctor(v)
        h.update(d)
        v = h.digest()
    return v


class Extend(NamedTuple):
    """One extend of one PCR in one bank: the record, the log it came from, its digest.
    (A NamedTuple: a replay makes one per record and bank, and verifiers run many.)"""

    log: int  # index of the log in the replayed sequence
    event: Event
    digest: bytes


@dataclass(frozen=True, slots=True)
class BankReplay:
    """The replay of one bank over a sequence of logs (THE replay: every caller uses it)."""

    alg: HashAlg
    start: StartState
    #: PCR -> the extends, in order, across all logs.
    extends: Mapping[int, tuple[Extend, ...]]
    #: PCR -> the first record extending it that lacks this bank's digest (not reproducible).
    incomplete: Mapping[int, Extend]

    def value(self, pcr: int) -> bytes | None:
        """The replayed value, or None when a record lacks this bank's digest."""
        if pcr in self.incomplete:
            return None
        return fold(self.alg, self.start.initial(pcr, self.alg.size), (x.digest for x in self.extends.get(pcr, ())))

    def values(self) -> dict[int, bytes]:
        """Every reproducible PCR the logs extend."""
        out: dict[int, bytes] = {}
        for pcr in self.extends:
            v = self.value(pcr)
            if v is not None:
                out[pcr] = v
        return out


def replay_bank_logs(logs: Sequence[EventLog], alg: HashAlg) -> BankReplay:
    """Replay ``logs`` as one sequence in bank ``alg``: a later log continues the PCRs an
    earlier one left, as the TPM saw them."""
    extends: dict[int, list[Extend]] = {}
    incomplete: dict[int, Extend] = {}
    alg_id = alg.alg_id
    for i, log in enumerate(logs):
        pos = log.algorithms.index(alg_id) if alg_id in log.algorithms else -1
        for e in log.events:
            if e.event_type == EV_NO_ACTION or e.pcr == PCR_INDEX_NONE:
                continue
            dg = e.digests
            d: bytes | None
            if 0 <= pos < len(dg) and dg[pos][0] == alg_id:  # the common case: header order
                d = dg[pos][1]
            else:
                d = next((dd for a, dd in dg if a == alg_id), None)
            trail = extends.get(e.pcr)
            if trail is None:
                trail = extends[e.pcr] = []
            if d is None:
                incomplete.setdefault(e.pcr, Extend(i, e, b""))
                continue
            trail.append(Extend(i, e, d))
    return BankReplay(alg, StartState.of(logs), {p: tuple(x) for p, x in extends.items()}, incomplete)


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
    """Replay one bank of one log: ``({pcr: value}, PCRs that cannot be reproduced)``.

    A PCR is unreproducible in a bank when a record extending it lacks that bank's digest
    (Windows logs some PCR 11-14 records in SHA-256 only); it is left out of the values.
    """
    alg = algorithms.by_id(alg_id)
    if alg is None:
        raise InputError(f"unknown bank 0x{alg_id:04x}")
    r = replay_bank_logs((log,), alg)
    return r.values(), frozenset(r.incomplete)


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
    "BankReplay", "Extend", "IncompleteLogError", "StartState", "bank_name", "fold", "initial_value", "replay",
    "replay_bank", "replay_bank_logs", "resolve_banks", "startup_locality",
]
