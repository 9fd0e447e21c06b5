"""Strict JSON for untrusted inputs (policies, evidence, PCR files, AK state).

Python's ``json`` keeps the last of two equal keys, so ``{"sha256": A, "sha256": B}`` would be
read as B while another reader sees A; every input of tboot-py refuses duplicate keys
instead (RFC 8259, 4: names SHOULD be unique). ``int()`` accepts any Unicode decimal digit
(Arabic-Indic "\\u0661\\u0660" is 10), so decimal fields written as text (PCR indices) are checked with
:func:`ascii_int`.
"""

from __future__ import annotations

import json
from typing import Any

from tboot_py.errors import InputError


class DuplicateKeyError(ValueError):
    """A JSON object names one key twice."""


def unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` that refuses duplicate keys (raises DuplicateKeyError, a ValueError)."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise DuplicateKeyError(f"duplicate key {k!r}")
        out[k] = v
    return out


def loads(data: bytes | str) -> Any:
    """``json.loads`` refusing duplicate keys; raises ValueError (or RecursionError)."""
    return json.loads(data, object_pairs_hook=unique_object)


def loads_strict(data: bytes | str, what: str) -> Any:
    """:func:`loads` with every failure as one InputError naming ``what``."""
    try:
        return loads(data)
    except (ValueError, RecursionError) as e:
        raise InputError(f"{what} is not valid JSON: {e}") from e


def ascii_int(text: str) -> int:
    """A decimal number in ASCII digits only (ValueError otherwise, e.g. for Arabic-Indic digits or " 1")."""
    if not text or not text.isascii() or not text.isdigit():
        raise ValueError(f"{text!r} is not a decimal number in ASCII digits")
    return int(text)
