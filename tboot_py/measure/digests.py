"""Multi-bank digests computed in one read pass.

Every chunk of the source is handed to one hashing thread per group of banks. hashlib
releases the GIL for updates larger than 2 KiB, so groups hash in parallel on separate
cores. Memory stays bounded whatever the file size: two reusable read buffers, or two
mapped windows.

A stable source (``Source.stable``: it cannot shrink) is hashed straight from a
read-only mapping of the page cache, window by window, which saves copying every byte
into a buffer first. Hashing from memory rather than cache stalls at every 4 KiB page,
where the hardware prefetcher stops; so views are hashed in PREFETCH_STEP pieces, and
before each piece the first byte of every page of the next piece is loaded (one strided
copy of a few bytes), which starts those pages' memory reads early.
"""

from __future__ import annotations

import errno
import io
import mmap
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from tboot_py import algorithms
from tboot_py.algorithms import HashAlg
from tboot_py.errors import InputError, UnknownAlgorithmError
from tboot_py.measure._source import MAP_MIN, Source, open_source

if TYPE_CHECKING:
    from pathlib import Path

#: Read size. Large enough that per-chunk thread hand-off costs nothing measurable,
#: small enough that two buffers keep peak RSS far below 64 MiB.
CHUNK_SIZE = 4 * 1024 * 1024
#: Read size when only one bank is hashed: then the main thread hashes inline, and a chunk
#: that stays in the core's L2 cache between the read and the hash is fastest (measured:
#: inline beats a reader/hasher thread pair, whose cross-core cache traffic costs more
#: than the overlap gains).
SINGLE_BANK_CHUNK = 256 * 1024
#: Below this, a chunk is hashed inline: a thread hand-off would cost more than it saves.
_INLINE_BELOW = 64 * 1024
#: A stable source is mapped this much at a time; 2 MiB-aligned, so that large page-cache
#: folios can be mapped with huge pages. Each window is unmapped once hashed (the mapped
#: pages count towards RSS while mapped), and the lease is checked between windows.
MAP_WINDOW = 8 * 1024 * 1024
#: Views are hashed in pieces of this size, each after touching the pages of the next
#: (measured on the benchmark machine: 32 to 64 KiB are alike; 256 KiB pieces lose the gain).
PREFETCH_STEP = 48 * 1024
_PAGE = mmap.PAGESIZE
#: madvise(2) MADV_POPULATE_READ (Linux 5.14): fault a range in, returning an error where
#: a page cannot be read instead of raising SIGBUS. Python 3.11's mmap lacks the constant.
_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)
#: mmap(2)/madvise(2) failures that mean "this file cannot be mapped": read it instead.
_CANNOT_MAP = {errno.ENODEV, errno.EINVAL, errno.EACCES, errno.EPERM, errno.EOPNOTSUPP}

Progress = Callable[[int], None]


