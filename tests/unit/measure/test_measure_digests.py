"""hash_stream and DigestSet: every bank equals hashlib over the same bytes."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from tboot_py import algorithms
from tboot_py.errors import InputError, UnknownAlgorithmError
from tboot_py.measure import DigestSet, hash_stream
from tboot_py.measure.digests import CHUNK_SIZE, MultiHasher

ALL_AVAILABLE = tuple(a for a in (algorithms.SHA1, algorithms.SHA256, algorithms.SHA384, algorithms.SHA512,
                                  algorithms.SM3_256) if a.available)


def ref(data: bytes, banks: tuple[algorithms.HashAlg, ...] = ALL_AVAILABLE) -> dict[str, str]:
    return {a.name: hashlib.new(a.hashlib_name, data).hexdigest() for a in banks}


@pytest.mark.parametrize("size", [0, 1, 4095, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE + 12345])
def test_file_matches_hashlib_per_bank(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    f = tmp_path / "blob"
    f.write_bytes(data)
    got = hash_stream(f, ALL_AVAILABLE)
    assert got.hex() == ref(data)
    assert got.banks() == ALL_AVAILABLE
    assert hash_stream(str(f), ALL_AVAILABLE) == got


def test_fd_is_read_from_offset_zero_and_not_moved(tmp_path: Path) -> None:
    data = os.urandom(CHUNK_SIZE + 999)
    f = tmp_path / "blob"
    f.write_bytes(data)
    fd = os.open(f, os.O_RDONLY)
    try:
        os.lseek(fd, 1234, os.SEEK_SET)
        assert hash_stream(fd, ALL_AVAILABLE).hex() == ref(data)
        assert os.lseek(fd, 0, os.SEEK_CUR) == 1234
    finally:
        os.close(fd)


def test_sealed_memfd() -> None:
    import fcntl

    data = b"kernel image bytes" * 50000
    fd = os.memfd_create("artifact", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.write(fd, data)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK)
        assert hash_stream(fd, ALL_AVAILABLE).hex() == ref(data)
        assert os.lseek(fd, 0, os.SEEK_CUR) == len(data)  # untouched position (after the write)
    finally:
        os.close(fd)


def test_binary_stream_from_current_position() -> None:
    data = os.urandom(3 * CHUNK_SIZE // 2)
    s = io.BytesIO(b"skipped" + data)
    s.seek(7)
    assert hash_stream(s, ALL_AVAILABLE).hex() == ref(data)


def test_stream_without_readinto() -> None:
    class OnlyRead:
        def __init__(self, data: bytes) -> None:
            self._b = io.BytesIO(data)

        def read(self, n: int = -1) -> bytes:
            return self._b.read(min(n, 1000))

    data = os.urandom(10_000)
    assert hash_stream(OnlyRead(data), ALL_AVAILABLE).hex() == ref(data)  # type: ignore[arg-type]


def test_progress_reports_monotonic_bytes(tmp_path: Path) -> None:
    size = 3 * CHUNK_SIZE + 5
    f = tmp_path / "blob"
    f.write_bytes(b"\xab" * size)
    seen: list[int] = []
    hash_stream(f, (algorithms.SHA256,), progress=seen.append)
    # A leased file is hashed a mapped window at a time (MAP_WINDOW), else a chunk at a time.
    assert seen == sorted(seen) and seen[-1] == size and len(seen) >= 2


def test_digestset_accessors() -> None:
    d = hash_stream(io.BytesIO(b"abc"), (algorithms.SHA256, algorithms.SHA1))
    assert d["sha256"] == hashlib.sha256(b"abc").digest()
    assert d[algorithms.SHA1] == hashlib.sha1(b"abc").digest()
    assert d.get("sha384") is None
    with pytest.raises(KeyError):
        d["sha384"]
    assert "sha1" in d and "sha512" not in d and "nonsense" not in d
    assert list(d.as_dict()) == ["sha256", "sha1"]  # bank order kept
    assert d.hex()["sha1"] == "a9993e364706816aba3e25717850c26c9cd0d89d"
    with pytest.raises(ValueError):
        DigestSet(((algorithms.SHA1, b"short"),))
    with pytest.raises(ValueError):
        DigestSet(((algorithms.SHA1, b"\0" * 20), (algorithms.SHA1, b"\0" * 20)))


def test_bank_names_and_repeats() -> None:
    d = hash_stream(io.BytesIO(b"x"), ["sha256", "SHA256", "sha1"])  # type: ignore[list-item]
    assert [a.name for a in d.banks()] == ["sha256", "sha1"]


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        hash_stream(tmp_path / "missing", ALL_AVAILABLE)
    with pytest.raises(InputError, match="directory"):
        hash_stream(tmp_path, ALL_AVAILABLE)
    with pytest.raises(UnknownAlgorithmError):
        hash_stream(io.BytesIO(b""), ())
    with pytest.raises(UnknownAlgorithmError):
        hash_stream(io.BytesIO(b""), ["md6"])  # type: ignore[list-item]
    r, w = os.pipe()
    try:
        with pytest.raises(InputError, match="not a regular file"):
            hash_stream(r, ALL_AVAILABLE)
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(InputError, match="not an open file descriptor"):
        hash_stream(987654, ALL_AVAILABLE)
    with pytest.raises(InputError):
        hash_stream(True, ALL_AVAILABLE)  # type: ignore[arg-type]


def test_worker_error_propagates_and_threads_stop() -> None:
    import threading

    before = threading.active_count()

    class Boom(Exception):
        pass

    class BadStream:
        def __init__(self) -> None:
            self.n = 0

        def readinto(self, buf: bytearray) -> int:
            self.n += 1
            if self.n > 2:
                raise Boom()
            buf[: len(buf)] = b"\0" * len(buf)
            return len(buf)

    with pytest.raises(Boom):
        hash_stream(BadStream(), ALL_AVAILABLE)  # type: ignore[arg-type]
    assert threading.active_count() == before


def test_multihasher_small_and_large_updates_mix() -> None:
    parts = [b"a", os.urandom(CHUNK_SIZE), b"bc" * 10, os.urandom(100_000), b""]
    with MultiHasher(ALL_AVAILABLE) as h:
        for p in parts:
            h.update(p)
        d = h.finish()
    assert d.hex() == ref(b"".join(parts))
