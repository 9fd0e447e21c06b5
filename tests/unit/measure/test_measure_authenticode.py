"""Authenticode digests of hand-built PE images, against the spec's byte ranges.

The expected digests come from the builder's own record of where it placed each field
(tests/_pe_synth.py), hashed with hashlib: independent of tboot_py's parser.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest
from _pe_synth import Sec, build_pe, win_certificate, with_cert_table

from tboot_py import algorithms
from tboot_py.errors import ParseError
from tboot_py.measure import authenticode
from tboot_py.measure._pe import bytes_reader, parse_headers
from tboot_py.measure.authenticode import image_ranges

BANKS = (algorithms.SHA1, algorithms.SHA256, algorithms.SHA384)


def expect(data: bytes) -> dict[str, str]:
    return {b.name: hashlib.new(b.hashlib_name, data).hexdigest() for b in BANKS}


@pytest.mark.parametrize("pe32plus", [True, False])
def test_basic_image_matches_spec_ranges(pe32plus: bool) -> None:
    pe = build_pe(pe32plus=pe32plus)
    assert authenticode(pe.data, BANKS).hex() == expect(pe.expected_bytes())
    # Sanity: the spec ranges skip exactly the CheckSum and the Certificate Table entry.
    assert len(pe.expected_bytes()) == len(pe.data) - 12


def test_checksum_and_cert_entry_are_not_hashed() -> None:
    pe = build_pe()
    base = authenticode(pe.data, BANKS)
    b = bytearray(pe.data)
    struct.pack_into("<I", b, pe.checksum_off, 0xDEADBEEF)
    assert authenticode(bytes(b), BANKS) == base
    assert pe.certdir_off is not None
    struct.pack_into("<II", b, pe.certdir_off, 0, 0)  # still "no certificate table"
    b[pe.certdir_off + 2] = 0  # no-op write, same bytes
    assert authenticode(bytes(b), BANKS) == base


def test_every_hashed_byte_matters() -> None:
    pe = build_pe()
    base = authenticode(pe.data, BANKS)
    for off, n in pe.expected_ranges():
        # first and last byte of each range (in the DOS stub for the first: its end is SizeOfHeaders)
        for pos in ({0x45} if off == 0 else {off, off + n - 1}):
            b = bytearray(pe.data)
            b[pos] ^= 0x01
            assert authenticode(bytes(b), BANKS) != base, f"byte {pos} not covered"


def test_signing_does_not_change_the_digest() -> None:
    pe = build_pe(trailing=b"")
    assert len(pe.data) % 8 == 0
    assert pe.certdir_off is not None
    signed = with_cert_table(pe.data, pe.certdir_off, win_certificate())
    assert authenticode(signed, BANKS) == authenticode(pe.data, BANKS)


def test_trailing_data_before_the_certificate_table_is_hashed() -> None:
    pe = build_pe(trailing=b"overlay!" * 5)
    assert pe.certdir_off is not None
    cert = win_certificate()
    signed = with_cert_table(pe.data, pe.certdir_off, cert)
    assert authenticode(pe.data, BANKS).hex() == expect(pe.expected_bytes())
    # The overlay stays covered after signing, the certificate does not.
    assert authenticode(signed, BANKS) == authenticode(pe.data, BANKS)
    b = bytearray(signed)
    b[len(pe.data) - 3] ^= 0xFF
    assert authenticode(bytes(b), BANKS) != authenticode(signed, BANKS)
    b = bytearray(signed)
    b[-1] ^= 0xFF  # inside the certificate table
    assert authenticode(bytes(b), BANKS) == authenticode(signed, BANKS)


def test_alignment_padding_between_sections_is_not_hashed() -> None:
    # Sections with SizeOfRawData smaller than the gap to the next one leave unhashed bytes.
    pe = build_pe([Sec(b".a", b"A" * 0x100, pointer=0x200, raw_size=0x100),
                   Sec(b".b", b"B" * 0x200, pointer=0x400, raw_size=0x200)])
    base = authenticode(pe.data, BANKS)
    assert base.hex() == expect(pe.expected_bytes())
    b = bytearray(pe.data)
    b[0x380] = 0x77  # in the gap: the spec does not hash it
    assert authenticode(bytes(b), BANKS) == base


def test_sections_are_hashed_in_file_order_not_table_order() -> None:
    pe = build_pe([Sec(b".late", b"L" * 0x200, pointer=0x600), Sec(b".early", b"E" * 0x200, pointer=0x400)])
    assert authenticode(pe.data, BANKS).hex() == expect(pe.expected_bytes())
    naive = b"".join(pe.data[o : o + n] for o, n in pe.expected_ranges()[:3]) + b"L" * 0x200 + b"E" * 0x200
    assert authenticode(pe.data, BANKS).hex() != expect(naive)


def test_empty_sections_are_skipped() -> None:
    pe = build_pe([Sec(b".bss", b"", raw_size=0, pointer=0), Sec(b".text", b"T" * 0x200)])
    assert authenticode(pe.data, BANKS).hex() == expect(pe.expected_bytes())


def test_no_certificate_table_entry_when_few_data_directories() -> None:
    pe = build_pe(n_rva=4)
    assert pe.certdir_off is None
    assert authenticode(pe.data, BANKS).hex() == expect(pe.expected_bytes())
    assert len(pe.expected_bytes()) == len(pe.data) - 4


def test_path_fd_and_bytes_agree(tmp_path: Path) -> None:
    pe = build_pe(trailing=b"x" * 13)
    f = tmp_path / "img.efi"
    f.write_bytes(pe.data)
    fd = os.open(f, os.O_RDONLY)
    try:
        os.lseek(fd, 77, os.SEEK_SET)
        assert authenticode(fd, BANKS) == authenticode(f, BANKS) == authenticode(pe.data, BANKS)
        assert os.lseek(fd, 0, os.SEEK_CUR) == 77  # the fd's position is not moved
    finally:
        os.close(fd)


def test_ranges_are_exposed_for_inspection() -> None:
    pe = build_pe()
    hdr = parse_headers(bytes_reader(pe.data), len(pe.data), "x")
    assert image_ranges(hdr) == [(o, n) for o, n in pe.expected_ranges() if n]


# --- malformed images: ParseError with an offset, never a pefile exception ---------------

def _raises(data: bytes) -> ParseError:
    with pytest.raises(ParseError) as ei:
        authenticode(data, BANKS)
    assert ei.value.offset >= 0
    return ei.value


@pytest.mark.parametrize("cut", [0, 1, 0x3F, 0x40, 0x85, 0x98, 0x120, 0x1F0, 0x300, -1])
def test_truncated_images_raise_parse_error(cut: int) -> None:
    pe = build_pe()
    _raises(pe.data[:cut] if cut >= 0 else pe.data[:-1])


def test_section_past_end_of_file() -> None:
    pe = build_pe([Sec(b".text", b"T" * 0x200, raw_size=0x10000)])
    data = pe.data[:0x600]
    e = _raises(data)
    assert e.offset == pe.section_table_off + 16


def test_size_of_headers_past_end_of_file() -> None:
    pe = build_pe([Sec(b".a", b"", raw_size=0, pointer=0)], size_of_headers=0x10000)
    _raises(pe.data[:0x400])


def test_section_table_outside_size_of_headers() -> None:
    pe = build_pe(size_of_headers=0x100)  # the section table starts after 0x100
    _raises(pe.data)


def test_certificate_table_not_at_end() -> None:
    pe = build_pe()
    assert pe.certdir_off is not None
    signed = with_cert_table(pe.data, pe.certdir_off, win_certificate()) + b"tail data"
    e = _raises(signed)
    assert e.offset == pe.certdir_off


def test_certificate_table_overlapping_a_section() -> None:
    pe = build_pe()
    assert pe.certdir_off is not None
    b = bytearray(pe.data)
    struct.pack_into("<II", b, pe.certdir_off, 0x400, len(b) - 0x400)
    _raises(bytes(b))


def test_more_sections_declared_than_present() -> None:
    pe = build_pe(num_sections_override=3)  # the third header is all zeros
    _raises(pe.data)


def test_not_a_pe() -> None:
    _raises(b"\x7fELF" + b"\0" * 200)
    _raises(b"MZ" + b"\0" * 0x3A + struct.pack("<I", 0x40) + b"NE\0\0" + b"\0" * 200)
    _raises(b"MZ" + b"\0" * 0x3A + struct.pack("<I", 0xFFFFFFF0) + b"\0" * 200)


def test_bad_optional_header_magic() -> None:
    pe = build_pe()
    b = bytearray(pe.data)
    struct.pack_into("<H", b, pe.opt_off, 0x107)
    _raises(bytes(b))
