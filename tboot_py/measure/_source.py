"""Byte sources for the measurement engine.

A source is read with ``os.pread``/``os.preadv`` at explicit offsets, so an open file
descriptor handed in by the launch gate (a sealed memfd) is never moved: its position is
neither read nor changed (DESIGN.md, "Measure what is launched").
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tboot_py.errors import InputError

PathLike = Path | str


@dataclass(frozen=True)
class Source:
    """An open, regular, pread-able file: its fd, its size when opened and a display name."""

    fd: int
    size: int
    name: str

    def pread_into(self, buf: memoryview, offset: int) -> int:
        """Fill ``buf`` from ``offset``; returns bytes read (short only at end of file)."""
        done = 0
        while done < len(buf):
            try:
                n = os.preadv(self.fd, [buf[done:]], offset + done)
            except InterruptedError:  # pragma: no cover - PEP 475 retries already
                continue
            except OSError as e:
                raise InputError(f"{self.name}: read failed: {os.strerror(e.errno or 0)}") from e
            if n == 0:
                break
            done += n
        return done

    def read_exact(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset``; the caller has bounds-checked the range."""
        buf = bytearray(length)
        n = self.pread_into(memoryview(buf), offset)
        if n != length:
            raise InputError(f"{self.name}: file shrank while it was read (wanted {length} bytes at {offset})")
        return bytes(buf)


def _check_regular(fd: int, name: str) -> int:
    try:
        st = os.fstat(fd)
    except OSError as e:
        raise InputError(f"{name}: cannot stat: {os.strerror(e.errno or 0)}") from e
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{name}: is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{name}: not a regular file (pipes and devices cannot be measured by offset)")
    return st.st_size


@contextmanager
def open_source(src: PathLike | int | Source) -> Iterator[Source]:
    """Open a path (read-only, close-on-exec) or wrap a caller's fd (never closed here).
    An already open Source is passed through (its size is taken again: it may have changed)."""
    if isinstance(src, Source):
        yield Source(src.fd, _check_regular(src.fd, src.name), src.name)
        return
    if isinstance(src, bool):  # bool is an int; refuse it rather than read fd 0/1
        raise InputError("a file path or an open file descriptor is required")
    if isinstance(src, int):
        if src < 0:
            raise InputError(f"invalid file descriptor {src}")
        name = f"fd:{src}"
        try:
            size = _check_regular(src, name)
        except InputError as e:
            if isinstance(e.__cause__, OSError) and e.__cause__.errno == errno.EBADF:
                raise InputError(f"{name}: not an open file descriptor") from e
            raise
        yield Source(src, size, name)
        return
    name = os.fspath(src)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError as e:
        raise InputError(f"{name}: no such file") from e
    except IsADirectoryError as e:
        raise InputError(f"{name}: is a directory") from e
    except OSError as e:
        raise InputError(f"{name}: cannot open: {os.strerror(e.errno or 0)}") from e
    try:
        size = _check_regular(fd, name)
        yield Source(fd, size, name)
    finally:
        os.close(fd)


def source_name(src: object) -> str:
    if isinstance(src, Source):
        return src.name
    if isinstance(src, int) and not isinstance(src, bool):
        return f"fd:{src}"
    if isinstance(src, str | Path):
        return os.fspath(src)
    if isinstance(src, bytes | bytearray | memoryview):
        return "<bytes>"
    return str(getattr(src, "name", "<stream>"))
