"""Launch and attestation policy: model, load/validate, signatures, evaluation.

Typical use by a launch gate::

    from tboot_py import policy
    pol = policy.load_policy(path, trust_keys=[pub_pem])          # raises on any problem
    verdict = policy.evaluate(pol, policy.Inputs(
        measurements=(policy.measured(m, component="kernel", kind="pe"), ...),
        pcrs=verified_pcrs, boot=..., events=..., quirks=...))
    if verdict.allowed: ...                                        # never `if verdict:`
"""

from tboot_py.policy.engine import deny, evaluate
from tboot_py.policy.inputs import BootFacts, FirmwareEvent, Inputs, MeasuredComponent, firmware_events, measured
from tboot_py.policy.io import dumps_policy, load_policy, loads_policy, save_policy, sign_policy
from tboot_py.policy.model import (
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
    VlpEntry,
)

__all__ = [
    "AllOf", "AnyOf", "BootFacts", "Component", "DigestKind", "EventMatcher", "EventRule", "FirmwareEvent",
    "Inputs", "MeasuredComponent", "Mode", "PcrRule", "Policy", "Reason", "ReferenceRule", "ReferenceValue",
    "Rule", "SecureBootRule", "SignatureDbRule", "TbootVlpRule", "Verdict", "VlpEntry", "deny", "dumps_policy",
    "evaluate", "firmware_events", "load_policy", "loads_policy", "measured", "save_policy", "sign_policy",
]
