"""Hashing from a mapping: only for sources that cannot shrink, same digests as pread.

A mapped file that shrinks under the hasher would kill the process with SIGBUS, so these
tests pin down when a mapping is used (sealed memfd, leased file) and when it is not, that
a writer showing up mid-hash is reported and let go, and that both paths agree byte for
byte, across window and prefetch-piece boundaries.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import mmap
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tboot_py import algorithms
from tboot_py.errors import InputError
from tboot_py.measure import digests, hash_stream
from tboot_py.measure._source import MAP_MIN, Source, open_source
from tboot_py.measure.digests import MAP_WINDOW, PREFETCH_STEP, MultiHasher, feed_ranges

BANKS = (algorithms.SHA1, algorithms.SHA256, algorithms.SHA384)


def ref(data: bytes | memoryview) -> dict[str, str]:
    return {a.name: hashlib.new(a.hashlib_name, data).hexdigest() for a in BANKS}


@pytest.fixture(scope="module")
def blob(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    # Two windows and a bit, ending mid-piece: every boundary kind is crossed.
    data = os.urandom(2 * MAP_WINDOW + 3 * PREFETCH_STEP + 4097)
    p = tmp_path_factory.mktemp("mapped") / "blob"
    p.write_bytes(data)
    return p, data


def spy_on_mappings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the length of every window the engine maps."""
    seen: list[int] = []
    real = digests._mapped_chunks

    def spy(src: Source, start: int, end: int, chunk: int) -> Iterator[memoryview]:
        for v in real(src, start, end, chunk):
            if isinstance(v.obj, mmap.mmap):
                seen.append(len(v))
            yield v

    monkeypatch.setattr(digests, "_mapped_chunks", spy)
    return seen


