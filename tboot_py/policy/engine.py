"""The policy engine: ``evaluate(policy, inputs) -> Verdict``. Fails closed.

Semantics (README.md, "Policy"):
- The top-level rules combine with all-of. ``all-of`` passes when every child passes,
  ``any-of`` when at least one does.
- Every rule is evaluated in every mode, so a verdict lists every reason. ``halt`` and
  ``continue`` deny when the tree fails; ``nonfatal`` allows a failed tree unless a *fatal*
  finding caused the failure.
- Fatal findings deny in every mode: a missing input, a measurement or PCR bank with
  no digests, a DRTM PCR (17-22) that is all-zero or all-FF, an unknown rule, a finding of
  the appraisal (``Inputs.findings``), and a rule that could only be decided from event data
  no digest binds (DESIGN.md, "What a quote proves").
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tboot_py import algorithms
from tboot_py.errors import UnknownAlgorithmError
from tboot_py.policy.inputs import BootFacts, FirmwareEvent, Inputs, MeasuredComponent
from tboot_py.policy.model import (
    DRTM_PCRS,
    VLP_PCR_NONE,
    AllOf,
    AnyOf,
    Component,
    DigestKind,
    EventMatcher,
    EventRule,
    Mode,
    PcrRule,
    Policy,
    Reason,
    ReferenceRule,
    ReferenceValue,
    Rule,
    SecureBootRule,
    SignatureDbRule,
    TbootVlpRule,
    Verdict,
    VlpModNum,
)

#: Stronger banks first: when several banks match, the reason shows the strongest.
_BANK_ORDER = ("sha512", "sha384", "sha3_512", "sha3_384", "sha256", "sha3_256", "sm3_256", "sha1")


@dataclass(frozen=True)
class _Outcome:
    passed: bool
    fatal: bool = False


class _Evaluator:
    def __init__(self, policy: Policy, inputs: Inputs) -> None:
        self.policy = policy
        self.inputs = inputs
        self.today = inputs.today or _dt.datetime.now(_dt.UTC).date()
        self.reasons: list[Reason] = []

    def add(self, rule: str, check: str, passed: bool, message: str, **kw: object) -> None:
        self.reasons.append(Reason(rule=rule, check=check, passed=passed, message=message, **kw))  # type: ignore[arg-type]

    # -------------------------------------------------------------- composition

    def all_of(self, rules: tuple[Rule, ...], path: str) -> _Outcome:
        passed, fatal = True, False
        for i, r in enumerate(rules):
            o = self.rule(r, f"{path}[{i}]" if path else f"rules[{i}]")
            if not o.passed:
                passed = False
                fatal = fatal or o.fatal
        return _Outcome(passed, fatal)

    def rule(self, rule: Rule, path: str) -> _Outcome:
        name = rule.id or path
        if isinstance(rule, AllOf):
            o = self.all_of(rule.rules, f"{path}.rules")
            self.add(name, "all-of", o.passed, "all rules passed" if o.passed else "a rule failed", fatal=o.fatal)
            return o
        if isinstance(rule, AnyOf):
            return self.any_of(rule, path, name)
        if isinstance(rule, ReferenceRule):
            return self.reference(rule, name)
        if isinstance(rule, PcrRule):
            return self.pcrs(rule, name)
        if isinstance(rule, SecureBootRule):
            return self.secure_boot(rule, name)
        if isinstance(rule, SignatureDbRule):
            return self.uefi_db(rule, name)
        if isinstance(rule, EventRule):
            return self.events(rule, name)
        if isinstance(rule, TbootVlpRule):
            return self.vlp(rule, name)
        self.add(name, "unknown", False, f"unknown rule type {type(rule).__name__}", fatal=True)
        return _Outcome(False, True)

    def any_of(self, rule: AnyOf, path: str, name: str) -> _Outcome:
        fatal = False
        winner: int | None = None
        for i, r in enumerate(rule.rules):
            o = self.rule(r, f"{path}.rules[{i}]")
            if o.passed:
                if winner is None:
                    winner = i
            else:
                fatal = fatal or o.fatal
        if winner is not None:
            self.add(name, "any-of", True, f"alternative {winner} passed")
            return _Outcome(True)
        self.add(name, "any-of", False, f"none of {len(rule.rules)} alternatives passed", fatal=fatal)
        return _Outcome(False, fatal)

    # -------------------------------------------------------------- reference values

    def reference(self, rule: ReferenceRule, name: str) -> _Outcome:
        comp = rule.component.value
        if rule.component.is_cmdline:
            return self.cmdline(rule, name)
        kinds = {v.kind for v in rule.values}
        ms = [m for m in self.inputs.measurements if m.component is rule.component]
        if not ms:
            self.add(name, "reference", False, f"no measurement of the {comp} was given",
                     component=comp, fatal=True)
            return _Outcome(False, True)
        relevant = [m for m in ms if m.kind in kinds]
        if not relevant:
            got = ", ".join(sorted({m.kind.value for m in ms}))
            want = ", ".join(sorted(k.value for k in kinds))
            self.add(name, "reference", False,
                     f"the {comp} was measured as {got} but the policy has {want} reference values",
                     component=comp, fatal=True)
            return _Outcome(False, True)
        passed, fatal = True, False
        for m in ms:
            if m.kind not in kinds:
                # Every measurement of the component is judged: one of a kind the rule has no
                # values for cannot be compared, and is never skipped because another matched.
                what = f"{comp} {m.name!r}" if m.name else comp
                want = ", ".join(sorted(k.value for k in kinds))
                self.add(name, "reference", False,
                         f"the {what} was measured as {m.kind.value} but the policy has {want} reference values",
                         component=comp, fatal=True)
                passed, fatal = False, True
                continue
            o = self.match_measurement(rule, m, name)
            passed, fatal = passed and o.passed, fatal or o.fatal
        return _Outcome(passed, fatal)

    def match_measurement(self, rule: ReferenceRule, m: MeasuredComponent, name: str) -> _Outcome:
        comp = rule.component.value
        what = f"{comp} {m.name!r}" if m.name else comp
        usable = [(b, d) for b, d in m.digests if d]
        if not usable:
            self.add(name, "reference", False, f"the measurement of the {what} has no digests",
                     component=comp, fatal=True)
            return _Outcome(False, True)
        candidates = [v for v in rule.values if v.kind is m.kind]
        common = _order_banks({b for b, _ in usable} & {b for v in candidates for b in v.banks})
        if not common:
            self.add(name, "reference", False,
                     f"no bank in common between the {what} measurement "
                     f"({', '.join(b for b, _ in usable)}) and its reference values", component=comp, fatal=True)
            return _Outcome(False, True)
        expired: list[ReferenceValue] = []
        for v in candidates:
            shared = [b for b in common if v.digest(b) is not None]
            if shared and all(v.digest(b) == m.digest(b) for b in shared):
                bank = shared[0]
                actual = m.digest(bank)
                assert actual is not None
                if v.expired(self.today):
                    expired.append(v)
                    continue
                self.add(name, "reference", True,
                         f"{what} matches {v.label!r} ({m.kind.value}, {', '.join(shared)})",
                         component=comp, bank=bank, expected=(actual.hex(),), actual=actual.hex())
                return _Outcome(True)
        bank = common[0]
        actual = m.digest(bank)
        assert actual is not None
        if expired:
            v = expired[0]
            self.add(name, "reference", False,
                     f"{what} matches {v.label!r}, which expired on {v.expires}", component=comp, bank=bank,
                     expected=(), actual=actual.hex())
            return _Outcome(False)
        expected = tuple(f"{d.hex()} ({v.label})" for v in candidates if (d := v.digest(bank)) is not None)
        self.add(name, "reference", False,
                 f"{what} ({m.kind.value}) matches no reference value in bank {bank}",
                 component=comp, bank=bank, expected=expected, actual=actual.hex())
        return _Outcome(False)

    def cmdline(self, rule: ReferenceRule, name: str) -> _Outcome:
        """Every command line of the rule's component being launched (the kernel's, or the
        hypervisor's) must match one of the rule's values."""
        comp = rule.component.value
        actuals, undecided = self.actual_cmdlines(rule.component)
        for m in undecided:
            self.add(name, "reference", False,
                     f"the {m.component.value} record does not bind its command line, and its digest matches no "
                     "reference value that would: the command line cannot be decided", component=comp, fatal=True)
        if not actuals and not undecided:
            self.add(name, "reference", False, f"no {comp} command line was given", component=comp, fatal=True)
            return _Outcome(False, True)
        passed = not undecided
        for actual in actuals:
            passed = self.match_cmdline(rule, name, actual).passed and passed
        return _Outcome(passed, bool(undecided))

    def match_cmdline(self, rule: ReferenceRule, name: str, actual: str) -> _Outcome:
        raw = actual.encode()
        expired: list[ReferenceValue] = []
        for v in rule.values:
            hit_literal = v.cmdline is not None and v.cmdline == actual
            hit_digest = bool(v.digests) and all(_hash(b, raw) == d for b, d in v.digests)
            if (v.cmdline is None or hit_literal) and (not v.digests or hit_digest) and (hit_literal or hit_digest):
                if v.expired(self.today):
                    expired.append(v)
                    continue
                self.add(name, "reference", True, f"command line {actual!r} matches {v.label!r}",
                         component=rule.component.value, expected=(actual,), actual=actual)
                return _Outcome(True)
        if expired:
            self.add(name, "reference", False,
                     f"command line {actual!r} matches {expired[0].label!r}, which expired on {expired[0].expires}",
                     component=rule.component.value, actual=actual)
            return _Outcome(False)
        expected = tuple(v.cmdline if v.cmdline is not None else
                         ", ".join(f"{b}:{d.hex()}" for b, d in v.digests) for v in rule.values)
        self.add(name, "reference", False, f"command line {actual!r} matches no reference value",
                 component=rule.component.value, expected=expected, actual=actual)
        return _Outcome(False)

    def actual_cmdlines(self, comp: Component) -> tuple[list[str], list[MeasuredComponent]]:
        """The measured command lines of ``comp`` (the kernel's or the hypervisor's): its own
        command-line records and every command line a tboot module hash of its module binds
        (the kernel's for CMDLINE, the hypervisor's for HYPERVISOR_CMDLINE). A module whose
        record does not bind its command line (version 1) gets the command line of the
        reference value its digest matches; without one it is undecided, unless the
        component has command-line records of its own."""
        ms = self.inputs.measurements
        found = [m.cmdline for m in ms if m.component is comp and m.cmdline is not None]
        own = bool(found)
        module = Component.KERNEL if comp is Component.CMDLINE else Component.HYPERVISOR
        undecided: list[MeasuredComponent] = []
        for m in ms:
            if m.component is not module or m.kind is not DigestKind.TBOOT_MODULE:
                continue
            # A module's bound command line is judged even next to command-line records
            # (root can extend a record of an approved line after boot).
            if m.cmdline_bound and m.cmdline is not None:
                found.append(m.cmdline)
                continue
            proven = self.reference_cmdline(m)
            if proven is not None:
                found.append(proven)
            elif not own:
                undecided.append(m)
        return found, undecided

    def reference_cmdline(self, m: MeasuredComponent) -> str | None:
        """The command line of a tboot-module reference value whose digests ``m`` matches in
        every shared bank: the module hash covers it, so the digest proves it."""
        for r in _reference_rules(self.policy.rules):
            if r.component is not m.component:
                continue
            for v in r.values:
                shared = [b for b, _ in v.digests if m.digest(b) is not None]
                if (v.kind is DigestKind.TBOOT_MODULE and v.cmdline is not None and shared
                        and all(v.digest(b) == m.digest(b) for b in shared)):
                    return v.cmdline
        return None

    # -------------------------------------------------------------- PCRs

    def pcrs(self, rule: PcrRule, name: str) -> _Outcome:
        actual_all = self.inputs.pcrs
        if actual_all is None:
            self.add(name, "pcrs", False, "no verified PCR values were given", fatal=True)
            return _Outcome(False, True)
        passed, fatal = True, False
        for bank, regs in rule.expected:
            actual_bank = actual_all.get(bank)
            if not actual_bank:
                self.add(name, "pcrs", False, f"bank {bank} is missing or empty in the verified PCR values",
                         bank=bank, fatal=True)
                passed, fatal = False, True
                continue
            for idx, want in regs:
                got = actual_bank.get(idx)
                if got is None:
                    self.add(name, "pcrs", False, f"PCR {idx} ({bank}) is not in the verified PCR values",
                             bank=bank, pcr=idx, expected=(want.hex(),), fatal=True)
                    passed, fatal = False, True
                elif idx in DRTM_PCRS and _all_zero_or_ff(got):
                    self.add(name, "pcrs", False,
                             f"DRTM PCR {idx} ({bank}) is all-{'0' if got[0] == 0 else 'F'}: "
                             "no measured launch happened", bank=bank, pcr=idx, expected=(want.hex(),),
                             actual=got.hex(), fatal=True)
                    passed, fatal = False, True
                elif got != want:
                    self.add(name, "pcrs", False, f"PCR {idx} ({bank}) differs from the expected value",
                             bank=bank, pcr=idx, expected=(want.hex(),), actual=got.hex())
                    passed = False
                else:
                    self.add(name, "pcrs", True, f"PCR {idx} ({bank}) matches", bank=bank, pcr=idx,
                             expected=(want.hex(),), actual=got.hex())
        return _Outcome(passed, fatal)

    # -------------------------------------------------------------- boot state

    def boot(self, name: str, check: str) -> BootFacts | None:
        """The boot state, or None (after a fatal reason) when it is missing or when the
        order of the PCR 7 events it comes from breaks the PFP's rules."""
        facts = self.inputs.boot
        if facts is None:
            self.add(name, check, False, "no boot state from the firmware event log was given", fatal=True)
            return None
        for f in facts.findings:
            self.add(name, check, False, f, pcr=7, fatal=True)
        return None if facts.findings else facts

    def secure_boot(self, rule: SecureBootRule, name: str) -> _Outcome:
        facts = self.boot(name, "secure-boot")
        if facts is None:
            return _Outcome(False, True)
        want = "enabled" if rule.enabled else "disabled"
        if facts.secure_boot is None:
            self.add(name, "secure-boot", False, "the event log does not record the SecureBoot variable",
                     expected=(want,), fatal=True)
            return _Outcome(False, True)
        got = "enabled" if facts.secure_boot else "disabled"
        ok = facts.secure_boot == rule.enabled
        self.add(name, "secure-boot", ok, f"Secure Boot is {got}", expected=(want,), actual=got)
        return _Outcome(ok)

    def uefi_db(self, rule: SignatureDbRule, name: str) -> _Outcome:
        facts = self.boot(name, "uefi-db")
        if facts is None:
            return _Outcome(False, True)
        passed, fatal = True, False
        checks: list[tuple[str, frozenset[str] | None, tuple[str, ...], str]] = [
            ("db", facts.db, rule.db_allow, "require"),
            ("db", facts.db, rule.db_forbid, "forbid"),
            ("dbx", facts.dbx, rule.dbx_require, "require"),
            ("authorities", facts.authorities, rule.authorities_forbid, "forbid"),
            ("authorities", facts.authorities, rule.authorities_allow, "only"),
        ]
        for var, have, entries, how in checks:
            if not entries:
                continue
            if have is None:
                self.add(name, "uefi-db", False, f"the event log does not record {var}", fatal=True)
                passed, fatal = False, True
            elif how == "require":
                # A failure names each missing entry; a pass is one line (dbx lists run to hundreds).
                missing = [e for e in entries if e not in have]
                for e in missing:
                    self.add(name, "uefi-db", False, f"{e} is not in {var}", expected=(f"{var} contains {e}",))
                if not missing:
                    self.add(name, "uefi-db", True, f"{var} contains every required entry ({len(entries)})",
                             expected=entries)
                passed = passed and not missing
            elif how == "forbid":
                present = [e for e in entries if e in have]
                for e in present:
                    self.add(name, "uefi-db", False, f"forbidden {e} is in {var}", expected=(f"{var} lacks {e}",),
                             actual=e)
                if not present:
                    self.add(name, "uefi-db", True, f"{var} contains no forbidden entry ({len(entries)} checked)",
                             expected=entries)
                passed = passed and not present
            else:
                allowed = set(entries)
                for a in sorted(have):
                    ok = a in allowed
                    self.add(name, "uefi-db", ok,
                             f"image authority {a} {'is' if ok else 'is not'} allowed",
                             expected=tuple(entries), actual=a)
                    passed = passed and ok
        return _Outcome(passed, fatal)

    def events(self, rule: EventRule, name: str) -> _Outcome:
        """Required and forbidden events. A replay proves an event's PCR and digests, and its
        data only where the digest binds it; the event type is never proven. So a matcher
        decides on PCR, digest and bound data; its ``type`` narrows nothing (display only),
        and a matcher with nothing else to decide on cannot be decided and denies. A forbid
        on data cannot be decided while an event it could hide in has unbound data."""
        evs = self.inputs.events
        if evs is None:
            self.add(name, "events", False, "no firmware event log events were given", fatal=True)
            return _Outcome(False, True)
        backed = self.inputs.event_pcrs
        unbacked = sorted({m.pcr for m in (*rule.require, *rule.forbid)
                           if m.pcr is not None and backed is not None and m.pcr not in backed})
        if unbacked:
            self.add(name, "events", False,
                     f"events on PCR {', '.join(map(str, unbacked))} are not backed by the verified quote, "
                     "so this rule cannot be decided", fatal=True)
            return _Outcome(False, True)
        passed, fatal = True, False
        for m, want in [(m, True) for m in rule.require] + [(m, False) for m in rule.forbid]:
            label = m.description or _matcher_text(m)
            why = self.undecidable(m, evs, forbid=not want)
            if why is not None:
                self.add(name, "events", False, f"{'required' if want else 'forbidden'} event {label}: {why}",
                         pcr=m.pcr, expected=(label if want else f"no {label}",), fatal=True)
                passed, fatal = False, True
                continue
            match = _matcher(m)
            hit = next((e for e in evs if match(e)), None)
            if want and hit is None:
                self.add(name, "events", False, f"required event not found: {label}", expected=(label,))
                passed = False
            elif want:
                assert hit is not None
                self.add(name, "events", True, f"required event found: {label}", pcr=hit.pcr,
                         expected=(label,), actual=_event_text(hit))
            elif hit is not None:
                self.add(name, "events", False, f"forbidden event present: {label}", pcr=hit.pcr,
                         expected=(f"no {label}",), actual=_event_text(hit))
                passed = False
            else:
                self.add(name, "events", True, f"forbidden event absent: {label}", expected=(f"no {label}",))
        return _Outcome(passed, fatal)

    def undecidable(self, m: EventMatcher, evs: tuple[FirmwareEvent, ...], forbid: bool) -> str | None:
        """Why ``m`` cannot be decided from what the quote proves, or None."""
        if m.digest is None and m.data_contains is None:
            return ("it names only an event type (and PCR), and the type of an event is never extended, so "
                    "nothing proves it: name a digest or data")
        findings = self.inputs.ordering.get(m.pcr, ()) if m.pcr is not None else ()
        if findings:
            return f"PCR {m.pcr}: {'; '.join(findings)}"
        if forbid and m.data_contains is not None and m.digest is None:
            hiding = [e for e in evs if not e.bound and (m.pcr is None or e.pcr == m.pcr)]
            if hiding:
                return (f"{len(hiding)} event(s) on {'PCR ' + str(m.pcr) if m.pcr is not None else 'the PCRs'} have "
                        f"data their digest does not bind (first: {_event_text(hiding[0])}), so the data could "
                        "be hidden there")
        return None

    # -------------------------------------------------------------- tboot VLP

    def vlp(self, rule: TbootVlpRule, name: str) -> _Outcome:
        """tboot's verify_modules: each launched module needs a policy entry (first match of
        its number or TB_POL_MOD_NUM_ANY); an image entry needs its module hash in the list."""
        passed, fatal = True, False
        launched = [(i, c) for i, c in enumerate(rule.modules)]
        any_measured = False
        for mod_num, comp in launched:
            c = comp.value
            for m in self.inputs.measurements:
                if m.component is comp and m.kind is not DigestKind.TBOOT_MODULE:
                    # Every launch of a module the VLP names is judged; one measured another
                    # way has no module hash to compare, and is never skipped.
                    what = f"{c} {m.name!r}" if m.name else c
                    self.add(name, "tboot-vlp", False, f"the {what} was measured as {m.kind.value}, not as a "
                             "tboot module hash: the VLP cannot judge it", component=c, bank=rule.bank, fatal=True)
                    passed, fatal = False, True
            ms = [m for m in self.inputs.measurements if m.component is comp and m.kind is DigestKind.TBOOT_MODULE]
            if not ms:
                continue
            any_measured = True
            entry = next((e for e in rule.entries if e.mod_num in (mod_num, VlpModNum.ANY)), None)
            if entry is None:
                self.add(name, "tboot-vlp", False, f"module {mod_num} ({c}) has no policy entry",
                         component=c, bank=rule.bank)
                passed = False
            elif entry.hash_any:
                self.add(name, "tboot-vlp", True, f"module {mod_num} ({c}): entry accepts any hash",
                         component=c, bank=rule.bank)
                continue
            else:
                for m in ms:
                    got = m.digest(rule.bank)
                    if got is None:
                        self.add(name, "tboot-vlp", False,
                                 f"module {mod_num} ({c}) was not measured in bank {rule.bank}",
                                 component=c, bank=rule.bank, fatal=True)
                        passed, fatal = False, True
                    elif got in entry.hashes:
                        pcr = "none" if entry.pcr == VLP_PCR_NONE else str(entry.pcr)
                        self.add(name, "tboot-vlp", True, f"module {mod_num} ({c}) hash is in the policy (pcr {pcr})",
                                 component=c, bank=rule.bank, expected=(got.hex(),), actual=got.hex())
                    else:
                        self.add(name, "tboot-vlp", False, f"module {mod_num} ({c}) hash is not in the policy",
                                 component=c, bank=rule.bank, expected=tuple(h.hex() for h in entry.hashes),
                                 actual=got.hex())
                        passed = False
        if not any_measured:
            self.add(name, "tboot-vlp", False, "no tboot module measurement was given", bank=rule.bank, fatal=True)
            return _Outcome(False, True)
        return _Outcome(passed, fatal)


