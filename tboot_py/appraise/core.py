"""The appraisal core: evidence + trust configuration + policy -> one result.

One :class:`Appraiser` is built from the trust configuration (the AK, EK roots, the policy
and its required banks, nonce rules, the quirk registry), then ``appraise(evidence, nonce)``
runs these steps and returns an :class:`Appraisal`; it never raises for bad evidence:

1. verify the quote, the EK chain and the replay of every log, in every quoted bank, with
   the named quirks applied only where they make a PCR match (tboot_py.verify.evidence);
2. bind each verified event to the data its digests are the hash of (facts.bind);
3. extract tboot-py's records, the PFP ordering of PCR 0-7 and the Secure Boot state from
   bound data only, over all logs together in replay order; every doubt is a finding;
4. evaluate the policy on that, every rule, listing every reason.

``tboot-py verify``, the launch gate, its hooks and the attestation server all call this:
they build a request and print or store the result, and hold no decision logic.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tboot_py.errors import Error, VerificationError
from tboot_py.verify import errors as ve
from tboot_py.verify.evidence import DEFAULT_REQUIRED_BANKS, VerifiedBoot, check_evidence, verify_evidence
from tboot_py.verify.quote import AKPublic, QuoteHistory, VerifiedPCRs

#: Where tboot-py's builder puts its records by default (PFP: PCR 9 holds what boot loaders load).
DEFAULT_RECORD_PCRS: tuple[int, ...] = (9,)

if TYPE_CHECKING:  # the policy stage loads only when a policy is appraised (fast `verify`)
    from pathlib import Path

    from tboot_py.policy.model import Policy, Rule, Verdict
    from tboot_py.tpm.evidence import Evidence
    from tboot_py.tpm.wire import PCRSelection


@dataclass(frozen=True)
class TrustConfig:
    """What the verifier trusts and requires. Built once, used for every appraisal."""

    #: The AK whose quotes are believed (TrustedAK, TPMT_PUBLIC/TPM2B_PUBLIC bytes, a key).
    ak: AKPublic
    #: The policy that must allow the boot (None: verification only; nothing is allowed).
    policy: Policy | None = None
    #: A directory of PEM roots: the evidence must carry an EK certificate chaining to one,
    #: and the AK must be under that EK.
    ek_roots: Path | None = None
    #: Banks the quote must cover and replay (None: the policy's ``banks``, else sha256).
    required_banks: tuple[str, ...] | None = None
    #: The shortest nonce that makes a quote fresh; shorter only for legacy quotes.
    min_nonce_bytes: int = 8
    #: False only to re-check archived evidence whose quote carries no nonce: the result
    #: then says it proves no freshness.
    fresh: bool = True
    #: Firmware quirks that may be applied (None: the whole registry).
    quirks: tuple[str, ...] | None = None
    #: The PCRs that hold tboot-py's records (None: the policy's ``record_pcrs``, else 9).
    record_pcrs: tuple[int, ...] | None = None
    #: A selection the quote must cover (at least these PCRs; exactly, with ``exact``).
    selection: PCRSelection | None = None
    exact_selection: bool = False

    @property
    def records_on(self) -> tuple[int, ...]:
        if self.record_pcrs is not None:
            return self.record_pcrs
        if self.policy is not None and self.policy.record_pcrs is not None:
            return self.policy.record_pcrs
        return DEFAULT_RECORD_PCRS

    @property
    def banks(self) -> tuple[str, ...]:
        if self.required_banks is not None:
            return self.required_banks
        if self.policy is not None and self.policy.banks is not None:
            return self.policy.banks
        return DEFAULT_REQUIRED_BANKS


@dataclass(frozen=True)
class Appraisal:
    """The one result: verified PCRs and events (when verification passed), the verdict with
    every reason, and the quirks applied. Read ``allowed``."""

    verified: VerifiedBoot | None
    verdict: Verdict
    error: VerificationError | None = None

    @property
    def allowed(self) -> bool:
        return self.verified is not None and self.verdict.allowed

    @property
    def quirks(self) -> tuple[str, ...]:
        return self.verified.quirks if self.verified is not None else ()

    @property
    def pcrs(self) -> VerifiedPCRs | None:
        return self.verified.pcrs if self.verified is not None else None

    def __bool__(self) -> bool:
        raise TypeError("an Appraisal has no truth value: read .allowed")

    def as_json(self) -> dict[str, Any]:
        v = self.verified
        out: dict[str, Any] = {"allowed": self.allowed, "verified": v is not None,
                               "reason": self.error.diagnostics() if self.error is not None else "",
                               "quirks": list(self.quirks), "verdict": self.verdict.as_json()}
        if v is not None:
            out.update({"fresh": v.fresh, "events_verified": len(v.events),
                        "replayed": {b: list(p) for b, p in v.replayed.items()},
                        "banks_ignored": list(v.banks_ignored), "ek_chain": list(v.ek_chain)})
        return out


def _denied(message: str, policy: Policy | None, check: str = "verify") -> Verdict:
    from tboot_py.policy.model import Mode, Reason, Verdict

    return Verdict(allowed=False, reasons=(Reason(rule="evidence", check=check, passed=False, message=message,
                                                  fatal=True),),
                   mode=policy.mode if policy is not None else Mode.HALT,
                   policy_name=policy.name if policy is not None else None)


class Appraiser:
    """Built once from a :class:`TrustConfig`; ``appraise`` many times."""

    def __init__(self, trust: TrustConfig) -> None:
        if trust.min_nonce_bytes < 1:
            raise ValueError("min_nonce_bytes must be at least 1: an empty nonce never makes a quote fresh")
        self.trust = trust

    def check(self, evidence: Evidence, nonce: bytes, history: QuoteHistory | VerifiedPCRs | None = None,
              ) -> tuple[VerifiedBoot | None, VerificationError | None]:
        """Step 1 alone, never raising: verification without a policy decides nothing."""
        t = self.trust
        r = check_evidence(evidence, t.ak, nonce, t.selection, history, t.ek_roots,
                           exact_selection=t.exact_selection, required_banks=t.banks,
                           min_nonce_bytes=t.min_nonce_bytes, fresh=t.fresh, quirks=t.quirks)
        return r.verified, r.error

    def verify(self, evidence: Evidence, nonce: bytes,
               history: QuoteHistory | VerifiedPCRs | None = None) -> VerifiedBoot:
        """Step 1 alone (raises a VerificationError)."""
        t = self.trust
        return verify_evidence(evidence, t.ak, nonce, t.selection, history, t.ek_roots,
                               exact_selection=t.exact_selection, required_banks=t.banks,
                               min_nonce_bytes=t.min_nonce_bytes, fresh=t.fresh, quirks=t.quirks)

    def appraise(self, evidence: Evidence, nonce: bytes, *, history: QuoteHistory | VerifiedPCRs | None = None,
                 own_records: Sequence[bytes] | None = None) -> Appraisal:
        """Verify ``evidence`` for ``nonce`` and evaluate the policy on what it proves.

        ``own_records`` (the launch gate): the data of the tboot-py records this launch
        just wrote, in order. They must be the last verified records, and the policy judges
        exactly them (earlier launches of this boot were judged when they ran).
        """
        policy = self.trust.policy
        try:
            boot = self.verify(evidence, nonce, history)
        except VerificationError as e:
            return Appraisal(None, _denied(e.diagnostics(), policy), e)
        except Error as e:
            err = ve.QuoteError(e.diagnostics())
            return Appraisal(None, _denied(err.diagnostics(), policy), err)
        except Exception as e:  # fail closed on anything unexpected
            err = ve.QuoteError(f"internal error while verifying: {type(e).__name__}: {e}")
            return Appraisal(None, _denied(err.diagnostics(), policy), err)
        if policy is None:
            return Appraisal(boot, _denied("no policy: nothing allows this boot", None, check="policy"))
        try:
            verdict = evaluate_boot(boot, policy, own_records, self.trust.records_on)
        except Exception as e:  # fail closed
            verdict = _denied(f"internal error while appraising: {type(e).__name__}: {e}", policy, check="appraise")
        return Appraisal(boot, verdict)


def _has(rules: Sequence[Rule], kind: type) -> bool:
    from tboot_py.policy.model import AllOf, AnyOf

    return any(isinstance(r, kind) or (isinstance(r, AllOf | AnyOf) and _has(r.rules, kind)) for r in rules)


def evaluate_boot(boot: VerifiedBoot, policy: Policy, own_records: Sequence[bytes] | None = None,
                  record_pcrs: Sequence[int] | None = None) -> Verdict:
    """Steps 2-4 on a verified boot. ``record_pcrs``: where tboot-py's records may be (default:
    the policy's ``record_pcrs``, else PCR 9)."""
    from tboot_py.appraise import facts
    from tboot_py.policy.engine import evaluate
    from tboot_py.policy.inputs import Inputs
    from tboot_py.policy.model import EventRule, Reason

    bound = facts.bind(boot.events)
    launched = facts.launched(bound)
    measurements = launched.measurements
    findings = list(launched.findings)
    if record_pcrs is None:
        record_pcrs = policy.record_pcrs if policy.record_pcrs is not None else DEFAULT_RECORD_PCRS
    findings += facts.record_coverage(bound, boot.pcrs.pcrs, tuple(record_pcrs))
    if own_records is not None:
        n = len(own_records)
        if n == 0 or tuple(launched.records[-n:]) != tuple(own_records):
            findings.append(Reason(rule="appraisal", check="tboot-py-record", passed=False, fatal=True,
                                   message="this launch's records are not the last verified tboot-py records of the "
                                           "log (another writer appended after them)"))
        else:
            measurements = measurements[-n:]
    order = facts.ordering(bound)
    # Event rules are the only readers of every event: build their inputs only for them.
    events = facts.firmware_events(bound) if _has(policy.rules, EventRule) else ()
    inputs = Inputs(measurements=measurements, pcrs=boot.pcrs.pcrs, boot=facts.boot_facts(bound, order),
                    events=events, quirks=boot.quirks, event_pcrs=boot.backed_pcrs,
                    findings=tuple(findings), ordering=order)
    verdict = evaluate(policy, inputs, require_coverage=True)
    if not boot.fresh:
        note = Reason(rule="evidence", check="freshness", passed=True,
                      message="not fresh: archived evidence checked without a nonce; it proves the PCR values, "
                              "not when they were quoted")
        verdict = dataclasses.replace(verdict, reasons=(note, *verdict.reasons))
    return verdict
