"""Quote and evidence verification.

``verify_quote(evidence, ak_public, nonce, expected_selection=None, history=None) -> VerifiedPCRs``
raises a :class:`~tboot_py.verify.errors.QuoteError` subclass; ``check_quote`` returns a
result object and never raises. ``verify_evidence`` then replays the event logs against the
verified PCRs. Names are loaded lazily so the CLI starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tboot_py._lazy import exports

if TYPE_CHECKING:
    from tboot_py.verify.evidence import VerifiedBoot, check_evidence, verify_evidence
    from tboot_py.verify.quote import QuoteCheck, QuoteHistory, VerifiedPCRs, check_quote, verify_quote

__all__ = ["QuoteCheck", "QuoteHistory", "VerifiedBoot", "VerifiedPCRs", "check_evidence", "check_quote",
           "verify_evidence", "verify_quote"]

_EVIDENCE = {"VerifiedBoot", "check_evidence", "verify_evidence"}
__getattr__, __dir__ = exports(__name__, {
    name: ("tboot_py.verify.evidence" if name in _EVIDENCE else "tboot_py.verify.quote", name) for name in __all__})
