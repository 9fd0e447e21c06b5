"""Policies and predictions derived from a golden event log.

- :func:`boot_facts` reads Secure Boot state, db/dbx and image authorities from the PCR 7
  events (TCG PC Client PFP 2.0, 3.3.4.8 and 10.4.4: EV_EFI_VARIABLE_DRIVER_CONFIG records
  SecureBoot, PK, KEK, db, dbx; EV_EFI_VARIABLE_AUTHORITY records the db entry that verified
  each loaded image).
- :func:`policy_from_log` turns a golden log into a policy: expected PCRs, boot-state rules,
  and reference values for the tboot-py EV_IPL events.
- :func:`predict` swaps new kernel/initrd/hypervisor measurements into the tboot-py events of
  a golden log (and, for a PE kernel, the firmware's own load event of the old image) and
  replays it, so an update can be approved before the reboot.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tboot_py import algorithms
from tboot_py.errors import InputError, ParseError, PolicyError
from tboot_py.eventlog import Event, EventLog, replay
from tboot_py.eventlog.decode import TbootPyEventData, decode_tboot_py
from tboot_py.eventlog.efi import authority_data, variable_data
from tboot_py.eventlog.model import EV_IPL  # PFP Table 9: tboot-py's measurement events
from tboot_py.policy.inputs import BootFacts, FirmwareEvent
from tboot_py.policy.model import (
    DRTM_PCRS,
    Component,
    DigestKind,
    Mode,
    PcrRule,
    Policy,
    ReferenceRule,
    ReferenceValue,
    Rule,
    SecureBootRule,
    SignatureDbRule,
)

EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
EV_EFI_VARIABLE_AUTHORITY = 0x800000E0
_NOT_AUTHORITIES = frozenset({"SbatLevel", "MokListTrusted"})


def _bank_of(alg_id: int) -> str | None:
    a = algorithms.by_id(alg_id)
    return a.name if a else None


def event_digests(e: Event) -> tuple[tuple[str, bytes], ...]:
    return tuple((b, d) for a, d in e.digests if (b := _bank_of(a)) is not None)


def firmware_events(log: EventLog) -> tuple[FirmwareEvent, ...]:
    """The log's measuring events in the engine's input shape."""
    from tboot_py.policy.inputs import firmware_events as adapt

    return adapt(e for e in log.events if e.extends)


def _db_entries(sdb: Any) -> frozenset[str] | None:
    """``x509:<sha256 of DER>`` / ``sha256:<hex>`` entries of a measured signature database."""
    if sdb is None:
        return None
    out = {f"x509:{c.sha256}" for c in sdb.certificates}
    out |= {f"sha256:{h}" for kind, h in sdb.hashes if kind == "sha256"}
    return frozenset(out)


def _extended_data(e: Event) -> bool:
    """Whether the event's data is what was extended (its digest in some bank is H(data)).
    Data that does not hash to the digest says nothing the TPM vouches for."""
    for alg_id, d in e.digests:
        alg = algorithms.by_id(alg_id)
        if alg is not None and alg.available and alg.digest(e.data) == d:
            return True
    return False


def boot_facts(log: EventLog) -> BootFacts:
    """Boot state from PCR 7. Anything the log does not record, or records unreadably, is
    None so that a rule needing it denies.

    SecureBoot, db and dbx come from :func:`tboot_py.eventlog.boot_state`, which takes them
    only from firmware EV_EFI_VARIABLE_DRIVER_CONFIG events in PCR 7 before its separator,
    under the UEFI GUIDs, and only when their data is what was extended (PFP 3.3.4.8).
    """
    from tboot_py.eventlog import boot_state

    state = boot_state(log)
    auths: set[str] = set()
    auth_ok = True
    seen_pcr7 = False
    for e in log.events:
        if e.pcr != 7 or not e.extends:
            continue
        seen_pcr7 = True
        if e.event_type != EV_EFI_VARIABLE_AUTHORITY:
            continue
        try:
            var = variable_data(e.data)
        except ParseError:
            auth_ok = False
            continue
        # shim also logs SbatLevel and MokListTrusted as authority events; they are
        # configuration, not the signer of an image.
        if var.name in _NOT_AUTHORITIES:
            continue
        if not _extended_data(e):
            auth_ok = False  # the certificate shown is not what the TPM measured
            continue
        a = authority_data(var.data)
        if a.cert is not None:
            auths.add(f"x509:{a.cert.sha256}")
        elif len(var.data) == 48:  # EFI_SIGNATURE_DATA with a SHA-256 hash entry
            auths.add(f"sha256:{var.data[16:].hex()}")
        else:
            auth_ok = False
    return BootFacts(secure_boot=state.secure_boot, db=_db_entries(state.db), dbx=_db_entries(state.dbx),
                     authorities=frozenset(auths) if seen_pcr7 and auth_ok else None)


@dataclass(frozen=True)
class TbootPyEvent:
    event: Event
    info: TbootPyEventData
    component: Component
    kind: DigestKind

    @property
    def artifact_digests(self) -> tuple[tuple[str, bytes], ...]:
        """The artifact's digests: recorded in a version 2 record (which is extended as the
        hash of its data), the extended digest itself in a version 1 record."""
        return self.info.artifact_digests if self.info.version >= 2 else event_digests(self.event)


def tboot_py_events(log: EventLog) -> tuple[TbootPyEvent, ...]:
    """The EV_IPL events tboot-py's measured-domain builder wrote."""
    out = []
    for e in log.events:
        if e.event_type != EV_IPL or not e.extends:
            continue
        info = decode_tboot_py(e.data)
        if info is None:
            continue
        try:
            comp = Component(info.component)
            kind = DigestKind(info.kind)
        except ValueError:
            raise ParseError(f"tboot-py event {e.seq} names an unknown component or kind "
                             f"({info.component!r}, {info.kind!r})", e.offset, log.source) from None
        out.append(TbootPyEvent(e, info, comp, kind))
    return tuple(out)


