"""Replay against known PCR values, with a named registry of firmware quirks.

A quirk is a known way real firmware's log disagrees with what it extended. A quirk is
applied to a (bank, PCR) only when the plain replay does not match the value the caller
supplies (a verified quote, or a TPM readout) and the quirk's variant does; the report
names every quirk applied, so a verdict can list them (DESIGN.md, "One event-log model").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from tboot_py import algorithms
from tboot_py.algorithms import HashAlg
from tboot_py.errors import UnknownAlgorithmError
from tboot_py.eventlog.model import EV_EFI_ACTION, Event, EventLog, bank_name
from tboot_py.eventlog.replay import DRTM_PCRS, BankReplay, StartState, fold, replay_bank_logs
from tboot_py.jsonin import ascii_int

EXIT_BOOT_SERVICES = (b"Exit Boot Services Invocation", b"Exit Boot Services Returned with Success")

#: A quirk variant: (logs, start state, pcr, bank, digests extended) -> (initial value,
#: digests) to fold instead, or None when the quirk cannot apply.
Variant = Callable[[Sequence[EventLog], StartState, int, HashAlg, list[bytes]], tuple[bytes, list[bytes]] | None]


@dataclass(frozen=True)
class Quirk:
    name: str
    description: str
    pcrs: frozenset[int]
    variant: Variant


def _missing_ebs(logs: Sequence[EventLog], start: StartState, pcr: int, alg: HashAlg,
                 digests: list[bytes]) -> tuple[bytes, list[bytes]] | None:
    # PFP 10.4.4: firmware measures the two ExitBootServices EV_EFI_ACTION strings into PCR 5;
    # some firmware extends them without logging them.
    logged = {e.data for log in logs for e in log.events if e.event_type == EV_EFI_ACTION and e.pcr == 5}
    missing = [s for s in EXIT_BOOT_SERVICES if s not in logged]
    if not missing:
        return None
    return start.initial(pcr, alg.size), digests + [alg.digest(s) for s in missing]


def _locality3_unlogged(logs: Sequence[EventLog], start: StartState, pcr: int, alg: HashAlg,
                        digests: list[bytes]) -> tuple[bytes, list[bytes]] | None:
    # PFP 10.4.5.3: a TPM2_Startup at locality 3 sets PCR 0 to ...03; some firmware omits the
    # StartupLocality event that says so.
    if start.locality is not None:
        return None
    return b"\x00" * (alg.size - 1) + b"\x03", digests


def _locality_not_applied(logs: Sequence[EventLog], start: StartState, pcr: int, alg: HashAlg,
                          digests: list[bytes]) -> tuple[bytes, list[bytes]] | None:
    # The log claims a StartupLocality but the TPM was started at locality 0.
    if not start.locality:
        return None
    return b"\x00" * alg.size, digests


def _drtm_reset_unlogged(logs: Sequence[EventLog], start: StartState, pcr: int, alg: HashAlg,
                         digests: list[bytes]) -> tuple[bytes, list[bytes]] | None:
    # A dynamic launch resets PCRs 17-22 to zero (PC Client PTP 4.6.2) even when the log holds
    # no TXT event that tells a replay so.
    if start.drtm:
        return None
    return b"\x00" * alg.size, digests


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


def match_pcr(logs: Sequence[EventLog], r: BankReplay, pcr: int, want: bytes | None,
              allowed: Sequence[Quirk]) -> tuple[bytes | None, str | None]:
    """The value of ``pcr`` in replay ``r`` and the quirk that made it equal ``want``. A quirk
    is tried only when the plain replay differs from ``want``, and applied only if its
    variant gives exactly ``want``."""
    value = r.value(pcr)
    if value is None or want is None or value == want:
        return value, None
    digests = [x.digest for x in r.extends.get(pcr, ())]
    for q in allowed:
        if pcr not in q.pcrs:
            continue
        alt = q.variant(logs, r.start, pcr, r.alg, digests)
        if alt is not None and fold(r.alg, *alt) == want:
            return want, q.name
    return value, None


def quirks_allowed(quirks: Iterable[str] | None) -> list[Quirk]:
    """The registered quirks named (all of them for None); an unknown name is an InputError."""
    from tboot_py.errors import InputError

    names = list(REGISTRY if quirks is None else quirks)
    unknown = [q for q in names if q not in REGISTRY]
    if unknown:
        raise InputError(f"unknown quirk(s) {', '.join(unknown)} (known: {', '.join(REGISTRY)})")
    return [REGISTRY[q] for q in names]


def replay_against(log: EventLog, expected: Mapping[str, Mapping[int, bytes]],
                   quirks: Iterable[str] | None = None) -> ReplayReport:
    """Replay ``log`` and compare each PCR it extends with ``expected`` ({bank: {pcr: value}}).

    ``quirks`` limits which registered quirks may be tried (default: all). A quirk is applied
    to a PCR only if the plain replay mismatches and the quirk's variant matches.
    """
    allowed = quirks_allowed(quirks)
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
        r = replay_bank_logs((log,), alg)
        want_regs = expected[bank]
        for pcr in sorted(r.extends):
            evs = tuple(sorted([x.event for x in r.extends[pcr]]
                               + ([r.incomplete[pcr].event] if pcr in r.incomplete else []), key=lambda e: e.seq))
            want = want_regs.get(pcr)
            value, quirk = match_pcr((log,), r, pcr, want, allowed)
            if quirk is not None and quirk not in applied:
                applied.append(quirk)
            results.append(PCRMatch(bank, pcr, want, value, want is not None and value == want, quirk, evs))
        for pcr, v in want_regs.items():
            if pcr not in r.extends and v != r.start.initial(pcr, alg.size):
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
                pcr = ascii_int(k)
                value = bytes.fromhex(v[2:] if isinstance(v, str) and v.lower().startswith("0x") else v)
            except (TypeError, ValueError) as e:
                raise InputError(f"bad PCR value {bank}:{k}") from e
            if not 0 <= pcr < 32 or len(value) != alg.size:
                raise InputError(f"bad PCR value {bank}:{k} ({len(value)} bytes, want {alg.size})")
            vals[pcr] = value
        out[alg.name] = vals
    return out


__all__ = ["REGISTRY", "PCRMatch", "Quirk", "ReplayReport", "bank_name", "load_pcr_values", "match_pcr",
           "quirks_allowed", "replay_against"]
