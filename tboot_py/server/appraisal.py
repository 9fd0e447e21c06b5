"""The server's one call into the appraisal core.

The server decides nothing itself (DESIGN.md, "One appraisal core decides"): it hands the
evidence, the nonce it issued, the AK bound at enrollment (with the EK that activated it,
so qualifiedSigner is checked) and the host's policy to the core, and stores what the core
returns. A host with no policy is denied by the core.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from tboot_py.policy import Policy
from tboot_py.tpm import wire as st
from tboot_py.tpm.evidence import Evidence


@dataclass(frozen=True)
class Outcome:
    """What the core decided, in the shape the server stores and signs."""

    allowed: bool
    reason: str  # one line: the first failure, or "allowed"
    details: dict[str, Any]  # JSON: verification, verdict (reasons with expected/actual), quirks, PCRs
    quirks: tuple[str, ...]
    pcr_digest: str | None  # the verified quote's pcrDigest (TPMS_QUOTE_INFO), hex

    def details_json(self) -> str:
        return json.dumps(self.details, sort_keys=True)


def trusted_ak(ak_public: bytes, ek_public: bytes | None) -> Any:
    """The AK as the core takes it: with its Qualified Name under the activated EK."""
    from tboot_py.verify.quote import TrustedAK

    ak = st.parse_public(ak_public, source="bound AK")
    if ek_public is None:
        return ak
    return TrustedAK.under_ek(ak, st.parse_public(ek_public, source="bound EK"))


def appraise_evidence(evidence: Evidence, nonce: bytes, ak_public: bytes, ek_public: bytes | None,
                      policy: Policy | None) -> Outcome:
    """Appraise ``evidence`` for ``nonce`` with the host's bound AK and policy, through the
    appraisal core (tboot_py.appraise). Never raises for bad evidence."""
    from tboot_py.appraise import Appraiser, TrustConfig

    try:
        ak = trusted_ak(ak_public, ek_public)
    except Exception as e:  # a stored key that no longer parses: fail closed
        return Outcome(False, f"bound AK unusable: {e}", {"verified": False, "reason": str(e)}, (), None)
    result = Appraiser(TrustConfig(ak=ak, policy=policy)).appraise(evidence, nonce)
    details: dict[str, Any] = result.as_json()
    if result.verified is None:
        return Outcome(False, details["reason"] or "evidence not verified", details, (), None)
    parsed = st.parse_attest(evidence.untrusted_attest)
    pcr_digest = None if parsed.quote is None else parsed.quote.pcr_digest.hex()
    details["verified_pcrs"] = {b: {str(i): v.hex() for i, v in sorted(r.items())}
                                for b, r in result.verified.pcrs.pcrs.items()}
    return Outcome(result.allowed, _first_reason(details, result.allowed), details, result.quirks, pcr_digest)


def _first_reason(details: dict[str, Any], allowed: bool) -> str:
    if allowed:
        return "allowed"
    for key in ("reason", "error"):
        if isinstance(details.get(key), str) and details[key]:
            return str(details[key])
    verdict = details.get("verdict")
    if isinstance(verdict, dict):
        for r in verdict.get("reasons", []):
            if isinstance(r, dict) and not r.get("passed", True):
                return str(r.get("message", "denied"))
    return "denied"


def policy_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()
