"""Small argument parsers shared by the CLI commands."""

from __future__ import annotations

from tboot_py.errors import InputError


def parse_hex(value: str, what: str) -> bytes:
    try:
        return bytes.fromhex(value.strip().removeprefix("0x"))
    except ValueError as e:
        raise InputError(f"{what} must be hex: {value!r}") from e


def parse_handle(value: str) -> int:
    try:
        return int(value, 0)
    except ValueError as e:
        raise InputError(f"bad handle {value!r}; use e.g. 0x81010002") from e

