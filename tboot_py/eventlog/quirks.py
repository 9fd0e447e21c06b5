"""Replay against known PCR values, with a named registry of firmware quirks.

A quirk is a known way real firmware's log disagrees with what it extended. A quirk is
applied to a (bank, PCR) only when the plain replay does not match the value the caller
supplies (a verified quote, or a TPM readout) and the quirk's variant does; the report
names every quirk applied, so a verdict can list them (DESIGN.md, "One event-log model").
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from tboot_py import algorithms
from tboot_py.errors import UnknownAlgorithmError
from tboot_py.eventlog.model import EV_EFI_ACTION, Event, EventLog, bank_name
from tboot_py.eventlog.replay import DRTM_PCRS, initial_value, startup_locality

EXIT_BOOT_SERVICES = (b"Exit Boot Services Invocation", b"Exit Boot Services Returned with Success")

#: A quirk variant: (log, pcr, hash name, events extending pcr) -> (initial value, digests) or None.
Variant = Callable[[EventLog, int, str, list[tuple[Event, bytes]]], tuple[bytes, list[bytes]] | None]


@dataclass(frozen=True)
class Quirk:
    name: str
    description: str
    pcrs: frozenset[int]
    variant: Variant


def _digests(evs: list[tuple[Event, bytes]]) -> list[bytes]:
    return [d for _, d in evs]


def _size(hname: str) -> int:
    return hashlib.new(hname).digest_size


def _missing_ebs(log: EventLog, pcr: int, hname: str,
                 evs: list[tuple[Event, bytes]]) -> tuple[bytes, list[bytes]] | None:
    # PFP 10.4.4: firmware measures the two ExitBootServices EV_EFI_ACTION strings into PCR 5;
    # some firmware extends them without logging them.
    logged = {e.data for e in log.events if e.event_type == EV_EFI_ACTION and e.pcr == 5}
    missing = [s for s in EXIT_BOOT_SERVICES if s not in logged]
    if not missing:
        return None
    extra = [hashlib.new(hname, s).digest() for s in missing]
    return initial_value(log, pcr, _size(hname)), _digests(evs) + extra


def _locality3_unlogged(log: EventLog, pcr: int, hname: str,
                        evs: list[tuple[Event, bytes]]) -> tuple[bytes, list[bytes]] | None:
    # PFP 10.4.5.3: a TPM2_Startup at locality 3 sets PCR 0 to ...03; some firmware omits the
    # StartupLocality event that says so.
    if startup_locality(log) is not None:
        return None
    return b"\x00" * (_size(hname) - 1) + b"\x03", _digests(evs)


def _locality_not_applied(log: EventLog, pcr: int, hname: str,
                          evs: list[tuple[Event, bytes]]) -> tuple[bytes, list[bytes]] | None:
    # The log claims a StartupLocality but the TPM was started at locality 0.
    if not startup_locality(log):
        return None
    return b"\x00" * _size(hname), _digests(evs)


def _drtm_reset_unlogged(log: EventLog, pcr: int, hname: str,
                         evs: list[tuple[Event, bytes]]) -> tuple[bytes, list[bytes]] | None:
    # A dynamic launch resets PCRs 17-22 to zero (PC Client PTP 4.6.2) even when the log holds
    # no TXT event that tells a replay so.
    if log.is_drtm:
        return None
    return b"\x00" * _size(hname), _digests(evs)


REGISTRY: dict[str, Quirk] = {q.name: q for q in (
    Quirk("missing-exit-boot-services",
          "PCR 5 holds the ExitBootServices EV_EFI_ACTION strings the log does not record",
          frozenset({5}), _missing_ebs),
    Quirk("startup-locality-3-unlogged",
          "PCR 0 started at locality 3 but the log has no StartupLocality event",
          frozenset({0}), _locality3_unlogged),
    Quirk("startup-locality-not-applied",
          "the log has a StartupLocality event but PCR 0 started at zero",
          frozenset({0}), _locality_not_applied),
    Quirk("drtm-reset-unlogged",
          "PCRs 17-22 were reset to zero by a dynamic launch the log does not record",
          frozenset(DRTM_PCRS), _drtm_reset_unlogged),
)}


@dataclass(frozen=True, slots=True)
class PCRMatch:
    """One (bank, PCR) compared against the caller's value."""

    bank: str
    pcr: int
    expected: bytes | None
    replayed: bytes | None  # None: a record lacks this bank's digest
    matched: bool
    quirk: str | None
    #: The records that extend this PCR (for explaining a mismatch).
    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class ReplayReport:
    results: tuple[PCRMatch, ...]
    quirks_applied: tuple[str, ...]
    #: Expected (bank, PCR) values the log never extends and that are not the reset value.
    unexplained: tuple[tuple[str, int], ...]
    #: Banks of the expected values that the log does not carry (or this OpenSSL cannot compute).
    banks_not_compared: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True only when something was compared and every compared PCR matched."""
        compared = [r for r in self.results if r.expected is not None]
        return bool(compared) and all(r.matched for r in compared)

    @property
    def mismatches(self) -> tuple[PCRMatch, ...]:
        return tuple(r for r in self.results if r.expected is not None and not r.matched)

    def values(self) -> dict[str, dict[int, bytes]]:
        """The replayed values with the applied quirks, ``{bank: {pcr: value}}``."""
        out: dict[str, dict[int, bytes]] = {}
        for r in self.results:
            if r.replayed is not None:
                out.setdefault(r.bank, {})[r.pcr] = r.replayed
        return out


def _fold(hname: str, init: bytes, digests: Iterable[bytes]) -> bytes:
    v = init
    for d in digests:
        v = hashlib.new(hname, v + d).digest()
    return v


def replay_against(log: EventLog, expected: Mapping[str, Mapping[int, bytes]],
                   quirks: Iterable[str] | None = None) -> ReplayReport:
    """Replay ``log`` and compare each PCR it extends with ``expected`` ({bank: {pcr: value}}).

    ``quirks`` limits which registered quirks may be tried (default: all). A quirk is applied
    to a PCR only if the plain replay mismatches and the quirk's variant matches.
    """
    allowed = [REGISTRY[q] for q in (REGISTRY if quirks is None else quirks)]
    results: list[PCRMatch] = []
    applied: list[str] = []
    unexplained: list[tuple[str, int]] = []
    not_compared: list[str] = []
    for bank in expected:
        try:
            alg = algorithms.by_name(bank)
        except UnknownAlgorithmError:
            not_compared.append(bank)
            continue
        if alg.alg_id not in log.algorithms or not alg.available:
            not_compared.append(bank)
            continue
        hname = alg.hashlib_name
        per_pcr: dict[int, list[tuple[Event, bytes]]] = {}
        incomplete: dict[int, list[Event]] = {}
        for e in log.events:
            if not e.extends:
                continue
            d = e.digest(alg.alg_id)
            if d is None:
                incomplete.setdefault(e.pcr, []).append(e)
            else:
                per_pcr.setdefault(e.pcr, []).append((e, d))
        want_regs = expected[bank]
        for pcr in sorted(set(per_pcr) | set(incomplete)):
            evs = per_pcr.get(pcr, [])
            all_events = tuple(sorted([e for e, _ in evs] + incomplete.get(pcr, []), key=lambda e: e.seq))
            want = want_regs.get(pcr)
            if pcr in incomplete:
                results.append(PCRMatch(bank, pcr, want, None, False, None, all_events))
                continue
            value = _fold(hname, initial_value(log, pcr, alg.size), _digests(evs))
            quirk: str | None = None
            if want is not None and value != want:
                for q in allowed:
                    if pcr not in q.pcrs:
                        continue
                    alt = q.variant(log, pcr, hname, evs)
                    if alt is not None and _fold(hname, *alt) == want:
                        value, quirk = want, q.name
                        if q.name not in applied:
                            applied.append(q.name)
                        break
            results.append(PCRMatch(bank, pcr, want, value, want is not None and value == want, quirk, all_events))
        for pcr, v in want_regs.items():
            if pcr in per_pcr or pcr in incomplete:
                continue
            if v != initial_value(log, pcr, alg.size):
                unexplained.append((bank, pcr))
    return ReplayReport(tuple(results), tuple(applied), tuple(unexplained), tuple(not_compared))


def load_pcr_values(obj: object) -> dict[str, dict[int, bytes]]:
    """Parse ``{"sha1": {"0": "hex"}}`` or ``{"pcrs": {...}}`` (the corpus and CLI JSON shape).

    Raises :class:`~tboot_py.errors.InputError` for anything else.
    """
    from tboot_py.errors import InputError

    if isinstance(obj, dict) and "pcrs" in obj and isinstance(obj["pcrs"], dict):
        obj = obj["pcrs"]
    if not isinstance(obj, dict):
        raise InputError("PCR values must be a JSON object {bank: {pcr: hex}}")
    out: dict[str, dict[int, bytes]] = {}
    for bank, regs in obj.items():
        if not isinstance(bank, str) or not isinstance(regs, dict):
            raise InputError(f"PCR values for bank {bank!r} must be an object {{pcr: hex}}")
        try:
            alg = algorithms.by_name(bank)
        except UnknownAlgorithmError as e:
            raise InputError(f"unknown bank {bank!r} in PCR values") from e
        vals: dict[int, bytes] = {}
        for k, v in regs.items():
            try:
                pcr = int(k)
                value = bytes.fromhex(v[2:] if isinstance(v, str) and v.lower().startswith("0x") else v)
            except (TypeError, ValueError) as e:
                raise InputError(f"bad PCR value {bank}:{k}") from e
            if not 0 <= pcr < 32 or len(value) != alg.size:
                raise InputError(f"bad PCR value {bank}:{k} ({len(value)} bytes, want {alg.size})")
            vals[pcr] = value
        out[alg.name] = vals
    return out


__all__ = ["REGISTRY", "PCRMatch", "Quirk", "ReplayReport", "bank_name", "load_pcr_values", "replay_against"]
