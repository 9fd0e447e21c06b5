"""Hand-built minimal PE/COFF images for the measurement tests (PE Format spec layout).

The builder records where it put every field, so tests can state the expected
Authenticode byte ranges independently of tboot_py's parser.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field


@dataclass
class Sec:
    name: bytes
    data: bytes
    pointer: int | None = None  # file offset; None = next FileAlignment boundary
    raw_size: int | None = None  # SizeOfRawData; None = len(data) rounded up to FileAlignment


@dataclass
class PE:
    data: bytes
    checksum_off: int
    certdir_off: int | None
    size_of_headers: int
    sections: list[tuple[int, int]] = field(default_factory=list)  # (pointer, raw size) in table order
    section_table_off: int = 0
    opt_off: int = 0

    def expected_ranges(self, cert_size: int = 0) -> list[tuple[int, int]]:
        """The Authenticode ranges as the spec words them, from the builder's own offsets."""
        r = [(0, self.checksum_off)]
        if self.certdir_off is None:
            r.append((self.checksum_off + 4, self.size_of_headers - self.checksum_off - 4))
        else:
            r.append((self.checksum_off + 4, self.certdir_off - self.checksum_off - 4))
            r.append((self.certdir_off + 8, self.size_of_headers - self.certdir_off - 8))
        total = self.size_of_headers
        for p, n in sorted(self.sections):
            if n:
                r.append((p, n))
                total += n
        extra = len(self.data) - cert_size - total
        if extra > 0:
            r.append((total, extra))
        return r

    def expected_bytes(self, cert_size: int = 0) -> bytes:
        return b"".join(self.data[o : o + n] for o, n in self.expected_ranges(cert_size))


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def build_pe(
    sections: list[Sec] | None = None,
    *,
    pe32plus: bool = True,
    lfanew: int = 0x80,
    file_alignment: int = 0x200,
    n_rva: int = 16,
    size_of_headers: int | None = None,
    checksum: int = 0x1234,
    cert_dir: tuple[int, int] = (0, 0),
    trailing: bytes = b"",
    num_sections_override: int | None = None,
) -> PE:
    if sections is None:
        sections = [Sec(b".text", b"\x90" * 700), Sec(b".data", bytes(range(256)) * 3)]
    opt_fixed = 112 if pe32plus else 96
    size_opt = opt_fixed + 8 * n_rva
    opt_off = lfanew + 24
    sec_table = opt_off + size_opt
    hdr_end = sec_table + 40 * len(sections)
    soh = size_of_headers if size_of_headers is not None else _align(hdr_end, file_alignment)

    placed: list[tuple[int, int, bytes]] = []
    pos = soh
    for s in sections:
        raw = s.raw_size if s.raw_size is not None else _align(len(s.data), file_alignment)
        ptr = s.pointer if s.pointer is not None else _align(pos, file_alignment)
        placed.append((ptr, raw, s.data))
        pos = max(pos, ptr + raw)

    size = max([soh] + [p + n for p, n, _ in placed if n])
    img = bytearray(size)
    img[0:2] = b"MZ"
    struct.pack_into("<I", img, 0x3C, lfanew)
    img[0x40:0x40 + 14] = b"synthetic stub"
    img[lfanew : lfanew + 4] = b"PE\0\0"
    nsec = len(sections) if num_sections_override is None else num_sections_override
    # COFF header: Machine, NumberOfSections, TimeDateStamp, PointerToSymbolTable,
    # NumberOfSymbols, SizeOfOptionalHeader, Characteristics
    struct.pack_into("<HHIIIHH", img, lfanew + 4, 0x8664 if pe32plus else 0x14C, nsec, 0, 0, 0, size_opt, 0x22)
    o = opt_off
    struct.pack_into("<HBB", img, o, 0x20B if pe32plus else 0x10B, 14, 0)
    struct.pack_into("<IIIII", img, o + 4, 0x1000, 0x1000, 0, 0x1000, 0x1000)  # sizes, entry, BaseOfCode
    if pe32plus:
        struct.pack_into("<Q", img, o + 24, 0x140000000)
    else:
        struct.pack_into("<II", img, o + 24, 0x1000, 0x400000)  # BaseOfData, ImageBase
    struct.pack_into("<II", img, o + 32, 0x1000, file_alignment)  # SectionAlignment, FileAlignment
    struct.pack_into("<HHHHHH", img, o + 40, 6, 0, 0, 0, 6, 0)
    struct.pack_into("<IIII", img, o + 52, 0, 0x1000 * (len(sections) + 1), soh, checksum)
    struct.pack_into("<HH", img, o + 68, 10, 0x160)  # Subsystem EFI application, DllCharacteristics
    if pe32plus:
        struct.pack_into("<QQQQII", img, o + 72, 0x100000, 0x1000, 0x100000, 0x1000, 0, n_rva)
    else:
        struct.pack_into("<IIIIII", img, o + 72, 0x100000, 0x1000, 0x100000, 0x1000, 0, n_rva)
    dd = o + opt_fixed
    certdir_off: int | None = None
    if n_rva > 4:
        certdir_off = dd + 8 * 4
        struct.pack_into("<II", img, certdir_off, *cert_dir)
    for i, (ptr, raw, data) in enumerate(placed):
        s = sections[i]
        h = sec_table + 40 * i
        struct.pack_into("<8sIIIIIIHHI", img, h, s.name, max(len(data), 1), 0x1000 * (i + 1), raw, ptr, 0, 0, 0, 0,
                         0x60000020)
        if raw and data:
            img[ptr : ptr + min(len(data), raw)] = data[:raw]
    img += trailing
    return PE(bytes(img), o + 64, certdir_off, soh, [(p, n) for p, n, _ in placed], sec_table, opt_off)


def with_cert_table(pe_bytes: bytes, certdir_off: int, cert: bytes) -> bytes:
    """Append an attribute certificate table (8-byte aligned, PE Format "The Attribute
    Certificate Table") and point the Certificate Table data directory at it."""
    body = bytearray(pe_bytes)
    body += b"\0" * (-len(body) % 8)
    off = len(body)
    body += cert
    struct.pack_into("<II", body, certdir_off, off, len(cert))
    return bytes(body)


def win_certificate(payload: bytes = b"\x30\x03\x02\x01\x00") -> bytes:
    """A WIN_CERTIFICATE header (dwLength, wRevision 0x0200, wCertificateType PKCS_SIGNED_DATA)."""
    n = 8 + len(payload)
    blob = struct.pack("<IHH", n, 0x0200, 0x0002) + payload
    return blob + b"\0" * (-len(blob) % 8)
