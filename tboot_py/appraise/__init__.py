"""The appraisal core: evidence + trust + policy -> one result (DESIGN.md, "appraise/").

``Appraiser(TrustConfig(ak=..., policy=...)).appraise(evidence, nonce) -> Appraisal``.
Names load lazily, so a CLI command that does not appraise pays nothing for them.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Appraiser": "tboot_py.appraise.core",
    "Appraisal": "tboot_py.appraise.core",
    "TrustConfig": "tboot_py.appraise.core",
    "evaluate_boot": "tboot_py.appraise.core",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'tboot_py.appraise' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(mod), name)
