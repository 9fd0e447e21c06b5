"""Event-data decoders: interpret an event's data by its type.

Decoding never fails: data that does not match its type's layout comes back as
:class:`RawData` with the reason. Decoded values are untrusted (they come from the log,
not from the digest that was extended); :mod:`tboot_py.eventlog.checks` says whether the
data matches the digest.
"""

from __future__ import annotations

import json
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from tboot_py.errors import ParseError
from tboot_py.eventlog import efi
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
    UTF-8 JSON object ``{"tboot-py": 2, "component": ..., "kind": ..., "file": ...,
    "digests": {bank: hex}, ...}``.

    Version 2 records are extended as the hash of this data (as IMA extends the hash of its
    template), so a replay that matches a quote proves every field, the artifact's digests
    included. Version 1 records were extended as the artifact's digest: their fields are
    bound only where that digest can be recomputed from them (a command line).
    """

    version: int
    component: str
    kind: str
    file: str | None
    cmdline: str | None
    #: Every member of the JSON object, as sorted ``(key, JSON-encoded value)`` pairs.
    fields: tuple[tuple[str, str], ...]
    #: Version 2: the artifact's digests ``(bank, digest)`` as measured.
    artifact_digests: tuple[tuple[str, bytes], ...] = ()


#: The version of the records the builder writes.
TBOOT_PY_RECORD_VERSION = 2


def encode_tboot_py(component: str, kind: str, file: str | None, cmdline: str | None,
                    artifact_digests: tuple[tuple[str, bytes], ...]) -> bytes:
    """A version 2 record: canonical JSON (sorted keys, no spaces) of what was measured."""
    obj: dict[str, object] = {"tboot-py": TBOOT_PY_RECORD_VERSION, "component": component, "kind": kind,
                              "file": file, "digests": {b: d.hex() for b, d in artifact_digests}}
    if cmdline is not None:
        obj["cmdline"] = cmdline
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=True).encode()


def looks_like_tboot_py(data: bytes) -> bool:
    """Whether event data claims to be a tboot-py record (decodable or not)."""
    return b'"tboot-py"' in data


@dataclass(frozen=True, slots=True)
class EfiVariableEvent:
    """EV_EFI_VARIABLE_DRIVER_CONFIG / _BOOT / _BOOT2 / _AUTHORITY (PFP 10.2.6) with the
    value interpreted where the variable is known."""

    variable: efi.VariableData
    #: SecureBoot, DeployedMode, AuditMode, SetupMode: the one-byte boolean.
    enabled: bool | None = None
    #: PK, KEK, db, dbx, dbt, dbr, MokList...: the EFI_SIGNATURE_LISTs.
    signatures: tuple[efi.SignatureEntry, ...] | None = None
    boot_order: tuple[int, ...] | None = None
    load_option: efi.LoadOption | None = None
    #: EV_EFI_VARIABLE_AUTHORITY: the certificate that verified an image.
    authority: efi.SignatureDataAuthority | None = None
    #: SbatLevel and other text variables.
    text: str | None = None
    note: str = ""

    @property
    def name(self) -> str:
        return self.variable.name


@dataclass(frozen=True, slots=True)
class TaggedEventData:
    """TCG_PCClientTaggedEvent (PFP 10.4.2.3 EV_EVENT_TAG), e.g. the Linux EFI stub's initrd tag."""

    tag: int
    data: bytes
    text: str | None


@dataclass(frozen=True, slots=True)
class SP800155Data:
    """EV_NO_ACTION "SP800-155 Event" platform reference-manifest identification (PFP 10.4.5.6)."""

    signature: str
    vendor_id: int
    reference_manifest_guid: str
    platform_manufacturer: str
    platform_model: str
    platform_version: str
    firmware_manufacturer: str
    firmware_manufacturer_id: int
    firmware_version: str


EventData = (RawData | TextData | SeparatorData | StartupLocalityData | SpecIdData | TbootPyEventData
             | EfiVariableEvent | efi.ImageLoadData | efi.FirmwareBlob | efi.HandoffTables | efi.GptData
             | TaggedEventData | SP800155Data)


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
    digests: list[tuple[str, bytes]] = []
    if version >= 2:
        raw = obj.get("digests")
        if not isinstance(raw, dict) or not raw:
            return None
        for bank, hexv in raw.items():
            if not isinstance(hexv, str):
                return None
            try:
                digests.append((str(bank), bytes.fromhex(hexv)))
            except ValueError:
                return None
    fields = tuple(sorted((str(k), json.dumps(v, sort_keys=True)) for k, v in obj.items()))
    return TbootPyEventData(
        version,
        component,
        kind,
        file if isinstance(file, str) else None,
        cmdline if isinstance(cmdline, str) else None,
        fields,
        tuple(digests),
    )


