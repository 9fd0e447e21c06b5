"""Appraisal: verified evidence evaluated against policy, the remote verifier's verdict.

The evidence is verified first (:func:`tboot_py.verify.verify_evidence`: quote, nonce, AK,
replay). Only then are its events read, and only the events the verified replay backs: the
measurements come from tboot-py's own EV_IPL records, the boot state and event rules from
the firmware log's records on backed PCRs (DESIGN.md: parse, verify, then extract).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tboot_py.errors import ParseError
from tboot_py.eventlog import EventLog, parse_log
from tboot_py.eventlog.decode import decode_tboot_py
from tboot_py.eventlog.model import EV_IPL  # PFP Table 9: tboot-py's measurement events
from tboot_py.policy import Inputs, MeasuredComponent, Policy, Verdict, evaluate
from tboot_py.policy.derive import boot_facts
from tboot_py.policy.inputs import firmware_events
from tboot_py.policy.model import Component, DigestKind
from tboot_py.verify.evidence import VerifiedBoot


@dataclass(frozen=True)
class Appraisal:
    verified: VerifiedBoot
    verdict: Verdict

    @property
    def allowed(self) -> bool:
        return self.verdict.allowed


def backed_pcrs(verified: VerifiedBoot) -> frozenset[int]:
    """PCRs the verified replay reproduced in every bank."""
    replayed = [set(p) for p in verified.replayed.values()]
    return frozenset(set.intersection(*replayed)) if replayed else frozenset()


def verified_measurements(verified: VerifiedBoot) -> tuple[MeasuredComponent, ...]:
    """The launched artifacts, from tboot-py's EV_IPL records among the verified events."""
    from tboot_py.algorithms import by_id

    out: list[MeasuredComponent] = []
    for e in verified.events:
        if e.event_type != EV_IPL:
            continue
        info = decode_tboot_py(e.data)
        if info is None:
            continue
        digests = tuple((alg.name, d) for a, d in e.digests if (alg := by_id(a)) is not None)
        try:
            comp, kind = Component(info.component), DigestKind(info.kind)
        except ValueError:
            # A launched artifact the policy model cannot name would escape every rule: deny.
            raise ParseError(f"tboot-py event {e.seq} in {e.log} names an unknown component or kind "
                             f"({info.component!r}, {info.kind!r})") from None
        out.append(MeasuredComponent(comp, kind, digests, cmdline=info.cmdline, name=info.file))
    return tuple(out)


def _backed_log(untrusted: EventLog, backed: frozenset[int]) -> EventLog:
    return dataclasses.replace(untrusted, events=tuple(e for e in untrusted.events if e.pcr in backed))


def appraise(verified: VerifiedBoot, untrusted_logs: Sequence[tuple[str, bytes]], policy: Policy) -> Appraisal:
    """Evaluate ``policy`` on verified evidence. ``untrusted_logs`` are the evidence's logs
    (name, bytes); only their records on backed PCRs are read, for boot-state facts."""
    backed = backed_pcrs(verified)
    boot: Any = None
    for _name, data in untrusted_logs:
        log = _backed_log(parse_log(data), backed)
        if any(e.pcr == 7 for e in log.events):
            boot = boot_facts(log)
            break
    inputs = Inputs(measurements=verified_measurements(verified), pcrs=verified.pcrs.pcrs, boot=boot,
                    events=firmware_events(verified.events), event_pcrs=backed)
    return Appraisal(verified, evaluate(policy, inputs, require_coverage=True))
