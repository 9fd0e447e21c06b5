"""Quote and evidence verification.

``verify_quote(evidence, ak_public, nonce, expected_selection=None, history=None) -> VerifiedPCRs``
raises a :class:`~tboot_py.verify.errors.QuoteError` subclass; ``check_quote`` returns a
result object and never raises. ``verify_evidence`` then replays the event logs against the
verified PCRs. Names are loaded lazily so the CLI starts fast.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "verify_quote": "tboot_py.verify.quote",
    "check_quote": "tboot_py.verify.quote",
    "VerifiedPCRs": "tboot_py.verify.quote",
    "QuoteCheck": "tboot_py.verify.quote",
    "QuoteHistory": "tboot_py.verify.quote",
    "verify_evidence": "tboot_py.verify.evidence",
    "check_evidence": "tboot_py.verify.evidence",
    "VerifiedBoot": "tboot_py.verify.evidence",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'tboot_py.verify' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(mod), name)
