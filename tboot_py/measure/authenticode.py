"""PE/COFF Authenticode image digests (what UEFI firmware measures into PCR 4).

The algorithm is the one in Microsoft's "Windows Authenticode Portable Executable
Signature Format", section "Calculating the PE Image Hash" (also TCG PC Client Platform
Firmware Profile 1.05, 10.4.4 EV_EFI_BOOT_SERVICES_APPLICATION, which measures this digest):

1. hash the headers from offset 0 up to the optional header's CheckSum field;
2. skip the 4-byte CheckSum;
3. hash up to the Certificate Table data-directory entry and skip its 8 bytes
   (when NumberOfRvaAndSizes has no such entry, nothing more is skipped);
4. hash the rest of the headers up to SizeOfHeaders; SUM_OF_BYTES_HASHED = SizeOfHeaders;
5. hash each section with SizeOfRawData > 0 in ascending PointerToRawData order,
   adding SizeOfRawData to SUM_OF_BYTES_HASHED;
6. if the file is longer than SUM_OF_BYTES_HASHED, hash the extra data from that offset,
   of length FILE_SIZE - (certificate table size + SUM_OF_BYTES_HASHED).

Edge cases, all failing closed with ParseError (offset of the offending field):
- a section table that does not fit inside SizeOfHeaders (its headers would not be hashed);
- SizeOfHeaders, a section or the certificate table beyond the end of the file;
- a certificate table that is not at the very end of the file, or that overlaps the headers
  or a section (step 6 would then hash the wrong bytes: the formula assumes it is last);
- more section headers than pefile could parse.
Bytes between sections (padding up to FileAlignment) are not hashed, exactly as the spec
says; trailing data that is not the certificate table is hashed by step 6. Unlike
osslsigncode's signing path, an unsigned image whose length is not a multiple of 8 is
*not* zero-padded: firmware measures the file as it is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tboot_py import algorithms
from tboot_py.algorithms import HashAlg
from tboot_py.errors import InputError, ParseError
from tboot_py.measure import _pe
from tboot_py.measure._source import Source, open_source, source_name
from tboot_py.measure.digests import DigestSet, MultiHasher, Progress, feed_ranges

if TYPE_CHECKING:
    from pathlib import Path

Range = tuple[int, int]


def image_ranges(h: _pe.PEHeaders, name: str = "<pe>") -> list[Range]:
    """The ``(offset, length)`` ranges of the file that the Authenticode digest covers, in order."""
    size = h.file_size
    soh = h.size_of_headers
    ranges: list[Range] = [(0, h.checksum_offset)]
    pos = h.checksum_offset + 4
    if h.cert_dir_offset is not None:
        if h.cert_dir_offset < pos:
            raise ParseError("Certificate Table entry overlaps the CheckSum field", h.cert_dir_offset, name)
        if h.cert_dir_offset + 8 > soh:
            raise ParseError("Certificate Table entry lies outside SizeOfHeaders", h.cert_dir_offset, name)
        ranges.append((pos, h.cert_dir_offset - pos))
        pos = h.cert_dir_offset + 8
    ranges.append((pos, soh - pos))
    total = soh

    for i, s in sorted(enumerate(h.sections), key=lambda t: (t[1].pointer_to_raw_data, t[0])):
        if s.size_of_raw_data == 0:
            continue
        end = s.pointer_to_raw_data + s.size_of_raw_data
        if end > size:
            raise ParseError(
                f"section {i} ({s.name!r}) raw data 0x{s.pointer_to_raw_data:x}+0x{s.size_of_raw_data:x} "
                f"runs past the end of the file (0x{size:x})", s.header_offset + 16, name)
        ranges.append((s.pointer_to_raw_data, s.size_of_raw_data))
        total += s.size_of_raw_data

    cert_size = 0
    if h.cert_dir_offset is not None and h.cert_table_size:
        cert_size = h.cert_table_size
        start = h.cert_table_offset
        if start + cert_size != size:
            raise ParseError(
                f"certificate table 0x{start:x}+0x{cert_size:x} is not at the end of the file (0x{size:x})",
                h.cert_dir_offset, name)
        covered_end = max([soh] + [s.pointer_to_raw_data + s.size_of_raw_data
                                   for s in h.sections if s.size_of_raw_data])
        if start < covered_end or start < total:
            raise ParseError("certificate table overlaps the headers or a section", h.cert_dir_offset, name)
    if size > total + cert_size:
        ranges.append((total, size - cert_size - total))
    return [(o, n) for o, n in ranges if n > 0]


def authenticode_digests(
    src: bytes | bytearray | memoryview | Path | str | int | Source,
    banks: Sequence[HashAlg | str],
    progress: Progress | None = None,
) -> tuple[DigestSet, int]:
    """Authenticode digests and the file size (see :func:`authenticode`)."""
    name = source_name(src)
    if isinstance(src, bytes | bytearray | memoryview):
        view = memoryview(src).cast("B")
        hdr = _pe.parse_headers(_pe.bytes_reader(view, name), len(view), name)
        ranges = image_ranges(hdr, name)
        with MultiHasher(banks, progress) as h:
            for off, n in ranges:
                for o in range(off, off + n, 4 * 1024 * 1024):
                    h.update(view[o : min(off + n, o + 4 * 1024 * 1024)])
            return h.finish(), len(view)
    if not isinstance(src, os.PathLike | str | int | Source):
        raise InputError(f"cannot measure a {type(src).__name__}")
    with open_source(src) as s:
        hdr = _pe.parse_headers(_pe.source_reader(s), s.size, s.name)
        ranges = image_ranges(hdr, s.name)
        with MultiHasher(banks, progress) as h:
            feed_ranges(h, s, ranges)
            return h.finish(), s.size


def authenticode(
    src: bytes | Path | str | int,
    banks: Sequence[HashAlg] = algorithms.DEFAULT_BANKS,
) -> DigestSet:
    """The Authenticode PE image digest per bank (the digest firmware extends into PCR 4).

    ``src`` is the image bytes, a path, or an open file descriptor (read with pread; its
    position is not moved). A malformed or truncated image raises ParseError.
    """
    return authenticode_digests(src, banks)[0]


def check_padding(src: Path | str | int, name: str | None = None) -> None:
    """Refuse (InputError) a PE image whose bytes outside the digest, other than the
    CheckSum, the Certificate Table entry and the certificate table, are not zero: the
    padding between the headers and sections. Whoever hands the file to a loader that maps
    it whole (QEMU's bzImage loader) then hands over no unmeasured non-zero byte. Not a PE: no-op."""
    with open_source(src) as s:
        label = name or s.name
        head = s.read_exact(0, min(0x40, s.size))
        if not _pe.looks_like_pe(head, _pe.source_reader(s), s.size):
            return
        h = _pe.parse_headers(_pe.source_reader(s), s.size, s.name)
        skipped = [(h.checksum_offset, 4)]
        if h.cert_dir_offset is not None:
            skipped.append((h.cert_dir_offset, 8))
            if h.cert_table_size:
                skipped.append((h.cert_table_offset, h.cert_table_size))
        pos = 0
        for off, n in [*sorted(image_ranges(h, s.name) + skipped), (s.size, 0)]:
            for at in range(pos, off, _GAP_CHUNK):
                gap = s.read_exact(at, min(_GAP_CHUNK, off - at))
                if gap.count(0) != len(gap):
                    raise InputError(f"{label}: bytes at 0x{at:x} lie outside the Authenticode digest and are not "
                                     "zero padding; the launcher would receive unmeasured bytes")
            pos = max(pos, off + n)


_GAP_CHUNK = 1 << 20
