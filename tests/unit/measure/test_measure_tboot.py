"""tboot VL module hash H(H(cmdline) || H(image)), gzip images decompressed first."""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from pathlib import Path

import pytest

from tboot_py import algorithms
from tboot_py.errors import InputError, ParseError
from tboot_py.measure import DecompressedTooLarge, tboot_module_hash
from tboot_py.measure.tboot import tboot_module_digests

BANKS = (algorithms.SHA1, algorithms.SHA256, algorithms.SHA384, algorithms.SHA512)


def ref(cmdline: bytes, image: bytes) -> dict[str, str]:
    out = {}
    for a in BANKS:
        def h(x: bytes, name: str = a.hashlib_name) -> bytes:
            return hashlib.new(name, x).digest()
        out[a.name] = h(h(cmdline) + h(image)).hex()
    return out


@pytest.mark.parametrize("size", [0, 10, 5 * 1024 * 1024 + 3])
def test_plain_image(tmp_path: Path, size: int) -> None:
    img = os.urandom(size)
    f = tmp_path / "mod"
    f.write_bytes(img)
    assert tboot_module_hash(f, "console=com1 x=y", BANKS).hex() == ref(b"console=com1 x=y", img)
    assert tboot_module_hash(img, "console=com1 x=y", BANKS).hex() == ref(b"console=com1 x=y", img)


@pytest.mark.parametrize("size", [0, 1000, 9 * 1024 * 1024 + 7])
def test_gzip_image_is_hashed_decompressed(tmp_path: Path, size: int) -> None:
    img = (os.urandom(4096) + b"\0" * 60000) * (size // 64096) + os.urandom(size % 64096)
    f = tmp_path / "xen.gz"
    f.write_bytes(gzip.compress(img, 6))
    want = ref(b"dom0_mem=1G", img)
    assert tboot_module_hash(f, "dom0_mem=1G", BANKS).hex() == want
    assert tboot_module_hash(f.read_bytes(), "dom0_mem=1G", BANKS).hex() == want
    fd = os.open(f, os.O_RDONLY)
    try:
        assert tboot_module_hash(fd, "dom0_mem=1G", BANKS).hex() == want
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0
    finally:
        os.close(fd)


def test_empty_and_unicode_cmdline(tmp_path: Path) -> None:
    f = tmp_path / "m"
    f.write_bytes(b"module")
    assert tboot_module_hash(f, "", BANKS).hex() == ref(b"", b"module")
    assert tboot_module_hash(f, "root=/dev/sda é", BANKS).hex() == ref("root=/dev/sda é".encode(), b"module")


def test_multi_member_gzip(tmp_path: Path) -> None:
    f = tmp_path / "m.gz"
    f.write_bytes(gzip.compress(b"first part ") + gzip.compress(b"second part"))
    assert tboot_module_hash(f, "c", BANKS).hex() == ref(b"c", b"first part second part")


def test_trailing_garbage_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "m.gz"
    f.write_bytes(gzip.compress(b"payload") + b"unmeasured tail")
    with pytest.raises(ParseError, match="after the last gzip member"):
        tboot_module_hash(f, "c", BANKS)
    f.write_bytes(gzip.compress(b"payload") + b"\x1f")
    with pytest.raises(ParseError):
        tboot_module_hash(f, "c", BANKS)


def test_truncated_and_corrupt_gzip(tmp_path: Path) -> None:
    blob = gzip.compress(os.urandom(100_000))
    f = tmp_path / "m.gz"
    f.write_bytes(blob[:-4])
    with pytest.raises(ParseError, match="truncated"):
        tboot_module_hash(f, "", BANKS)
    bad = bytearray(blob)
    bad[-8] ^= 0xFF  # CRC32 mismatch (RFC 1952, 2.3.1)
    f.write_bytes(bytes(bad))
    with pytest.raises(ParseError, match="corrupt"):
        tboot_module_hash(f, "", BANKS)


def test_gzip_bomb_is_capped(tmp_path: Path) -> None:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    blob = c.compress(b"\0" * (64 * 1024 * 1024)) + c.flush()
    assert len(blob) < 200_000
    f = tmp_path / "bomb.gz"
    f.write_bytes(blob)
    with pytest.raises(DecompressedTooLarge):
        tboot_module_digests(f, "", BANKS, max_decompressed=16 * 1024 * 1024)
    assert issubclass(DecompressedTooLarge, InputError)
    # Under the cap the same file measures fine.
    d, size, gz = tboot_module_digests(f, "", (algorithms.SHA256,), max_decompressed=64 * 1024 * 1024)
    assert gz and size == len(blob)
    assert d.hex()["sha256"] == ref(b"", b"\0" * (64 * 1024 * 1024))["sha256"]


def test_bad_cmdline() -> None:
    with pytest.raises(InputError, match="NUL"):
        tboot_module_hash(b"x", "a\0b", BANKS)
    with pytest.raises(InputError):
        tboot_module_hash(b"x", "\udcff", BANKS)
    assert tboot_module_hash(b"x", "c" * 1023, BANKS).hex() == ref(b"c" * 1023, b"x")
    with pytest.raises(InputError, match="at most 1023"):
        tboot_module_hash(b"x", "c" * 1024, BANKS)


def test_gzip_magic_with_another_method_is_refused() -> None:
    bad = bytearray(gzip.compress(b"x"))
    bad[2] = 7  # CM must be 8, deflate (RFC 1952, 2.3.1)
    with pytest.raises(ParseError):
        tboot_module_hash(bytes(bad), "", BANKS)
    with pytest.raises(ParseError):
        tboot_module_hash(b"\x1f\x8b", "", BANKS)
