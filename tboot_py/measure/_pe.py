"""A small typed adapter over pefile: just the PE/COFF header facts Authenticode needs.

pefile has no type hints and raises many kinds of exceptions on hostile input; here
every failure becomes ParseError (with an offset), and pefile only ever sees a lazy,
size-capped view of the file, so a hostile header cannot make it read gigabytes.
Field offsets follow the Microsoft PE/COFF specification ("PE Format"), sections
"MS-DOS Stub", "Signature", "COFF File Header", "Optional Header" and "Section Table".
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass
from typing import Any, SupportsIndex, overload

from tboot_py.errors import ParseError
from tboot_py.measure._source import Source

PE32_MAGIC = 0x10B
PE32PLUS_MAGIC = 0x20B
#: Data directory index of the Certificate Table (PE Format, "Optional Header Data Directories").
CERT_TABLE_INDEX = 4
#: Largest header region (and largest single read) we let pefile make. Real images keep
#: their headers in the first few KiB; a hostile e_lfanew or section pointer stops here.
MAX_HEADER_READ = 16 * 1024 * 1024
_COFF_HEADER_SIZE = 20
_SECTION_HEADER_SIZE = 40
#: Offset of the data directories inside the optional header (PE32 / PE32+).
_DATA_DIR_OFFSET = {PE32_MAGIC: 96, PE32PLUS_MAGIC: 112}
#: The CheckSum field sits at the same offset in both optional header formats.
_CHECKSUM_OFFSET = 64


@dataclass(frozen=True)
class Section:
    name: str
    header_offset: int
    pointer_to_raw_data: int
    size_of_raw_data: int


@dataclass(frozen=True)
class PEHeaders:
    """What Authenticode hashing needs to know about a PE image; all offsets are file offsets."""

    file_size: int
    pe_offset: int  # e_lfanew: the "PE\\0\\0" signature
    magic: int  # PE32_MAGIC or PE32PLUS_MAGIC
    optional_header_offset: int
    size_of_optional_header: int
    checksum_offset: int
    size_of_headers: int
    number_of_rva_and_sizes: int
    cert_dir_offset: int | None  # the Certificate Table data-directory entry, if present
    cert_table_offset: int  # its VirtualAddress (a file offset for this directory)
    cert_table_size: int
    section_table_offset: int
    sections: tuple[Section, ...]

    @property
    def section_table_end(self) -> int:
        return self.section_table_offset + _SECTION_HEADER_SIZE * len(self.sections)


class _TooLarge(Exception):
    pass


class _LazyData:
    """Looks like bytes to pefile (len, int index, slices, find) but reads on demand with pread."""

    def __init__(self, read: Any, size: int) -> None:
        self._read = read
        self._size = size

    def __len__(self) -> int:
        return self._size

    @overload
    def __getitem__(self, key: SupportsIndex) -> int: ...
    @overload
    def __getitem__(self, key: slice) -> bytes: ...
    def __getitem__(self, key: SupportsIndex | slice) -> int | bytes:
        if isinstance(key, slice):
            start, stop, step = key.indices(self._size)
            if step != 1:
                raise _TooLarge("strided read")
            if stop <= start:
                return b""
            if stop - start > MAX_HEADER_READ:
                raise _TooLarge(f"read of {stop - start} bytes at {start}")
            data: bytes = self._read(start, stop - start)
            return data
        i = key.__index__()
        if i < 0:
            i += self._size
        if not 0 <= i < self._size:
            raise IndexError(i)
        b: bytes = self._read(i, 1)
        return b[0]

    def find(self, sub: bytes, start: int = 0, end: int | None = None) -> int:
        end = self._size if end is None else min(end, self._size)
        if end - start > MAX_HEADER_READ:
            raise _TooLarge("search too large")
        i = self[start:end].find(sub)
        return -1 if i < 0 else start + i


def _u16(b: bytes, off: int) -> int:
    v: int = struct.unpack_from("<H", b, off)[0]
    return v


def _u32(b: bytes, off: int) -> int:
    v: int = struct.unpack_from("<I", b, off)[0]
    return v


def looks_like_pe(head: bytes, read: Any = None, size: int | None = None) -> bool:
    """MZ at 0 and "PE\\0\\0" at e_lfanew (reads the signature through ``read`` if needed)."""
    if len(head) < 0x40 or head[:2] != b"MZ":
        return False
    lfanew = _u32(head, 0x3C)
    if lfanew + 4 <= len(head):
        return head[lfanew : lfanew + 4] == b"PE\0\0"
    if read is None or size is None or lfanew + 4 > size or lfanew > MAX_HEADER_READ:
        return False
    sig: bytes = read(lfanew, 4)
    return sig == b"PE\0\0"


def parse_headers(read: Any, size: int, name: str) -> PEHeaders:
    """Parse a PE image's headers with pefile. ``read(offset, length) -> bytes`` is bounds-checked
    by the caller's size. Raises ParseError on anything malformed or out of bounds."""
    if size < 0x40:
        raise ParseError("too short for an MS-DOS header", 0, name)
    dos = read(0, 0x40)
    if dos[:2] != b"MZ":
        raise ParseError("no MZ signature", 0, name)
    lfanew = _u32(dos, 0x3C)
    if lfanew + 4 + _COFF_HEADER_SIZE > size:
        raise ParseError(f"e_lfanew 0x{lfanew:x} points past the end of the file", 0x3C, name)
    if lfanew > MAX_HEADER_READ:
        raise ParseError(f"e_lfanew 0x{lfanew:x} is implausibly large", 0x3C, name)

    import pefile  # heavy; only needed here

    lazy = _LazyData(read, size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pe: Any = pefile.PE(data=lazy, fast_load=True)
    except _TooLarge as e:
        raise ParseError(f"PE header region too large: {e}", lfanew, name) from e
    except pefile.PEFormatError as e:
        raise ParseError(f"not a valid PE image: {e.value if hasattr(e, 'value') else e}", lfanew, name) from e
    except Exception as e:  # pefile fails in many ways on hostile input; all of them are parse errors
        raise ParseError(f"not a valid PE image: {type(e).__name__}: {e}", lfanew, name) from e

    try:
        return _extract(pe, size, lfanew, name)
    except ParseError:
        raise
    except Exception as e:
        raise ParseError(f"not a valid PE image: {type(e).__name__}: {e}", lfanew, name) from e


def _extract(pe: Any, size: int, lfanew: int, name: str) -> PEHeaders:
    if int(pe.DOS_HEADER.e_lfanew) != lfanew or int(pe.NT_HEADERS.Signature) != 0x4550:
        raise ParseError("no PE signature", lfanew, name)
    opt_off = lfanew + 4 + _COFF_HEADER_SIZE
    fh = pe.FILE_HEADER
    size_opt = int(fh.SizeOfOptionalHeader)
    nsec = int(fh.NumberOfSections)
    oh = getattr(pe, "OPTIONAL_HEADER", None)
    if oh is None:
        raise ParseError("no optional header", opt_off, name)
    magic = int(oh.Magic)
    if magic not in _DATA_DIR_OFFSET:
        raise ParseError(f"unknown optional header magic 0x{magic:x}", opt_off, name)
    dd_off = _DATA_DIR_OFFSET[magic]
    if size_opt < dd_off:
        raise ParseError(f"optional header too small ({size_opt} bytes)", lfanew + 4 + 16, name)
    checksum_off = opt_off + _CHECKSUM_OFFSET
    if int(oh.get_field_absolute_offset("CheckSum")) != checksum_off:
        raise ParseError("inconsistent optional header layout", opt_off, name)
    soh = int(oh.SizeOfHeaders)
    n_rva = int(oh.NumberOfRvaAndSizes)
    sec_table = opt_off + size_opt
    sec_end = sec_table + _SECTION_HEADER_SIZE * nsec

    if soh > size:
        raise ParseError(f"SizeOfHeaders 0x{soh:x} exceeds the file size 0x{size:x}", opt_off + 60, name)
    # Authenticode hashes the headers only up to SizeOfHeaders: the section table must lie
    # inside them, or section headers could change without changing the digest.
    if sec_end > soh:
        raise ParseError(
            f"section table (ends at 0x{sec_end:x}) extends past SizeOfHeaders 0x{soh:x}", opt_off + 60, name)
    if checksum_off + 4 > soh:
        raise ParseError("CheckSum field lies outside SizeOfHeaders", checksum_off, name)

    cert_dir: int | None = None
    cert_off = cert_size = 0
    if n_rva > CERT_TABLE_INDEX:
        cert_dir = opt_off + dd_off + 8 * CERT_TABLE_INDEX
        if cert_dir + 8 > opt_off + size_opt:
            raise ParseError("Certificate Table entry lies outside the optional header", cert_dir, name)
        raw = pe.__data__[cert_dir : cert_dir + 8]
        cert_off, cert_size = struct.unpack("<II", raw)
        dd = pe.OPTIONAL_HEADER.DATA_DIRECTORY
        if len(dd) > CERT_TABLE_INDEX and (
            int(dd[CERT_TABLE_INDEX].VirtualAddress) != cert_off or int(dd[CERT_TABLE_INDEX].Size) != cert_size
        ):
            raise ParseError("inconsistent Certificate Table entry", cert_dir, name)

    sections = tuple(
        Section(
            name=bytes(s.Name).rstrip(b"\0").decode("ascii", "replace"),
            header_offset=int(s.get_file_offset()),
            pointer_to_raw_data=int(s.PointerToRawData),
            size_of_raw_data=int(s.SizeOfRawData),
        )
        for s in pe.sections
    )
    # pefile silently stops at an all-zero header or after too many oddities; a section
    # that is not hashed would be a hole in the measurement, so refuse instead.
    if len(sections) != nsec:
        raise ParseError(f"only {len(sections)} of {nsec} section headers could be parsed", sec_table, name)
    for i, s in enumerate(sections):
        if s.header_offset != sec_table + _SECTION_HEADER_SIZE * i:
            raise ParseError("inconsistent section table layout", sec_table, name)
    return PEHeaders(
        file_size=size,
        pe_offset=lfanew,
        magic=magic,
        optional_header_offset=opt_off,
        size_of_optional_header=size_opt,
        checksum_offset=checksum_off,
        size_of_headers=soh,
        number_of_rva_and_sizes=n_rva,
        cert_dir_offset=cert_dir,
        cert_table_offset=cert_off,
        cert_table_size=cert_size,
        section_table_offset=sec_table,
        sections=sections,
    )


def source_reader(src: Source) -> Any:
    def read(offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > src.size:
            raise ParseError(f"read of {length} bytes at 0x{offset:x} is out of bounds", offset, src.name)
        return src.read_exact(offset, length)

    return read


def bytes_reader(data: bytes | bytearray | memoryview, name: str = "<bytes>") -> Any:
    view = memoryview(data).cast("B")

    def read(offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > len(view):
            raise ParseError(f"read of {length} bytes at 0x{offset:x} is out of bounds", offset, name)
        return bytes(view[offset : offset + length])

    return read