def test_leased_file_is_mapped_and_matches_hashlib(blob: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    p, data = blob
    with open_source(p) as s:
        assert s.leased and s.stable
        assert fcntl.fcntl(s.fd, fcntl.F_GETLEASE) == fcntl.F_RDLCK
    seen = spy_on_mappings(monkeypatch)
    assert hash_stream(p, BANKS).hex() == ref(data)
    assert sum(seen) == len(data) and max(seen) <= MAP_WINDOW
    # One bank takes the inline path (no hashing thread) through the same windows.
    assert hash_stream(p, (algorithms.SHA256,))["sha256"] == hashlib.sha256(data).digest()


def test_lease_is_released_after_measuring(blob: tuple[Path, bytes]) -> None:
    p, _ = blob
    hash_stream(p, BANKS)
    # No lease left behind: a writer opens at once (O_NONBLOCK fails with EAGAIN otherwise).
    fd = os.open(p, os.O_WRONLY | os.O_NONBLOCK)
    os.close(fd)


def test_small_file_is_not_leased(tmp_path: Path) -> None:
    p = tmp_path / "small"
    p.write_bytes(b"x" * (MAP_MIN - 1))
    with open_source(p) as s:
        assert not s.leased and not s.stable


def test_file_open_for_writing_is_read_not_mapped(blob: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    p, data = blob
    with open(p, "r+b"):  # a writer: a read lease is refused (EAGAIN)
        with open_source(p) as s:
            assert not s.leased
        seen = spy_on_mappings(monkeypatch)
        assert hash_stream(p, BANKS).hex() == ref(data)
    assert seen == []


def test_callers_fd_is_never_leased(blob: tuple[Path, bytes]) -> None:
    p, data = blob
    fd = os.open(p, os.O_RDONLY)
    try:
        with open_source(fd) as s:
            assert not s.leased and not s.sealed
        assert fcntl.fcntl(fd, fcntl.F_GETLEASE) == fcntl.F_UNLCK
        assert hash_stream(fd, BANKS).hex() == ref(data)
    finally:
        os.close(fd)


def memfd(data: bytes, seals: int) -> int:
    fd = os.memfd_create("artifact", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.write(fd, data)
    if seals:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


@pytest.mark.parametrize(("seals", "mapped"), [
    (fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE, True),
    (fcntl.F_SEAL_SHRINK, True),
    (fcntl.F_SEAL_WRITE, False),  # may still shrink
    (0, False),
])
def test_memfd_is_mapped_only_when_sealed_against_shrinking(
        blob: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch, seals: int, mapped: bool) -> None:
    _, data = blob
    fd = memfd(data, seals)
    try:
        with open_source(fd) as s:
            assert s.sealed is mapped and not s.leased
        seen = spy_on_mappings(monkeypatch)
        assert hash_stream(fd, BANKS).hex() == ref(data)
        assert (sum(seen) == len(data)) if mapped else (seen == [])
    finally:
        os.close(fd)


def lease_is_breaking(p: Path) -> bool:
    """/proc/locks lists a lease being broken as "LEASE BREAKING" with its inode."""
    ino = f":{os.stat(p).st_ino} "
    with open("/proc/locks") as f:
        return any("LEASE" in line and "BREAKING" in line and ino in line for line in f)


def test_writer_arriving_mid_hash_is_reported_and_let_go(blob: tuple[Path, bytes]) -> None:
    """A process opening the file for writing blocks on the lease; the hasher notices the
    pending break at the next window, stops with a clear error and releases the lease, and
    the writer's open then goes through. The file never shrinks under the mapping."""
    p, data = blob
    writer: list[subprocess.Popen[bytes]] = []

    def progress(done: int) -> None:
        if writer:
            return
        # A blocking open for writing, then a truncate: it waits for the lease to be released.
        writer.append(subprocess.Popen([sys.executable, "-c", f"open({str(p)!r}, 'r+b').truncate(0)"]))
        deadline = time.monotonic() + 20
        while not lease_is_breaking(p):
            assert writer[0].poll() is None, "the writer was not held off by the lease"
            assert time.monotonic() < deadline, "the lease break never showed in /proc/locks"
            time.sleep(0.005)

    try:
        with pytest.raises(InputError, match="opened the file for writing while it was measured"):
            hash_stream(p, BANKS, progress=progress)
        assert writer, "the progress callback never ran"
        assert writer[0].wait(timeout=30) == 0
        assert p.stat().st_size == 0
    finally:
        p.write_bytes(data)  # the module's other tests use the blob


def test_cannot_map_falls_back_to_pread(blob: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    p, data = blob

    def refuse(fd: int, offset: int, length: int) -> mmap.mmap:
        raise OSError(errno.ENODEV, "no mmap here")

    monkeypatch.setattr(digests, "_map_window", refuse)
    assert hash_stream(p, BANKS).hex() == ref(data)


def test_read_error_while_mapping_is_an_input_error(blob: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    p, _ = blob
    real = digests._map_window
    calls = [0]

    def second_fails(fd: int, offset: int, length: int) -> mmap.mmap:
        calls[0] += 1
        if calls[0] > 1:
            raise OSError(errno.EIO, "I/O error")
        return real(fd, offset, length)

    monkeypatch.setattr(digests, "_map_window", second_fails)
    with pytest.raises(InputError, match="read failed: Input/output error"):
        hash_stream(p, BANKS)


@settings(max_examples=40, deadline=None)
@given(ranges=st.lists(st.tuples(st.integers(0, 2 * MAP_WINDOW + 3 * PREFETCH_STEP + 4097),
                                 st.integers(0, MAP_WINDOW + 2 * PREFETCH_STEP)), min_size=1, max_size=4))
def test_mapped_ranges_equal_hashing_the_bytes(blob: tuple[Path, bytes], ranges: list[tuple[int, int]]) -> None:
    """feed_ranges (the Authenticode path) over arbitrary, unaligned ranges of a mapped file."""
    p, data = blob
    ranges = [(off, min(n, len(data) - off)) for off, n in ranges]
    want = b"".join(data[off : off + n] for off, n in ranges)
    with open_source(p) as s:
        assert s.stable
        with MultiHasher(BANKS) as h:
            feed_ranges(h, s, ranges)
            got = h.finish()
    assert got.hex() == ref(want)


def test_size_is_taken_under_the_lease(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that appends between the open and the lease: the whole file is hashed, not
    the length seen before the lease was held."""
    from tboot_py.measure import _source

    p = tmp_path / "growing"
    first, more = os.urandom(MAP_MIN + 5), os.urandom(MAP_WINDOW + 3)
    p.write_bytes(first)
    real = _source._take_read_lease

    def append_then_lease(fd: int) -> bool:
        with open(p, "ab") as w:
            w.write(more)
        return real(fd)

    monkeypatch.setattr(_source, "_take_read_lease", append_then_lease)
    with open_source(p) as s:
        assert s.leased and s.size == len(first) + len(more)
    monkeypatch.setattr(_source, "_take_read_lease", real)
    assert hash_stream(p, BANKS).hex() == ref(first + more)