def _order_banks(banks: set[str]) -> list[str]:
    return sorted(banks, key=lambda b: (_BANK_ORDER.index(b) if b in _BANK_ORDER else len(_BANK_ORDER), b))


def _hash(bank: str, data: bytes) -> bytes | None:
    try:
        alg = algorithms.by_name(bank)
    except UnknownAlgorithmError:
        return None
    return alg.digest(data) if alg.available else None


def _all_zero_or_ff(v: bytes) -> bool:
    return v == b"\x00" * len(v) or v == b"\xff" * len(v)


def _matcher(m: EventMatcher) -> Callable[[FirmwareEvent], bool]:
    """Match on what the replay proves: PCR, digest, and data only where bound. The event's
    type is untrusted and never narrows a match (a retyped event still matches)."""
    pcr, digest = m.pcr, (m.digest[0], m.digest[1]) if m.digest is not None else None
    needles = (m.data_contains.encode(), m.data_contains.encode("utf-16-le")) if m.data_contains is not None else ()

    def match(e: FirmwareEvent) -> bool:
        if pcr is not None and e.pcr != pcr:
            return False
        if digest is not None and digest not in e.digests:
            return False
        if needles:
            if not e.bound:
                return False
            data = e.data
            if needles[0] not in data and needles[1] not in data:
                return False
        return True

    return match