def policy_from_log(log: EventLog, *, pcrs: Iterable[int] | None = None, banks: Iterable[str] | None = None,
                    boot_state: bool = True, references: bool = True, mode: Mode = Mode.HALT,
                    name: str | None = None) -> Policy:
    """A policy that the machine which wrote ``log`` satisfies.

    ``pcrs``: which replayed PCRs to expect (default: every PCR the log extends).
    ``banks``: which banks (default: every bank of the log).
    """
    replayed = replay(log, list(banks) if banks is not None else None)
    want = set(pcrs) if pcrs is not None else None
    rules: list[Rule] = []
    expected: list[tuple[str, tuple[tuple[int, bytes], ...]]] = []
    for bank, regs in replayed.items():
        vals = tuple((i, v) for i, v in sorted(regs.items())
                     if (want is None or i in want)
                     and not (i in DRTM_PCRS and v in (b"\0" * len(v), b"\xff" * len(v))))
        if vals:
            expected.append((bank, vals))
    if want is not None:
        missing = want - {i for _, regs in expected for i, _ in regs}
        if missing:
            raise InputError(f"the log does not extend PCR(s) {', '.join(map(str, sorted(missing)))}")
    if expected:
        rules.append(PcrRule(expected=tuple(expected), id="expected-pcrs"))
    if references:
        rules.extend(reference_rules(log))
    if boot_state:
        facts = boot_facts(log)
        if facts.secure_boot is not None:
            rules.append(SecureBootRule(enabled=facts.secure_boot, id="secure-boot"))
        db = tuple(sorted(facts.db or ()))
        dbx = tuple(sorted(facts.dbx or ()))
        au = tuple(sorted(facts.authorities or ()))
        if db or dbx or au:
            rules.append(SignatureDbRule(db_allow=db, dbx_require=dbx, authorities_allow=au, id="uefi-db"))
    if not rules:
        raise PolicyError("the log yields no rules (no PCRs, no tboot-py events, no boot state)")
    # The banks this log replays are the ones a quote of the same machine must cover.
    return Policy(rules=tuple(rules), mode=mode, name=name or f"from {log.source or 'event log'}",
                  banks=tuple(replayed) or None)


def reference_rules(log: EventLog) -> list[ReferenceRule]:
    by_comp: dict[Component, list[ReferenceValue]] = {}
    for t in tboot_py_events(log):
        label = t.info.file or t.component.value
        if t.component.is_cmdline:
            v = ReferenceValue(label=label, digests=(), kind=DigestKind.FILE, cmdline=t.info.cmdline or "")
        else:
            v = ReferenceValue(label=label, digests=t.artifact_digests, kind=t.kind, cmdline=t.info.cmdline)
        values = by_comp.setdefault(t.component, [])
        if v not in values:
            values.append(v)
    return [ReferenceRule(component=c, values=tuple(vs), id=f"reference-{c.value}") for c, vs in by_comp.items()]


# ---------------------------------------------------------------- prediction

@dataclass(frozen=True)
class Replacement:
    """One event whose digests a prediction changed."""

    seq: int
    pcr: int
    component: str
    why: str


