"""The appraisal core: evidence + trust + policy -> one result (DESIGN.md, "appraise/").

``Appraiser(TrustConfig(ak=..., policy=...)).appraise(evidence, nonce) -> Appraisal``.
Names load lazily, so a CLI command that does not appraise pays nothing for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tboot_py._lazy import exports

if TYPE_CHECKING:
    from tboot_py.appraise.core import Appraisal, Appraiser, TrustConfig, evaluate_boot

__all__ = ["Appraisal", "Appraiser", "TrustConfig", "evaluate_boot"]

__getattr__, __dir__ = exports(__name__, {name: ("tboot_py.appraise.core", name) for name in __all__})