def _matcher_text(m: EventMatcher) -> str:
    from tboot_py.policy._serialize import EVENT_TYPE_NAMES

    parts = []
    if m.event_type is not None:
        parts.append(EVENT_TYPE_NAMES.get(m.event_type, f"type 0x{m.event_type:x}"))
    if m.pcr is not None:
        parts.append(f"pcr {m.pcr}")
    if m.digest is not None:
        parts.append(f"{m.digest[0]}:{m.digest[1].hex()}")
    if m.data_contains is not None:
        parts.append(f"data contains {m.data_contains!r}")
    return " ".join(parts)


def _event_text(e: FirmwareEvent) -> str:
    from tboot_py.policy._serialize import EVENT_TYPE_NAMES

    t = EVENT_TYPE_NAMES.get(e.event_type, f"0x{e.event_type:x}")
    where = f"event {e.seq} " if e.seq is not None else ""
    return f"{where}{t} pcr {e.pcr}"


def _reference_rules(rules: tuple[Rule, ...]) -> list[ReferenceRule]:
    out: list[ReferenceRule] = []
    for r in rules:
        if isinstance(r, ReferenceRule):
            out.append(r)
        elif isinstance(r, AllOf | AnyOf):
            out += _reference_rules(r.rules)
    return out


def covered_components(rules: tuple[Rule, ...]) -> set[Component]:
    """Components that some reference or tboot-vlp rule in the tree speaks about."""
    out: set[Component] = set()
    for r in rules:
        if isinstance(r, ReferenceRule):
            out.add(r.component)
        elif isinstance(r, TbootVlpRule):
            out.update(r.modules)
        elif isinstance(r, AllOf | AnyOf):
            out |= covered_components(r.rules)
    return out


