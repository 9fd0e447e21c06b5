"""Evidence JSON is hostile: only ParseError may leave its parser."""

from __future__ import annotations

import pytest

from tboot_py.errors import ParseError
from tboot_py.tpm.evidence import parse_pcr_json


@pytest.mark.parametrize("index", ["\u00b2", "\u0663", "\uff11", " 1", "-1", "24", ""])
def test_pcr_index_must_be_ascii_decimal(index: str) -> None:
    # str.isdigit() accepts superscripts and non-Latin digits, which int() rejects.
    with pytest.raises(ParseError):
        parse_pcr_json({"sha256": {index: "00" * 32}})


def test_pcr_index_ascii_decimal_parses() -> None:
    assert parse_pcr_json({"sha256": {"7": "ab" * 32}}) == {"sha256": {7: b"\xab" * 32}}
