"""Appraisal reads only tboot-py records it can name; anything else denies."""

from __future__ import annotations

import pytest

from tboot_py.errors import ParseError
from tboot_py.verify import appraise as ap
from tboot_py.verify.evidence import VerifiedEvent


class _Boot:
    def __init__(self, events: tuple[VerifiedEvent, ...]) -> None:
        self.events = events


def _ev(data: bytes) -> VerifiedEvent:
    return VerifiedEvent("tboot-py", 1, 9, ap.EV_IPL, ((0x000B, b"\x11" * 32),), data)


def test_measurements_come_from_tboot_py_records() -> None:
    ok = _ev(b'{"tboot-py":1,"component":"kernel","kind":"pe","file":"vmlinuz"}')
    other = VerifiedEvent("fw", 2, 9, ap.EV_IPL, ((0x000B, b"\x22" * 32),), b"grub_cmd linux /vmlinuz")
    ms = ap.verified_measurements(_Boot((ok, other)))  # type: ignore[arg-type]
    assert len(ms) == 1 and ms[0].component.value == "kernel" and ms[0].digest("sha256") == b"\x11" * 32


def test_unknown_component_denies() -> None:
    bad = _ev(b'{"tboot-py":1,"component":"firmware","kind":"pe","file":"x"}')
    with pytest.raises(ParseError, match="unknown component"):
        ap.verified_measurements(_Boot((bad,)))  # type: ignore[arg-type]