def evaluate(policy: Policy, inputs: Inputs, *, require_coverage: bool = False) -> Verdict:
    """Evaluate ``policy`` against ``inputs``. Never raises for a mismatch; every finding is a
    Reason. Read ``verdict.allowed``.

    ``require_coverage`` (the launch gate sets it): every component being launched must be
    named by some reference (or tboot-vlp) rule; an artifact the policy says nothing about
    is a mismatch, never silently allowed.
    """
    ev = _Evaluator(policy, inputs)
    for f in inputs.findings:  # the appraisal's own findings (forged or undecodable records...)
        ev.reasons.append(f)
    if not policy.rules:  # the loader refuses this; a hand-built empty policy still denies
        ev.add("rules", "policy", False, "the policy has no rules", fatal=True)
        outcome = _Outcome(False, True)
    else:
        outcome = ev.all_of(policy.rules, "")
    if require_coverage:
        covered = covered_components(policy.rules)
        for comp in sorted({m.component for m in inputs.measurements} - covered, key=lambda c: c.value):
            ev.add("coverage", "reference", False,
                   f"the policy has no reference rule for the {comp.value} being launched", component=comp.value)
            outcome = _Outcome(False, outcome.fatal)
    if inputs.findings:
        outcome = _Outcome(False, True)
    if outcome.passed:
        allowed = True
    elif policy.mode is Mode.NONFATAL and not outcome.fatal:
        allowed = True
        ev.add("policy", "mode", True, "nonfatal (audit-only) mode: mismatches recorded, launch allowed")
    else:
        allowed = False
    return Verdict(allowed=allowed, reasons=tuple(ev.reasons), mode=policy.mode,
                   quirks=tuple(inputs.quirks), policy_name=policy.name, warnings=policy.warnings)


def deny(message: str, mode: Mode = Mode.HALT, quirks: tuple[str, ...] = ()) -> Verdict:
    """A denying verdict for a failure before evaluation (unreadable policy, bad evidence)."""
    return Verdict(allowed=False, reasons=(Reason(rule="policy", check="load", passed=False, message=message,
                                                  fatal=True),), mode=mode, quirks=quirks)


def pcr_map(values: Mapping[str, Mapping[int, bytes]]) -> dict[str, dict[int, bytes]]:
    """Copy a ``{bank: {pcr: value}}`` mapping (e.g. VerifiedPCRs) into plain dicts."""
    return {str(b): {int(i): bytes(v) for i, v in regs.items()} for b, regs in values.items()}
