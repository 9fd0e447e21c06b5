"""UEFI structures found in event data (PFP 10.2 and UEFI 2.10), parsed with bounds checks.

Every function here raises only :class:`~tboot_py.errors.ParseError` (offsets are relative
to the event data); :mod:`tboot_py.eventlog.decode` turns that into a raw value.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
import warnings
from dataclasses import dataclass

from tboot_py.errors import ParseError

# GUIDs (UEFI 2.10, 32.4.1 and 3.3; shim's lock GUID).
EFI_GLOBAL_VARIABLE = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
EFI_IMAGE_SECURITY_DATABASE = uuid.UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
SHIM_LOCK = uuid.UUID("605dab50-e046-4300-abb6-3dd810dd8b23")

CERT_TYPES: dict[uuid.UUID, tuple[str, int | None]] = {
    # SignatureType -> (name, SignatureSize without the owner GUID; None = variable)
    uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072"): ("x509", None),
    uuid.UUID("c1c41626-504c-4092-aca9-41f936934328"): ("sha256", 32),
    uuid.UUID("826ca512-cf10-4ac9-b187-be01496631bd"): ("sha1", 20),
    uuid.UUID("ff3e5307-9fd0-48c9-85f1-8ad56c701e01"): ("sha384", 48),
    uuid.UUID("093e0fae-a6c4-4f50-9f1b-d41e2b89c19a"): ("sha512", 64),
    uuid.UUID("0b6e5233-a65c-44c9-9407-d9ab83bfc8bd"): ("sha224", 28),
    uuid.UUID("3c5766e8-269c-4e34-aa14-ed776e85b3b6"): ("rsa2048", 256),
    uuid.UUID("3bd2a492-96c0-4079-b420-fcf98ef103ed"): ("x509_sha256", None),
    uuid.UUID("7076876e-80c2-4ee6-aad2-28b349a6865b"): ("x509_sha384", None),
    uuid.UUID("446dbf63-2502-4cda-bcfa-2465d2b0fe9d"): ("x509_sha512", None),
}

MAX_ITEMS = 4096


class Reader:
    """A cursor over bytes; every read is checked against what is left."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, what: str = "field") -> bytes:
        if n < 0 or n > self.left:
            raise ParseError(f"{what}: needs {n} bytes, {self.left} left", self.pos)
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def u8(self) -> int:
        return self.take(1, "u8")[0]

    def u16(self) -> int:
        v: int = struct.unpack("<H", self.take(2, "u16"))[0]
        return v

    def u32(self) -> int:
        v: int = struct.unpack("<I", self.take(4, "u32"))[0]
        return v

    def u64(self) -> int:
        v: int = struct.unpack("<Q", self.take(8, "u64"))[0]
        return v

    def guid(self) -> uuid.UUID:
        return uuid.UUID(bytes_le=self.take(16, "GUID"))

    def rest(self) -> bytes:
        return self.take(self.left)


def utf16(data: bytes, offset: int = 0) -> str:
    """UCS-2/UTF-16LE text up to the first NUL."""
    if len(data) % 2:
        raise ParseError("odd-length UTF-16 string", offset + len(data))
    try:
        text = data.decode("utf-16-le")
    except UnicodeDecodeError as e:
        raise ParseError("invalid UTF-16 string", offset + e.start) from e
    return text.split("\x00", 1)[0]


def utf16z(r: Reader) -> str:
    """A NUL-terminated CHAR16 string (the terminator is consumed)."""
    start = r.pos
    while True:
        if r.left < 2:
            raise ParseError("unterminated UTF-16 string", r.pos)
        if r.data[r.pos:r.pos + 2] == b"\x00\x00":
            s = utf16(r.data[start:r.pos], start)
            r.pos += 2
            return s
        r.pos += 2


# --- certificates and signature lists ---------------------------------------------------

@dataclass(frozen=True, slots=True)
class CertInfo:
    """An X.509 certificate as found in a signature database or authority event."""

    subject: str
    issuer: str
    serial: str
    sha256: str  # fingerprint of the DER
    der: bytes


def cert_info(der: bytes) -> CertInfo:
    from cryptography import x509

    try:
        with warnings.catch_warnings():  # real firmware certs break RFC 5280 in small ways
            warnings.simplefilter("ignore")
            cert = x509.load_der_x509_certificate(der)
            subject = cert.subject.rfc4514_string()
            issuer = cert.issuer.rfc4514_string()
            serial = format(cert.serial_number, "x")
    except Exception as e:  # cryptography raises ValueError and friends for bad DER
        raise ParseError(f"not an X.509 certificate: {type(e).__name__}", 0) from e
    return CertInfo(subject, issuer, serial, hashlib.sha256(der).hexdigest(), der)


