"""Event-data decoders: interpret an event's data by its type.

Decoding never fails: data that does not match its type's layout comes back as
:class:`RawData` with the reason. Decoded values are untrusted (they come from the log,
not from the digest that was extended); :mod:`tboot_py.eventlog.checks` says whether the
data matches the digest.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass

from tboot_py.eventlog import model as m
from tboot_py.eventlog.model import Event


@dataclass(frozen=True, slots=True)
class RawData:
    """Data of a type tboot-py does not decode, or that did not match its layout."""

    data: bytes
    note: str = ""


@dataclass(frozen=True, slots=True)
class TextData:
    """Event data that is a string (EV_EFI_ACTION, EV_ACTION, grub/systemd-boot EV_IPL...)."""

    text: str


@dataclass(frozen=True, slots=True)
class SeparatorData:
    """EV_SEPARATOR (PFP 10.4.1): 00000000 normally, FFFFFFFF when firmware hit an error."""

    value: int

    @property
    def is_error(self) -> bool:
        return self.value == 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class StartupLocalityData:
    """EV_NO_ACTION "StartupLocality" (PFP 10.4.5.3): locality of TPM2_Startup (3) or H-CRTM (4)."""

    locality: int


@dataclass(frozen=True, slots=True)
class SpecIdData:
    """EV_NO_ACTION Spec ID header (PFP 10.4.5.1)."""

    spec_id: m.SpecIdEvent


@dataclass(frozen=True, slots=True)
class TbootPyEventData:
    """A measurement logged by tboot-py's measured-domain builder: EV_IPL whose data is a
    UTF-8 JSON object ``{"tboot-py": 1, "component": ..., "kind": ..., "file": ..., ...}``."""

    version: int
    component: str
    kind: str
    file: str | None
    cmdline: str | None
    #: Every member of the JSON object, as sorted ``(key, JSON-encoded value)`` pairs.
    fields: tuple[tuple[str, str], ...]


EventData = RawData | TextData | SeparatorData | StartupLocalityData | SpecIdData | TbootPyEventData


def _utf8_text(data: bytes) -> str | None:
    """Printable UTF-8 text with trailing NULs removed, or None."""
    s = data.rstrip(b"\x00")
    if not s:
        return None
    try:
        text = s.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(ord(c) < 0x20 and c not in "\t\n\r" for c in text):
        return None
    return text


def decode_tboot_py(data: bytes) -> TbootPyEventData | None:
    """The tboot-py JSON event data, or None when ``data`` is not one."""
    if not data.startswith(b"{") or len(data) > 1 << 20:
        return None
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    version = obj.get("tboot-py")
    component = obj.get("component")
    kind = obj.get("kind")
    if not isinstance(version, int) or isinstance(version, bool) or not isinstance(component, str):
        return None
    if not isinstance(kind, str):
        return None
    file = obj.get("file")
    cmdline = obj.get("cmdline")
    fields = tuple(sorted((str(k), json.dumps(v, sort_keys=True)) for k, v in obj.items()))
    return TbootPyEventData(
        version,
        component,
        kind,
        file if isinstance(file, str) else None,
        cmdline if isinstance(cmdline, str) else None,
        fields,
    )


def _no_action(ev: Event) -> EventData:
    d = ev.data
    if len(d) == 17 and d[:16] == b"StartupLocality\x00":
        return StartupLocalityData(d[16])
    if d[:16] == b"Spec ID Event03\x00":
        from tboot_py.errors import ParseError
        from tboot_py.eventlog.parse import parse_spec_id

        try:
            return SpecIdData(parse_spec_id(d))
        except ParseError as e:
            return RawData(d, f"bad Spec ID event: {e.message}")
    return RawData(d)


def _separator(ev: Event) -> EventData:
    if len(ev.data) == 4:
        return SeparatorData(struct.unpack("<I", ev.data)[0])
    return RawData(ev.data, "separator data is not 4 bytes")


def _text(ev: Event) -> EventData:
    t = _utf8_text(ev.data)
    return TextData(t) if t is not None else RawData(ev.data)


def _ipl(ev: Event) -> EventData:
    tp = decode_tboot_py(ev.data)
    if tp is not None:
        return tp
    return _text(ev)


_DECODERS: dict[int, Callable[[Event], EventData]] = {
    m.EV_NO_ACTION: _no_action,
    m.EV_SEPARATOR: _separator,
    m.EV_ACTION: _text,
    m.EV_EFI_ACTION: _text,
    m.EV_IPL: _ipl,
}


def register_decoder(event_type: int, fn: Callable[[Event], EventData]) -> None:
    """Install the decoder for an event type (used by the EFI decoders module)."""
    _DECODERS[event_type] = fn


def decode_event(ev: Event) -> EventData:
    """Decode ``ev.data`` by type; never raises."""
    fn = _DECODERS.get(ev.event_type)
    if fn is None:
        return RawData(ev.data)
    try:
        return fn(ev)
    except Exception as e:  # a decoder bug must not break a parse
        return RawData(ev.data, f"decoder failed: {type(e).__name__}")
