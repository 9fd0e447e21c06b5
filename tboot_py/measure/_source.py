"""Byte sources for the measurement engine.

A source is read with ``os.pread``/``os.preadv`` at explicit offsets, or through a
read-only mapping, so an open file descriptor handed in by the launch gate (a sealed
memfd) is never moved: its position is neither read nor changed (DESIGN.md, "Measure
what is launched").

Mapping a file is only safe while it cannot shrink: touching a mapped page past a new
end of file raises SIGBUS, which kills the process. A source is *stable* when it is a
memfd sealed against shrinking (F_SEAL_SHRINK), or a file this module opened and holds a
read lease on (fcntl(2) F_SETLEASE): while the lease is held, an open for writing or a
truncate(2) blocks until the lease is given back, and ``Source.check_intact`` sees the
pending break. Every other source is read with pread.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import signal
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tboot_py.errors import InputError

PathLike = os.PathLike[str] | str

#: Files smaller than this are always read with pread: mapping costs more than it saves.
MAP_MIN = 1024 * 1024


@dataclass(frozen=True)
class Source:
    """An open, regular, pread-able file: its fd, its size when opened and a display name."""

    fd: int
    size: int
    name: str
    #: A read lease is held on ``fd`` (only on files opened by :func:`open_source`).
    leased: bool = False
    #: ``fd`` is a memfd sealed against shrinking.
    sealed: bool = False

    @property
    def stable(self) -> bool:
        """The file cannot shrink while this source is open, so it may be mapped."""
        return self.leased or self.sealed

    def check_intact(self) -> None:
        """Raise InputError if another process has started to open the file for writing
        (a lease break is pending: that process waits until the lease is released)."""
        if not self.leased:
            return
        try:
            held = fcntl.fcntl(self.fd, fcntl.F_GETLEASE)
        except OSError as e:
            raise InputError(f"{self.name}: cannot check the read lease: {os.strerror(e.errno or 0)}") from e
        if held != fcntl.F_RDLCK:
            raise InputError(f"{self.name}: another process opened the file for writing while it was measured")

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


def _sealed_against_shrink(fd: int) -> bool:
    try:
        return bool(fcntl.fcntl(fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_SHRINK)
    except OSError:  # EINVAL: not a memfd (or a kernel without sealing)
        return False


@functools.cache
def _lease_break_seconds() -> int:
    try:
        with open("/proc/sys/fs/lease-break-time", "rb") as f:
            return int(f.read().strip() or b"0")
    except (OSError, ValueError):
        return 0


def _take_read_lease(fd: int) -> bool:
    """Take a read lease on ``fd``; False where leases are unavailable (not the file's owner
    and no CAP_LEASE, a writer has the file open, a file system without leases). With a
    lease-break-time under one second a writer could take over mid-hash: no lease then."""
    if _lease_break_seconds() < 1:
        return False
    try:
        # A break signals the lease owner. SIGIO's default action kills the process, so the
        # signal is SIGURG (default: ignored) and then no owner at all: breaks are polled.
        fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError:
        return False
    with contextlib.suppress(OSError):  # if it fails, the owner stays: the signal is SIGURG
        fcntl.fcntl(fd, fcntl.F_SETOWN, 0)
    return True


def _release_lease(fd: int) -> None:
    with contextlib.suppress(OSError):  # closing the fd drops the lease anyway
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)


@contextmanager
def open_source(src: PathLike | int | Source) -> Iterator[Source]:
    """Open a path (read-only, close-on-exec) or wrap a caller's fd (never closed here).
    An already open Source is passed through (its size is taken again: it may have changed;
    its lease, if any, stays with the outer context).

    A path of MAP_MIN bytes or more is opened under a read lease (see the module
    docstring), released before the file is closed; a caller's fd is never leased (that
    would change its owner and signal settings), so it is mapped only when sealed."""
    if isinstance(src, Source):
        yield Source(src.fd, _check_regular(src.fd, src.name), src.name, src.leased, src.sealed)
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
        yield Source(src, size, name, sealed=_sealed_against_shrink(src))
        return
    name = os.fspath(src)
    try:
        # O_NONBLOCK: opening a FIFO with no writer would block; _check_regular refuses it.
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError as e:
        raise InputError(f"{name}: no such file") from e
    except IsADirectoryError as e:
        raise InputError(f"{name}: is a directory") from e
    except OSError as e:
        raise InputError(f"{name}: cannot open: {os.strerror(e.errno or 0)}") from e
    leased = False
    try:
        size = _check_regular(fd, name)
        os.set_blocking(fd, True)
        leased = size >= MAP_MIN and _take_read_lease(fd)
        if leased:  # the size that counts is the one under the lease: no writer can change it now
            size = _check_regular(fd, name)
        yield Source(fd, size, name, leased=leased)
    finally:
        if leased:
            _release_lease(fd)
        os.close(fd)


def source_name(src: object) -> str:
    if isinstance(src, Source):
        return src.name
    if isinstance(src, int) and not isinstance(src, bool):
        return f"fd:{src}"
    if isinstance(src, str | os.PathLike):
        return os.fspath(src)
    if isinstance(src, bytes | bytearray | memoryview):
        return "<bytes>"
    return str(getattr(src, "name", "<stream>"))