def _no_action(ev: Event) -> EventData:
    d = ev.data
    if len(d) == 17 and d[:16] == b"StartupLocality\x00":
        return StartupLocalityData(d[16])
    if d[:16] == b"Spec ID Event03\x00":
        from tboot_py.eventlog.parse import parse_spec_id

        try:
            return SpecIdData(parse_spec_id(d))
        except ParseError as e:
            return RawData(d, f"bad Spec ID event: {e.message}")
    if d[:15] == b"SP800-155 Event":
        try:
            return _sp800_155(d)
        except ParseError as e:
            return RawData(d, f"bad SP800-155 event: {e.message}")
    return RawData(d)


def _sp800_155(d: bytes) -> SP800155Data:
    r = efi.Reader(d)
    sig = r.take(16).rstrip(b"\x00").decode("ascii", "replace")

    def s8() -> str:
        return r.take(r.u8(), "string").rstrip(b"\x00").decode("utf-8", "replace")

    vendor = r.u32()
    guid = str(r.guid())
    pm, model, ver, fwm = s8(), s8(), s8(), s8()
    fwid = r.u32()
    fwver = s8()
    return SP800155Data(sig, vendor, guid, pm, model, ver, fwm, fwid, fwver)


def _separator(ev: Event) -> EventData:
    if ev.data in (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff"):
        return SeparatorData(struct.unpack("<I", ev.data)[0])
    # Windows logs "WBCL" separators in PCRs 12-14; PFP 10.4.1 allows only 0 and FFFFFFFF.
    return RawData(ev.data, "non-standard separator data")


def _text(ev: Event) -> EventData:
    t = _utf8_text(ev.data)
    return TextData(t) if t is not None else RawData(ev.data)


def _text_or_utf16(ev: Event) -> EventData:
    """EV_IPL from grub is UTF-8; systemd-boot logs the kernel command line as UTF-16LE."""
    t = _utf8_text(ev.data)
    if t is not None:
        return TextData(t)
    if len(ev.data) >= 2 and len(ev.data) % 2 == 0:
        try:
            u = efi.utf16(ev.data)
        except ParseError:
            u = ""
        if u and all(ord(c) >= 0x20 or c in "\t\n\r" for c in u):
            return TextData(u)
    return RawData(ev.data)


def _ipl_any(ev: Event) -> EventData:
    tp = decode_tboot_py(ev.data)
    return tp if tp is not None else _text_or_utf16(ev)


_BOOLEAN_VARS = {"SecureBoot", "DeployedMode", "AuditMode", "SetupMode", "MokSBState"}
_SIGDB_VARS = {"PK", "KEK", "db", "dbx", "dbt", "dbr", "MokList", "MokListX", "MokListTrusted"}


def _variable(ev: Event) -> EventData:
    try:
        var = efi.variable_data(ev.data)
    except ParseError as e:
        return RawData(ev.data, f"bad UEFI_VARIABLE_DATA: {e.message}")
    name, value = var.name, var.data
    try:
        if ev.event_type == m.EV_EFI_VARIABLE_AUTHORITY:
            return EfiVariableEvent(var, authority=efi.authority_data(value))
        if name in _BOOLEAN_VARS:
            if len(value) == 1:
                return EfiVariableEvent(var, enabled=value[0] == 1)
            if len(value) == 0:
                return EfiVariableEvent(var, enabled=False, note="empty value")
            return EfiVariableEvent(var, note="not a one-byte boolean")
        if name in _SIGDB_VARS:
            return EfiVariableEvent(var, signatures=efi.signature_lists(value))
        if name == "BootOrder":
            return EfiVariableEvent(var, boot_order=efi.boot_order(value))
        if len(name) == 8 and name.startswith("Boot") and all(c in "0123456789ABCDEFabcdef" for c in name[4:]):
            return EfiVariableEvent(var, load_option=efi.load_option(value))
        t = _utf8_text(value)
        if t is not None:
            return EfiVariableEvent(var, text=t)
    except ParseError as e:
        return EfiVariableEvent(var, note=f"value does not parse: {e.message}")
    return EfiVariableEvent(var)


def _struct(fn: Callable[[bytes], EventData]) -> Callable[[Event], EventData]:
    def dec(ev: Event) -> EventData:
        try:
            return fn(ev.data)
        except ParseError as e:
            return RawData(ev.data, e.message)

    return dec


def _post_code(ev: Event) -> EventData:
    # PFP 10.4.1: a UEFI_PLATFORM_FIRMWARE_BLOB or an ASCII string ("ACPI DATA", "SMM CODE").
    if len(ev.data) == 16:
        return efi.firmware_blob(ev.data)
    return _text(ev)


def _crtm_version(ev: Event) -> EventData:
    # PFP 10.4.1: a UTF-16 string, or a GUID naming the version.
    t = _text_or_utf16(ev)
    if isinstance(t, TextData):
        return t
    if len(ev.data) == 16:
        return TextData(str(uuid.UUID(bytes_le=ev.data)))
    return t


def _tagged(ev: Event) -> EventData:
    r = efi.Reader(ev.data)
    try:
        tag, size = r.u32(), r.u32()
        body = r.take(size, "taggedEventData")
    except ParseError as e:
        return RawData(ev.data, e.message)
    if r.left:
        return RawData(ev.data, "trailing bytes after the tagged event")
    return TaggedEventData(tag, body, _utf8_text(body))


_DECODERS: dict[int, Callable[[Event], EventData]] = {
    m.EV_NO_ACTION: _no_action,
    m.EV_SEPARATOR: _separator,
    m.EV_ACTION: _text,
    m.EV_EFI_ACTION: _text,
    m.EV_IPL: _ipl_any,
    m.EV_POST_CODE: _post_code,
    m.EV_S_CRTM_VERSION: _crtm_version,
    m.EV_S_CRTM_CONTENTS: _text,
    m.EV_COMPACT_HASH: _text,
    m.EV_CPU_MICROCODE: _text,
    m.EV_EVENT_TAG: _tagged,
    m.EV_EFI_VARIABLE_DRIVER_CONFIG: _variable,
    m.EV_EFI_VARIABLE_BOOT: _variable,
    m.EV_EFI_VARIABLE_BOOT2: _variable,
    m.EV_EFI_VARIABLE_AUTHORITY: _variable,
    m.EV_EFI_BOOT_SERVICES_APPLICATION: _struct(efi.image_load),
    m.EV_EFI_BOOT_SERVICES_DRIVER: _struct(efi.image_load),
    m.EV_EFI_RUNTIME_SERVICES_DRIVER: _struct(efi.image_load),
    m.EV_EFI_PLATFORM_FIRMWARE_BLOB: _struct(efi.firmware_blob),
    m.EV_EFI_PLATFORM_FIRMWARE_BLOB2: _struct(efi.firmware_blob2),
    m.EV_EFI_HANDOFF_TABLES: _struct(efi.handoff_tables),
    m.EV_EFI_HANDOFF_TABLES2: _struct(lambda d: efi.handoff_tables(d, v2=True)),
    m.EV_EFI_GPT_EVENT: _struct(efi.gpt_data),
    m.EV_EFI_GPT_EVENT2: _struct(efi.gpt_data),
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


def summary(e: Event) -> str:
    """A one-line description of an event's data, for display (untrusted unless a digest binds it)."""
    v = decode_event(e)
    if isinstance(v, TextData):
        return v.text
    if isinstance(v, EfiVariableEvent):
        extra = ""
        if v.enabled is not None:
            extra = f" = {'on' if v.enabled else 'off'}"
        elif v.signatures is not None:
            extra = f" ({len(v.signatures)} entries)"
        elif v.authority is not None and v.authority.cert is not None:
            extra = f" {v.authority.cert.subject}"
        elif v.load_option is not None:
            extra = f" {v.load_option.description}: {v.load_option.device_path}"
        elif v.boot_order is not None:
            extra = " " + ",".join(f"{x:04X}" for x in v.boot_order)
        return f"{v.name}{extra}"
    if isinstance(v, efi.ImageLoadData):
        return v.device_path or f"image at 0x{v.location:x}"
    if isinstance(v, TbootPyEventData):
        return f"tboot-py {v.component} ({v.kind}) {v.file or ''}".rstrip()
    if isinstance(v, SeparatorData):
        return f"{v.value:08x}"
    if isinstance(v, StartupLocalityData):
        return f"StartupLocality {v.locality}"
    if isinstance(v, SpecIdData):
        return "Spec ID Event03: " + ", ".join(v.spec_id.bank_names)
    if isinstance(v, efi.FirmwareBlob):
        return f"{v.description + ' ' if v.description else ''}0x{v.base:x} +0x{v.length:x}"
    if isinstance(v, TaggedEventData):
        return f"tag 0x{v.tag:08x} {v.text or ''}".rstrip()
    data: bytes = e.data
    return data[:24].hex() + ("…" if len(data) > 24 else "")
