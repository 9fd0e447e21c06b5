"""tboot Verified Launch module hashes, as ``tb_polgen --hash image`` computes them.

tboot's VL policy (tboot docs, "Verified Launch policy"; tb_polgen/commands.c in the tboot
sources) identifies a multiboot module by

    H( H(cmdline) || H(image) )

where ``cmdline`` is the module's command line without the module file name and without
a terminating NUL, exactly as given to ``tb_polgen --cmdline`` (an absent command line
is the empty string), and ``image`` is the module file; a gzip-compressed file (such as
Debian's xen-*.gz) is decompressed first, as tb_polgen reads images through zlib's gzread.
Every bank is computed in the same pass. tb_polgen supports sha1, sha256, sha384 and sha512.

Decompression is streamed and capped (:data:`MAX_DECOMPRESSED`, a defence against gzip
bombs). Concatenated gzip members are decompressed one after another as gzread does. Bytes
after the last member that do not start another member are refused (gzread would silently
ignore them, and unmeasured bytes must not ride along with a measured module).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

from tboot_py import algorithms
from tboot_py.algorithms import HashAlg
from tboot_py.errors import InputError, ParseError
from tboot_py.measure._source import Source, open_source, source_name
from tboot_py.measure.digests import CHUNK_SIZE, DigestSet, MultiHasher, Progress, _read_chunks, resolve_banks

if TYPE_CHECKING:
    from pathlib import Path

GZIP_MAGIC = b"\x1f\x8b"
#: Longest module command line tb_polgen accepts (it refuses longer ones; tboot keeps
#: command lines in fixed 1024-byte buffers including the NUL).
MAX_CMDLINE = 1023
#: Largest decompressed image accepted (1 GiB); beyond it the image is refused as a likely gzip bomb.
MAX_DECOMPRESSED = 1 << 30


class DecompressedTooLarge(InputError):
    """A gzip image decompresses to more than the configured limit."""


def is_gzip(head: bytes) -> bool:
    """The gzip magic (RFC 1952, 2.3.1: ID1 ID2 = 0x1f 0x8b), as gzread decides. A member
    with a compression method other than 8 (deflate) then fails as a ParseError."""
    return len(head) >= 2 and head[:2] == GZIP_MAGIC


class Sink(Protocol):
    """Where decompressed bytes go: a hasher, or the gate's sealed copy."""

    def update(self, data: bytes) -> None: ...


def _gunzip_into(h: Sink, chunks: Iterable[memoryview], name: str, limit: int) -> int:
    """Stream-decompress gzip member(s) from an iterator of chunks into ``h``; returns the output size."""
    out_total = 0
    consumed = 0  # compressed bytes fully consumed by finished members
    d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    member_start = 0
    in_member = True
    pending = b""  # bytes after a finished member, still to be looked at
    for view in chunks:
        data: bytes | memoryview = view
        if pending:
            data = pending + bytes(view)
            pending = b""
        while data:
            if not in_member:
                if len(data) < 2:
                    pending = bytes(data)
                    break
                if not is_gzip(bytes(data[:2])):
                    raise ParseError("data after the last gzip member", consumed, name)
                d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                member_start = consumed
                in_member = True
            try:
                # max_length caps the output of one call: a bomb cannot balloon memory.
                out = d.decompress(data, CHUNK_SIZE)
            except zlib.error as e:
                raise ParseError(f"corrupt gzip data: {e}", member_start, name) from e
            if out:
                out_total += len(out)
                if out_total > limit:
                    raise DecompressedTooLarge(
                        f"{name}: decompressed image exceeds {limit} bytes (refusing a possible gzip bomb)")
                h.update(out)
            used = len(data) - len(d.unconsumed_tail) if not d.eof else len(data) - len(d.unused_data)
            consumed += used
            if d.eof:
                data = d.unused_data
                in_member = False
            else:
                data = d.unconsumed_tail
    if pending:
        raise ParseError("data after the last gzip member", consumed, name)
    if in_member:
        # Flush what is buffered, then insist on a complete member (CRC and ISIZE checked by zlib).
        while True:
            try:
                out = d.decompress(d.unconsumed_tail, CHUNK_SIZE)
            except zlib.error as e:
                raise ParseError(f"corrupt gzip data: {e}", member_start, name) from e
            if not out:
                break
            out_total += len(out)
            if out_total > limit:
                raise DecompressedTooLarge(
                    f"{name}: decompressed image exceeds {limit} bytes (refusing a possible gzip bomb)")
            h.update(out)
        if not d.eof:
            raise ParseError("truncated gzip data", consumed, name)
    return out_total