@dataclass(frozen=True)
class Prediction:
    before: dict[str, dict[int, bytes]]
    after: dict[str, dict[int, bytes]]
    replaced: tuple[Replacement, ...]

    def changed(self) -> dict[str, dict[int, tuple[bytes | None, bytes]]]:
        out: dict[str, dict[int, tuple[bytes | None, bytes]]] = {}
        for bank, regs in self.after.items():
            for i, v in regs.items():
                old = self.before.get(bank, {}).get(i)
                if old != v:
                    out.setdefault(bank, {})[i] = (old, v)
        return out


def predict(log: EventLog, new: Mapping[Component, Any], cmdlines: Mapping[Component, str] | None = None) -> Prediction:
    """Replay ``log`` with the tboot-py events of each component in ``new`` carrying the new
    measurement's digests. ``new`` maps a component to a ``tboot_py.measure.Measurement``
    (anything with ``digests``; a DigestSet or a ``{bank: digest}`` mapping); ``cmdlines``
    gives new command lines (for command-line records, and the ones a version 2 module
    record names).

    A kernel the builder logged as ``pe`` was also measured by the firmware (an
    EV_EFI_BOOT_SERVICES_APPLICATION of the same Authenticode digest, PFP 10.4.4); every
    other event carrying exactly the old digests in every bank is swapped too.
    Raises InputError when a component has no tboot-py event in the log, or the new
    measurement lacks one of the log's banks.
    """
    from tboot_py.eventlog.decode import encode_tboot_py

    cmdlines = cmdlines or {}
    events = list(log.events)
    tpe = tboot_py_events(log)
    replaced: list[Replacement] = []
    for comp in [*new, *(c for c in cmdlines if c not in new)]:
        mine = [t for t in tpe if t.component is comp]
        if not mine:
            raise InputError(f"the golden log has no tboot-py event for the {comp.value}")
        cmd = cmdlines.get(comp)
        if comp in new:
            new_d = dict(_pairs(getattr(new[comp], "digests", new[comp])))
        else:  # a new command line: its measurement is its own hash
            raw = (cmd or "").encode()
            algs = [x for x in (algorithms.by_id(i) for i in log.algorithms) if x is not None]
            new_d = {x.name: x.digest(raw) for x in algs}
        for t in mine:
            old = t.event
            old_d = t.artifact_digests
            for alg_id, _d in old.digests:
                b = _bank_of(alg_id)
                if b is None or b not in new_d:
                    raise InputError(f"the new {comp.value} measurement has no {b or hex(alg_id)} digest "
                                     f"(the log carries {', '.join(log.bank_names)})")
            if t.info.version >= 2:
                # The record names the file measured by its base name, as the builder does.
                new_name = getattr(new.get(comp), "name", None)
                data = encode_tboot_py(t.info.component, t.info.kind,
                                       Path(new_name).name if isinstance(new_name, str) else t.info.file,
                                       cmd if cmd is not None else t.info.cmdline,
                                       tuple((b, new_d[b]) for b, _ in t.info.artifact_digests if b in new_d))
                digests = tuple((a, algorithms.by_id(a).digest(data)) for a, _ in old.digests  # type: ignore[union-attr]
                                if algorithms.by_id(a) is not None)
                events[old.seq] = dataclasses.replace(old, digests=digests, data=data)
            else:
                events[old.seq] = dataclasses.replace(
                    old, digests=tuple((a, new_d[_bank_of(a) or ""]) for a, _ in old.digests))
            replaced.append(Replacement(old.seq, old.pcr, comp.value, "tboot-py event"))
            if t.kind is DigestKind.PE and old_d and comp in new:
                for i, e in enumerate(events):
                    if e.seq == old.seq or not e.extends or e.event_type == EV_IPL:
                        continue
                    if event_digests(log.events[i]) == old_d:
                        events[i] = dataclasses.replace(e, digests=tuple((a, new_d[b]) for a, _ in e.digests
                                                                         if (b := _bank_of(a)) is not None))
                        replaced.append(Replacement(e.seq, e.pcr, comp.value, "firmware load of the old image"))
    after_log = dataclasses.replace(log, events=tuple(events))
    return Prediction(before=replay(log), after=replay(after_log), replaced=tuple(replaced))


def _pairs(obj: Any) -> Sequence[tuple[str, bytes]]:
    if hasattr(obj, "as_dict"):
        obj = obj.as_dict()
    if isinstance(obj, Mapping):
        return [(str(k), bytes(v)) for k, v in obj.items()]
    return [(str(k), bytes(v)) for k, v in obj]