@dataclass(frozen=True)
class DigestSet:
    """One digest per PCR bank, in bank order."""

    values: tuple[tuple[HashAlg, bytes], ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for alg, d in self.values:
            if alg.name in seen:
                raise ValueError(f"bank {alg.name} appears twice")
            if len(d) != alg.size:
                raise ValueError(f"{alg.name} digest has {len(d)} bytes, expected {alg.size}")
            seen.add(alg.name)

    def get(self, bank: str | HashAlg) -> bytes | None:
        name = bank.name if isinstance(bank, HashAlg) else algorithms.by_name(bank).name
        for alg, d in self.values:
            if alg.name == name:
                return d
        return None

    def __getitem__(self, bank: str | HashAlg) -> bytes:
        d = self.get(bank)
        if d is None:
            raise KeyError(bank.name if isinstance(bank, HashAlg) else bank)
        return d

    def __contains__(self, bank: object) -> bool:
        if not isinstance(bank, str | HashAlg):
            return False
        try:
            return self.get(bank) is not None
        except UnknownAlgorithmError:
            return False

    def __len__(self) -> int:
        return len(self.values)

    def banks(self) -> tuple[HashAlg, ...]:
        return tuple(a for a, _ in self.values)

    def as_dict(self) -> dict[str, bytes]:
        """``{bank name: digest}``: what ``TPM.extend`` takes."""
        return {a.name: d for a, d in self.values}

    def hex(self) -> dict[str, str]:
        return {a.name: d.hex() for a, d in self.values}

    @classmethod
    def of_bytes(cls, data: bytes, banks: Sequence[HashAlg | str]) -> DigestSet:
        """Digests of a small in-memory value (a command line, a concatenation of digests)."""
        return cls(tuple((a, a.digest(data)) for a in resolve_banks(banks)))


def resolve_banks(banks: Sequence[HashAlg | str] | str) -> tuple[HashAlg, ...]:
    """Check a bank list: known, computable here, not empty; repeats dropped, order kept."""
    return algorithms.parse_banks(banks)


#: Relative cost per byte of each hash on x86-64 with SHA extensions (from `openssl speed`
#: on the benchmark machine; only the ratios matter). Unknown algorithms count as slow.
_COST = {"sha1": 1.0, "sha256": 1.1, "sha384": 2.5, "sha512": 2.5, "sm3_256": 5.4,
         "sha3_256": 3.0, "sha3_384": 3.9, "sha3_512": 5.6}
#: The reading thread also copies every chunk out of the page cache: about this much work.
_READ_COST = 0.25


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def plan_groups(banks: Sequence[HashAlg], cores: int) -> list[list[HashAlg]]:
    """Split ``banks`` into at most ``cores`` groups of about equal cost (longest job first).

    Group 0 runs in the reading thread, so it starts with the cost of reading. Each group is
    one thread, so on two cores sha1+sha256 share one and sha384 gets the other, and a chunk
    costs about as much as its slowest group instead of waiting on three threads for two cores.
    """
    n = max(1, min(len(banks), cores))
    groups: list[list[HashAlg]] = [[] for _ in range(n)]
    load = [_READ_COST] + [0.0] * (n - 1)
    for alg in sorted(banks, key=lambda a: -_COST.get(a.name, 6.0)):
        i = min(range(n), key=lambda k: (load[k], k))
        groups[i].append(alg)
        load[i] += _COST.get(alg.name, 6.0)
    return [g for g in groups if g] or [[]]


class _Worker(threading.Thread):
    """Hashes every chunk it is given into its banks and acknowledges it on ``done``."""

    def __init__(self, algs: Sequence[HashAlg], done: queue.SimpleQueue[BaseException | None]) -> None:
        super().__init__(name=f"tboot-py-hash-{'+'.join(a.name for a in algs)}", daemon=True)
        self.hashers: list[tuple[HashAlg, Any]] = [(a, a.new()) for a in algs]
        self.inbox: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
        self._done = done

    def feed(self, view: memoryview) -> None:
        n = len(view)
        # Only a mapping is cold: a chunk just read into a buffer is still in cache, and
        # cutting it into pieces would only add overhead.
        if n <= 2 * PREFETCH_STEP or not isinstance(view.obj, mmap.mmap):
            for _alg, h in self.hashers:
                h.update(view)
            return
        updates = [h.update for _alg, h in self.hashers]
        for off in range(0, n, PREFETCH_STEP):
            nxt = off + PREFETCH_STEP
            view[nxt : nxt + PREFETCH_STEP : _PAGE].tobytes()  # touch the next piece's pages
            piece = view[off:nxt]
            for update in updates:
                update(piece)

    def run(self) -> None:
        while True:
            item = self.inbox.get()
            if item is None:
                return
            try:
                self.feed(item)
            except BaseException as e:  # handed back to the main thread, re-raised there
                self._done.put(e)
            else:
                self._done.put(None)


class MultiHasher:
    """Feed chunks once, get every bank's digest. Used as a context manager.

    Banks are split into cost-balanced groups, one per core (:func:`plan_groups`). The
    caller's thread reads and hashes group 0 itself; every further group has a thread of its
    own. ``update(view)`` may return before those threads have consumed ``view``: the caller
    may reuse the memory behind a view only after the *next* ``update`` (or ``finish``)
    returns. That is exactly the double-buffering contract of ``_read_chunks``.
    """

    def __init__(self, banks: Sequence[HashAlg | str], progress: Progress | None = None,
                 cores: int | None = None) -> None:
        self.banks = resolve_banks(banks)
        self._progress = progress
        self._done: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
        groups = plan_groups(self.banks, _cores() if cores is None else cores)
        self._states = [_Worker(g, self._done) for g in groups]
        # Group 0 is hashed in the caller's thread, which also reads: no hand-off.
        self._threads = self._states[1:]
        self._outstanding = False
        self._total = 0
        self._closed = False
        for w in self._threads:
            w.start()

    def __enter__(self) -> MultiHasher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def chunk_size(self) -> int:
        """The read size that suits this hasher (see SINGLE_BANK_CHUNK)."""
        return CHUNK_SIZE if self._threads else SINGLE_BANK_CHUNK

    @property
    def total(self) -> int:
        """Bytes fed so far."""
        return self._total

    def _wait(self) -> None:
        if not self._outstanding:
            return
        first: BaseException | None = None
        for _ in self._threads:
            r = self._done.get()
            if r is not None and first is None:
                first = r
        self._outstanding = False
        if first is not None:
            raise first

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise RuntimeError("MultiHasher is closed")
        view = memoryview(data).cast("B")
        n = len(view)
        if n == 0:
            return
        self._wait()
        if n < _INLINE_BELOW:
            for w in self._states:
                w.feed(view)
        else:
            for w in self._threads:
                w.inbox.put(view)
            self._outstanding = bool(self._threads)
            self._states[0].feed(view)
        self._total += n
        if self._progress is not None:
            self._progress(self._total)

    def finish(self) -> DigestSet:
        self._wait()
        got = {alg.name: bytes(h.digest()) for w in self._states for alg, h in w.hashers}
        out = DigestSet(tuple((alg, got[alg.name]) for alg in self.banks))
        self.close()
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._wait()
        except Exception:  # closing after a failure: the first error already propagates
            pass
        finally:
            for w in self._threads:
                w.inbox.put(None)
            for w in self._threads:
                w.join()


def _read_chunks(src: Source, start: int, length: int | None, chunk: int = CHUNK_SIZE) -> Iterator[memoryview]:
    """Yield views of ``length`` bytes (or up to EOF when None) from ``start``: windows of a
    mapping when ``src`` is stable and the range is large, else reads through two
    alternating buffers. A file that ends before ``length`` is reached raises InputError."""
    end = src.size if length is None else start + length
    if src.stable and end - start >= MAP_MIN and end <= src.size:
        yield from _mapped_chunks(src, start, end, chunk)
    else:
        yield from _pread_chunks(src, start, length, chunk)


def _mapped_chunks(src: Source, start: int, end: int, chunk: int) -> Iterator[memoryview]:
    """Views of ``[start, end)`` through MAP_WINDOW-sized read-only mappings. A window stays
    mapped while any view of it (held by a hashing thread) is alive; at most two are."""
    pos = start
    while pos < end:
        src.check_intact()
        base = pos - pos % MAP_WINDOW
        stop = min(base + MAP_WINDOW, end)
        try:
            m = _map_window(src.fd, base, stop - base)
        except OSError as e:
            if pos == start and e.errno in _CANNOT_MAP:
                yield from _pread_chunks(src, start, end - start, chunk)
                return
            raise InputError(f"{src.name}: read failed: {os.strerror(e.errno or 0)}") from e
        yield memoryview(m)[pos - base :]
        pos = stop
    src.check_intact()


def _map_window(fd: int, offset: int, length: int) -> mmap.mmap:
    m = mmap.mmap(fd, length, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ, offset=offset)
    m.madvise(_MADV_POPULATE_READ)
    return m


def _pread_chunks(src: Source, start: int, length: int | None, chunk: int) -> Iterator[memoryview]:
    if length is not None:
        chunk = max(1, min(chunk, length))
    bufs = (bytearray(chunk), bytearray(chunk))
    i = 0
    off = start
    remaining = length
    while remaining is None or remaining > 0:
        want = chunk if remaining is None else min(chunk, remaining)
        view = memoryview(bufs[i & 1])[:want]
        n = src.pread_into(view, off)
        if n == 0:
            if remaining is not None:
                raise InputError(f"{src.name}: file shrank while it was read (ended at {off})")
            return
        yield view[:n]
        off += n
        if remaining is not None:
            remaining -= n
        i += 1
        if n < want and remaining is None:
            return


def _read_stream(f: BinaryIO, chunk: int = CHUNK_SIZE) -> Iterator[memoryview]:
    bufs = (bytearray(chunk), bytearray(chunk))
    readinto = getattr(f, "readinto", None)
    i = 0
    while True:
        if readinto is not None:
            buf = bufs[i & 1]
            n = readinto(buf)
            if not n:
                return
            yield memoryview(buf)[:n]
        else:
            data = f.read(chunk)
            if not data:
                return
            yield memoryview(data)
        i += 1


def feed_ranges(h: MultiHasher, src: Source, ranges: Iterable[tuple[int, int]]) -> None:
    """Hash ``(offset, length)`` ranges of ``src``, in the order given, into ``h``."""
    for off, length in ranges:
        for view in _read_chunks(src, off, length, h.chunk_size):
            h.update(view)


def stream_digests(
    src: BinaryIO | int | Path | str | Source | bytes | bytearray | memoryview,
    banks: Sequence[HashAlg | str],
    progress: Progress | None = None,
) -> tuple[DigestSet, int]:
    """Digests and the number of bytes hashed (see :func:`hash_stream`)."""
    if isinstance(src, int | os.PathLike | str | Source):
        # The source is opened outside the hasher: its lease is released only after every
        # hashing thread has let go of the mapping.
        with open_source(src) as s, MultiHasher(banks, progress) as h:
            for view in _read_chunks(s, 0, None, h.chunk_size):
                h.update(view)
            return h.finish(), h.total
    with MultiHasher(banks, progress) as h:
        if isinstance(src, bytes | bytearray | memoryview):
            view = memoryview(src).cast("B")
            for off in range(0, len(view), CHUNK_SIZE):
                h.update(view[off : off + CHUNK_SIZE])
        elif isinstance(src, io.IOBase) or hasattr(src, "readinto") or hasattr(src, "read"):
            try:
                for view in _read_stream(src, h.chunk_size):
                    h.update(view)
            except OSError as e:
                raise InputError(f"{getattr(src, 'name', '<stream>')}: read failed: {e}") from e
        else:
            raise InputError(f"cannot measure a {type(src).__name__}")
        return h.finish(), h.total


def hash_stream(
    src: BinaryIO | int | Path | str,
    banks: Sequence[HashAlg] = algorithms.DEFAULT_BANKS,
    progress: Progress | None = None,
) -> DigestSet:
    """The plain digests of a whole file, every bank from one read pass.

    ``src`` is a path, an open file descriptor (read with pread from offset 0; its file
    position is neither used nor moved), or a binary stream (read from its current
    position to EOF). ``progress`` is called with the number of bytes hashed so far.
    """
    return stream_digests(src, banks, progress)[0]
