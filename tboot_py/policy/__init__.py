"""Launch and attestation policy: model, load/validate, signatures, evaluation.

Typical use by a launch gate::

    from tboot_py import policy
    pol = policy.load_policy(path, trust_keys=[pub_pem])          # raises on any problem
    verdict = policy.evaluate(pol, policy.Inputs(
        measurements=(policy.measured(m, component="kernel", kind="pe"), ...),
        pcrs=verified_pcrs, boot=..., events=..., quirks=...))
    if verdict.allowed: ...                                        # never `if verdict:`
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tboot_py._lazy import exports

if TYPE_CHECKING:
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

__getattr__, __dir__ = exports(__name__, {
    'deny': ('tboot_py.policy.engine', 'deny'),
    'evaluate': ('tboot_py.policy.engine', 'evaluate'),
    'BootFacts': ('tboot_py.policy.inputs', 'BootFacts'),
    'FirmwareEvent': ('tboot_py.policy.inputs', 'FirmwareEvent'),
    'Inputs': ('tboot_py.policy.inputs', 'Inputs'),
    'MeasuredComponent': ('tboot_py.policy.inputs', 'MeasuredComponent'),
    'firmware_events': ('tboot_py.policy.inputs', 'firmware_events'),
    'measured': ('tboot_py.policy.inputs', 'measured'),
    'dumps_policy': ('tboot_py.policy.io', 'dumps_policy'),
    'load_policy': ('tboot_py.policy.io', 'load_policy'),
    'loads_policy': ('tboot_py.policy.io', 'loads_policy'),
    'save_policy': ('tboot_py.policy.io', 'save_policy'),
    'sign_policy': ('tboot_py.policy.io', 'sign_policy'),
    'AllOf': ('tboot_py.policy.model', 'AllOf'),
    'AnyOf': ('tboot_py.policy.model', 'AnyOf'),
    'Component': ('tboot_py.policy.model', 'Component'),
    'DigestKind': ('tboot_py.policy.model', 'DigestKind'),
    'EventMatcher': ('tboot_py.policy.model', 'EventMatcher'),
    'EventRule': ('tboot_py.policy.model', 'EventRule'),
    'Mode': ('tboot_py.policy.model', 'Mode'),
    'PcrRule': ('tboot_py.policy.model', 'PcrRule'),
    'Policy': ('tboot_py.policy.model', 'Policy'),
    'Reason': ('tboot_py.policy.model', 'Reason'),
    'ReferenceRule': ('tboot_py.policy.model', 'ReferenceRule'),
    'ReferenceValue': ('tboot_py.policy.model', 'ReferenceValue'),
    'Rule': ('tboot_py.policy.model', 'Rule'),
    'SecureBootRule': ('tboot_py.policy.model', 'SecureBootRule'),
    'SignatureDbRule': ('tboot_py.policy.model', 'SignatureDbRule'),
    'TbootVlpRule': ('tboot_py.policy.model', 'TbootVlpRule'),
    'Verdict': ('tboot_py.policy.model', 'Verdict'),
    'VlpEntry': ('tboot_py.policy.model', 'VlpEntry'),
})