def image_digests(
    src: bytes | bytearray | memoryview | Path | str | int | Source,
    banks: Sequence[HashAlg | str],
    progress: Progress | None = None,
    *,
    max_decompressed: int = MAX_DECOMPRESSED,
) -> tuple[DigestSet, int, bool]:
    """H(image) per bank (gunzipped first if gzip), the file size, and whether it was gzip."""
    name = source_name(src)
    if isinstance(src, os.PathLike | str | int | Source):
        # Opened outside the hasher: a lease outlives every thread's use of the mapping.
        with open_source(src) as s, MultiHasher(banks) as h:
            size, gz = _file_image(h, s, max_decompressed, progress)
            return h.finish(), size, gz
    with MultiHasher(banks) as h:
        if isinstance(src, bytes | bytearray | memoryview):
            view = memoryview(src).cast("B")
            if is_gzip(bytes(view[:2])):
                chunks = [view[o : o + CHUNK_SIZE] for o in range(0, len(view), CHUNK_SIZE)]
                _gunzip_into(h, chunks, name, max_decompressed)
                gz = True
            else:
                for o in range(0, len(view), CHUNK_SIZE):
                    h.update(view[o : o + CHUNK_SIZE])
                gz = False
            size = len(view)
        else:
            raise InputError(f"cannot measure a {type(src).__name__}")
        return h.finish(), size, gz


def _file_image(h: MultiHasher, s: Source, limit: int, progress: Progress | None) -> tuple[int, bool]:
    head = s.read_exact(0, min(2, s.size))
    done = 0

    def counted() -> Iterator[memoryview]:
        nonlocal done
        for v in _read_chunks(s, 0, None):
            done += len(v)
            if progress is not None:
                progress(done)
            yield v

    if is_gzip(head):
        # Each compressed chunk is fully consumed before the next read reuses its buffer.
        _gunzip_into(h, counted(), s.name, limit)
        return done, True
    for v in counted():
        h.update(v)
    return done, False


def gunzip_into(src: Path | str | int | Source, sink: Sink, *, max_decompressed: int = MAX_DECOMPRESSED) -> int:
    """Decompress the gzip file ``src`` into ``sink`` exactly as :func:`image_digests` does
    before hashing (the same members, the same refusals, the same cap); returns the
    decompressed size. The launch gate hands a tboot module over decompressed through this,
    so the launcher receives exactly the bytes the module hash covers."""
    with open_source(src) as s:
        return _gunzip_into(sink, _read_chunks(s, 0, None), s.name, max_decompressed)


def tboot_module_digests(
    src: bytes | bytearray | memoryview | Path | str | int | Source,
    cmdline: str,
    banks: Sequence[HashAlg | str],
    progress: Progress | None = None,
    *,
    max_decompressed: int = MAX_DECOMPRESSED,
) -> tuple[DigestSet, int, bool]:
    """The module hash per bank, the file size and whether the image was gzip."""
    algs = resolve_banks(banks)
    if not isinstance(cmdline, str):
        raise InputError("the module command line must be a string")
    if "\0" in cmdline:
        raise InputError("the module command line contains a NUL byte")
    try:
        cmd = cmdline.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"the module command line is not encodable: {e}") from e
    if len(cmd) > MAX_CMDLINE:
        raise InputError(f"the module command line is {len(cmd)} bytes; tboot allows at most {MAX_CMDLINE}")
    images, size, gz = image_digests(src, algs, progress, max_decompressed=max_decompressed)
    out = tuple((a, a.digest(a.digest(cmd) + images[a])) for a in algs)
    return DigestSet(out), size, gz


def tboot_module_hash(
    src: bytes | Path | str | int,
    cmdline: str,
    banks: Sequence[HashAlg] = algorithms.DEFAULT_BANKS,
) -> DigestSet:
    """tboot's VL module hash H(H(cmdline) || H(image)) per bank, gzip images decompressed first."""
    return tboot_module_digests(src, cmdline, banks)[0]
