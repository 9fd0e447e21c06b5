"""Hypothesis: hostile bytes into the PE and gzip parsers raise only ParseError (or
InputError for the gzip cap); hash_stream equals hashlib for any bytes."""

from __future__ import annotations

import gzip
import hashlib
import io
import struct

from _pe_synth import Sec, build_pe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tboot_py import algorithms
from tboot_py.errors import InputError, ParseError
from tboot_py.measure import DigestSet, authenticode, hash_stream, tboot_module_hash
from tboot_py.measure.tboot import tboot_module_digests

BANKS = (algorithms.SHA256,)
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BASE_PE = build_pe([Sec(b".text", b"\x90" * 0x200), Sec(b".data", b"D" * 0x100)], trailing=b"tail").data


def _authenticode_or_parse_error(data: bytes) -> None:
    try:
        d = authenticode(data, BANKS)
    except ParseError as e:
        assert e.offset >= 0
        return
    assert isinstance(d, DigestSet) and len(d["sha256"]) == 32


@SETTINGS
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    _authenticode_or_parse_error(data)


@SETTINGS
@given(st.binary(max_size=1024))
def test_random_bytes_behind_mz_and_pe_signature(tail: bytes) -> None:
    head = bytearray(b"MZ" + b"\0" * 0x3A + struct.pack("<I", 0x40) + b"PE\0\0")
    _authenticode_or_parse_error(bytes(head) + tail)


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, len(BASE_PE) - 1), st.integers(0, 255)), min_size=1, max_size=8),
       st.integers(0, len(BASE_PE)))
def test_mutated_pe(mutations: list[tuple[int, int]], cut: int) -> None:
    b = bytearray(BASE_PE)
    for pos, val in mutations:
        b[pos] = val
    _authenticode_or_parse_error(bytes(b))
    _authenticode_or_parse_error(bytes(b[:cut]))


@SETTINGS
@given(st.sampled_from(range(0x80, 0x80 + 24 + 112 + 128 + 80, 1)), st.sampled_from(
    [0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 0x10000, 0x200]))
def test_header_fields_with_extreme_values(pos: int, value: int) -> None:
    b = bytearray(BASE_PE)
    struct.pack_into("<I", b, pos & ~3, value)
    _authenticode_or_parse_error(bytes(b))


GZ = gzip.compress(b"multiboot image " * 500)


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, len(GZ) - 1), st.integers(0, 255)), max_size=6),
       st.integers(3, len(GZ) + 8), st.binary(max_size=16))
def test_mutated_gzip_module(mutations: list[tuple[int, int]], cut: int, tail: bytes) -> None:
    b = bytearray(GZ)
    for pos, val in mutations:
        b[pos] = val
    data = bytes(b[:cut]) + tail
    try:
        d = tboot_module_digests(data, "c", BANKS, max_decompressed=1 << 20)[0]
    except (ParseError, InputError):
        return
    assert len(d["sha256"]) == 32


@SETTINGS
@given(st.binary(max_size=3000), st.text(max_size=40).filter(lambda s: "\0" not in s))
def test_plain_module_hash_formula(img: bytes, cmdline: str) -> None:
    if img[:2] == b"\x1f\x8b":
        return
    try:
        cmd = cmdline.encode("utf-8")
    except UnicodeEncodeError:
        return
    h = hashlib.sha256
    assert tboot_module_hash(img, cmdline, BANKS)["sha256"] == h(h(cmd).digest() + h(img).digest()).digest()


@SETTINGS
@given(st.binary(max_size=20000))
def test_hash_stream_equals_hashlib(data: bytes) -> None:
    d = hash_stream(io.BytesIO(data), (algorithms.SHA1, algorithms.SHA384))
    assert d["sha1"] == hashlib.sha1(data).digest()
    assert d["sha384"] == hashlib.sha384(data).digest()