@dataclass(frozen=True, slots=True)
class SignatureEntry:
    """One EFI_SIGNATURE_DATA of an EFI_SIGNATURE_LIST (UEFI 2.10, 32.4.1)."""

    type: str  # x509, sha256, ... or the SignatureType GUID when unknown
    owner: uuid.UUID
    data: bytes
    cert: CertInfo | None = None

    @property
    def hash_hex(self) -> str | None:
        return None if self.cert is not None or self.type.startswith("x509") else self.data.hex()


def signature_lists(data: bytes) -> tuple[SignatureEntry, ...]:
    """Parse a concatenation of EFI_SIGNATURE_LISTs (PK, KEK, db, dbx, MokList)."""
    r = Reader(data)
    out: list[SignatureEntry] = []
    while r.left:
        start = r.pos
        sig_type = r.guid()
        list_size, header_size, sig_size = r.u32(), r.u32(), r.u32()
        if list_size < 28 or list_size - 28 > len(data) - r.pos:
            raise ParseError(f"SignatureListSize {list_size} out of bounds", start + 16)
        if header_size > list_size - 28:
            raise ParseError(f"SignatureHeaderSize {header_size} out of bounds", start + 20)
        body = list_size - 28 - header_size
        if sig_size < 16 or body % sig_size:
            raise ParseError(f"SignatureSize {sig_size} does not divide the list", start + 24)
        r.take(header_size, "signature header")
        name, fixed = CERT_TYPES.get(sig_type, (str(sig_type), None))
        if fixed is not None and sig_size != 16 + fixed:
            raise ParseError(f"{name} signature of {sig_size - 16} bytes", start + 24)
        for _ in range(body // sig_size):
            if len(out) >= MAX_ITEMS:
                raise ParseError("too many signatures", r.pos)
            owner = r.guid()
            sig = r.take(sig_size - 16, "signature data")
            cert = None
            if name == "x509":
                try:
                    cert = cert_info(sig)
                except ParseError:
                    cert = None
            out.append(SignatureEntry(name, owner, sig, cert))
    return tuple(out)


# --- UEFI_VARIABLE_DATA ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class VariableData:
    """UEFI_VARIABLE_DATA (PFP 10.2.6)."""

    guid: uuid.UUID
    name: str
    data: bytes


def variable_data(data: bytes) -> VariableData:
    r = Reader(data)
    guid = r.guid()
    name_len, data_len = r.u64(), r.u64()
    if name_len > r.left // 2:
        raise ParseError(f"UnicodeNameLength {name_len} exceeds the data", 16)
    name = utf16(r.take(2 * name_len, "variable name"), 32)
    if data_len > r.left:
        raise ParseError(f"VariableDataLength {data_len} exceeds the {r.left} bytes left", 24)
    value = r.take(data_len, "variable data")
    return VariableData(guid, name, value)


@dataclass(frozen=True, slots=True)
class LoadOption:
    """EFI_LOAD_OPTION of a Boot#### variable (UEFI 2.10, 3.1.3)."""

    attributes: int
    description: str
    device_path: str
    optional_data: bytes


def load_option(data: bytes) -> LoadOption:
    r = Reader(data)
    attrs = r.u32()
    fp_len = r.u16()
    desc = utf16z(r)
    fp = r.take(fp_len, "FilePathList")
    return LoadOption(attrs, desc, device_path_text(fp), r.rest())


def boot_order(data: bytes) -> tuple[int, ...]:
    if len(data) % 2:
        raise ParseError("BootOrder has an odd length", len(data))
    return struct.unpack(f"<{len(data) // 2}H", data)


# --- device paths (UEFI 2.10, chapter 10) ------------------------------------------------

def device_path_text(data: bytes) -> str:
    """A device path in the UEFI text form (best effort; unknown nodes as Path(t,s,hex))."""
    r = Reader(data)
    parts: list[str] = []
    while r.left:
        start = r.pos
        t, s, length = r.u8(), r.u8(), r.u16()
        if length < 4 or length - 4 > r.left:
            raise ParseError(f"device path node length {length}", start + 2)
        body = r.take(length - 4, "device path node")
        if t == 0x7F:
            if s == 0xFF:
                break
            parts.append("|")
            continue
        parts.append(_node_text(t, s, body))
        if len(parts) > MAX_ITEMS:
            raise ParseError("device path too long", r.pos)
    return "/".join(parts).replace("/|/", ",")


def _node_text(t: int, s: int, b: bytes) -> str:
    try:
        if t == 1 and s == 1 and len(b) == 2:
            return f"Pci(0x{b[1]:x},0x{b[0]:x})"
        if t == 1 and s == 4 and len(b) >= 16:
            return f"VenHw({uuid.UUID(bytes_le=b[:16])})"
        if t == 2 and s == 1 and len(b) == 8:
            hid, uid = struct.unpack("<II", b)
            if hid & 0xFFFF == 0x41D0:
                return f"PciRoot(0x{uid:x})" if hid >> 16 in (0x0A03, 0x0A08) else f"Acpi(PNP{hid >> 16:04X},0x{uid:x})"
            return f"Acpi(0x{hid:08x},0x{uid:x})"
        if t == 3 and s == 0x12 and len(b) >= 6:
            hba, pm, lun = struct.unpack_from("<HHH", b)
            return f"Sata(0x{hba:x},0x{pm:x},0x{lun:x})"
        if t == 3 and s == 0x17 and len(b) >= 12:
            nsid = struct.unpack_from("<I", b)[0]
            return f"NVMe(0x{nsid:x},{b[4:12].hex('-').upper()})"
        if t == 3 and s == 5 and len(b) >= 2:
            return f"USB(0x{b[0]:x},0x{b[1]:x})"
        if t == 3 and s == 2 and len(b) >= 4:
            pun, lun = struct.unpack_from("<HH", b)
            return f"Scsi(0x{pun:x},0x{lun:x})"
        if t == 3 and s == 11 and len(b) >= 32:
            return f"MAC({b[:6].hex()},0x{b[32] if len(b) > 32 else 0:x})"
        if t == 3 and s == 24:
            return f"Uri({b.decode('ascii', 'replace')})"
        if t == 3 and s == 10 and len(b) >= 16:
            return f"VenMsg({uuid.UUID(bytes_le=b[:16])})"
        if t == 4 and s == 1 and len(b) >= 38:
            part, start, size = struct.unpack_from("<IQQ", b)
            sig, fmt, sigtype = b[20:36], b[36], b[37]
            if sigtype == 2:
                return f"HD({part},GPT,{uuid.UUID(bytes_le=sig)},0x{start:x},0x{size:x})"
            if sigtype == 1:
                return f"HD({part},MBR,0x{struct.unpack_from('<I', sig)[0]:08x},0x{start:x},0x{size:x})"
            return f"HD({part},{fmt},{sigtype},0x{start:x},0x{size:x})"
        if t == 4 and s == 2 and len(b) >= 12:
            return f"CDROM(0x{struct.unpack_from('<I', b)[0]:x})"
        if t == 4 and s == 3 and len(b) >= 16:
            return f"VenMedia({uuid.UUID(bytes_le=b[:16])})"
        if t == 4 and s == 4:
            return utf16(b)
        if t == 4 and s == 6 and len(b) == 16:
            return f"FvFile({uuid.UUID(bytes_le=b)})"
        if t == 4 and s == 7 and len(b) == 16:
            return f"Fv({uuid.UUID(bytes_le=b)})"
        if t == 4 and s == 8 and len(b) >= 20:
            start, end = struct.unpack_from("<QQ", b, 4)  # after a reserved UINT32
            return f"Offset(0x{start:x},0x{end:x})"
        if t == 5 and s == 1 and len(b) >= 4:
            return f"BBS(0x{struct.unpack_from('<H', b)[0]:x},{b[4:].rstrip(bytes(1)).decode('ascii', 'replace')})"
    except ParseError:
        pass
    return f"Path({t},{s},{b.hex()})"


# --- image load events, blobs, handoff tables, GPT ------------------------------------------

@dataclass(frozen=True, slots=True)
class ImageLoadData:
    """UEFI_IMAGE_LOAD_EVENT (PFP 10.2.3)."""

    location: int
    length: int
    link_time_address: int
    device_path: str


def image_load(data: bytes) -> ImageLoadData:
    r = Reader(data)
    loc, length, link, dp_len = r.u64(), r.u64(), r.u64(), r.u64()
    if dp_len > r.left:
        raise ParseError(f"LengthOfDevicePath {dp_len} exceeds the {r.left} bytes left", 24)
    dp = r.take(dp_len)
    try:
        text = device_path_text(dp)
    except ParseError:
        text = dp.hex()
    return ImageLoadData(loc, length, link, text)


@dataclass(frozen=True, slots=True)
class FirmwareBlob:
    """UEFI_PLATFORM_FIRMWARE_BLOB (PFP 10.2.4) and BLOB2 (with a description)."""

    base: int
    length: int
    description: str | None = None


def firmware_blob(data: bytes) -> FirmwareBlob:
    if len(data) != 16:
        raise ParseError(f"firmware blob event of {len(data)} bytes, expected 16", 0)
    base, length = struct.unpack("<QQ", data)
    return FirmwareBlob(base, length)


def firmware_blob2(data: bytes) -> FirmwareBlob:
    r = Reader(data)
    desc = r.take(r.u8(), "BlobDescription").decode("ascii", "replace").rstrip("\x00")
    base, length = r.u64(), r.u64()
    if r.left:
        raise ParseError("trailing bytes after UEFI_PLATFORM_FIRMWARE_BLOB2", r.pos)
    return FirmwareBlob(base, length, desc)


@dataclass(frozen=True, slots=True)
class HandoffTables:
    """UEFI_HANDOFF_TABLE_POINTERS (PFP 10.2.5) and ..._POINTERS2 (with a description)."""

    tables: tuple[tuple[uuid.UUID, int], ...]
    description: str | None = None


def handoff_tables(data: bytes, v2: bool = False) -> HandoffTables:
    r = Reader(data)
    desc = r.take(r.u8(), "TableDescription").decode("ascii", "replace").rstrip("\x00") if v2 else None
    n = r.u64()
    if n > r.left // 24:
        raise ParseError(f"NumberOfTables {n} exceeds the data", r.pos - 8)
    tables = tuple((r.guid(), r.u64()) for _ in range(n))
    return HandoffTables(tables, desc)


@dataclass(frozen=True, slots=True)
class GptPartition:
    type_guid: uuid.UUID
    unique_guid: uuid.UUID
    first_lba: int
    last_lba: int
    attributes: int
    name: str


@dataclass(frozen=True, slots=True)
class GptData:
    """UEFI_GPT_DATA (PFP 10.2.7): the GPT header and the used partition entries."""

    disk_guid: uuid.UUID
    partitions: tuple[GptPartition, ...]


def gpt_data(data: bytes) -> GptData:
    r = Reader(data)
    hdr_start = r.pos
    if r.take(8, "GPT signature") != b"EFI PART":
        raise ParseError("no EFI PART signature", 0)
    r.u32()  # revision
    hdr_size = r.u32()
    if hdr_size < 92 or hdr_size > len(data):
        raise ParseError(f"GPT HeaderSize {hdr_size}", 12)
    r.pos = hdr_start + 56
    disk_guid = r.guid()
    r.u64()  # PartitionEntryLBA
    r.u32()  # NumberOfPartitionEntries
    entry_size = r.u32()
    if entry_size < 128 or entry_size > 4096:
        raise ParseError(f"SizeOfPartitionEntry {entry_size}", 84)
    # UEFI_GPT_DATA.UEFIPartitionHeader is sizeof(EFI_PARTITION_TABLE_HEADER): 92 bytes
    # packed, but some firmware uses the 8-byte-aligned C size (96). Take the one whose
    # NumberOfPartitions fits the data exactly.
    for pad in sorted({hdr_size, (hdr_size + 7) & ~7}):
        r.pos = hdr_start + pad
        n = r.u64()
        if n <= r.left // entry_size and r.left == n * entry_size:
            break
    else:
        r.pos = hdr_start + hdr_size
        n = r.u64()
    if n > r.left // entry_size:
        raise ParseError(f"NumberOfPartitions {n} exceeds the data", r.pos - 8)
    parts = []
    for _ in range(n):
        e = Reader(r.take(entry_size))
        tg, ug = e.guid(), e.guid()
        first, last, attrs = e.u64(), e.u64(), e.u64()
        parts.append(GptPartition(tg, ug, first, last, attrs, utf16(e.take(72))))
    return GptData(disk_guid, tuple(parts))


@dataclass(frozen=True, slots=True)
class SignatureDataAuthority:
    """EV_EFI_VARIABLE_AUTHORITY payload: EFI_SIGNATURE_DATA (owner GUID + certificate)."""

    owner: uuid.UUID | None
    cert: CertInfo | None
    data: bytes


def authority_data(data: bytes) -> SignatureDataAuthority:
    """The variable data of an authority event: EFI_SIGNATURE_DATA, or a bare certificate
    (shim logs MokList entries that way)."""
    if len(data) > 16:
        try:
            return SignatureDataAuthority(uuid.UUID(bytes_le=data[:16]), cert_info(data[16:]), data)
        except ParseError:
            pass
    try:
        return SignatureDataAuthority(None, cert_info(data), data)
    except ParseError:
        return SignatureDataAuthority(None, None, data)
