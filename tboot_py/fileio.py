"""The one way tboot-py reads an input file and writes a file atomically.

Reading (:func:`read_file`): inputs are hostile. A FIFO blocks an ``open`` until a writer
comes and a ``read`` forever; ``/dev/zero`` never ends. So a file is opened with
``O_NONBLOCK`` (a FIFO open returns at once) and ``O_NOCTTY``, checked with ``fstat`` before
a byte is read (regular files only: pipes, sockets and devices are refused), its size is
checked against the caller's cap, and reading stops one byte past the cap whatever the size
said (securityfs and procfs files such as ``binary_bios_measurements`` report size 0).
Every failure is one :class:`~tboot_py.errors.InputError` (exit 2).

Writing (:func:`write_atomic`): a temporary file in the same directory, every byte written
checked, ``fsync``, ``rename`` over the target, ``fsync`` of the directory. A crash or a
full disk leaves the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from typing import TYPE_CHECKING

from tboot_py.errors import InputError

if TYPE_CHECKING:  # pathlib is imported where a path is built: reading needs none (CLI start-up)
    from pathlib import Path

PathLike = os.PathLike[str] | str

#: Default cap for small inputs (keys, AK files, PCR files, configs).
SMALL = 1 * 2**20
_CHUNK = 1 << 20


def describe_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "is a directory"
    if stat.S_ISFIFO(mode):
        return "is a FIFO (named pipe), not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a regular file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a regular file"
    return "is not a regular file"


def open_regular(path: PathLike, what: str = "file", *, nofollow: bool = False) -> tuple[int, os.stat_result]:
    """Open ``path`` read-only without blocking and check it is a regular file. Returns the
    fd (blocking mode restored, close-on-exec) and its ``fstat``; the caller closes it."""
    name = os.fspath(path)
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
    if nofollow:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(name, flags)
    except FileNotFoundError as e:
        raise InputError(f"cannot read {what} {name}: no such file") from e
    except IsADirectoryError as e:
        raise InputError(f"cannot read {what} {name}: it is a directory") from e
    except OSError as e:
        if e.errno == errno.ELOOP and nofollow:
            raise InputError(f"cannot read {what} {name}: it is a symbolic link") from e
        raise InputError(f"cannot read {what} {name}: {os.strerror(e.errno or 0)}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"cannot read {what} {name}: it {describe_kind(st.st_mode)}")
        os.set_blocking(fd, True)
    except InputError:
        os.close(fd)
        raise
    except OSError as e:
        os.close(fd)
        raise InputError(f"cannot read {what} {name}: {os.strerror(e.errno or 0)}") from e
    return fd, st


def read_fd(fd: int, name: str, limit: int, what: str = "file") -> bytes:
    """Read an open regular file from its current position to its end, at most ``limit``
    bytes (InputError past that, without reading more than one chunk beyond it)."""
    buf = bytearray()
    while True:
        want = min(_CHUNK, limit + 1 - len(buf))
        try:
            chunk = os.read(fd, want)
        except OSError as e:
            raise InputError(f"cannot read {what} {name}: {os.strerror(e.errno or 0)}") from e
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit:
            raise InputError(f"cannot read {what} {name}: larger than {limit} bytes")


def read_file(path: PathLike, what: str = "file", limit: int = SMALL, *, nofollow: bool = False) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (see the module docstring)."""
    name = os.fspath(path)
    fd, st = open_regular(path, what, nofollow=nofollow)
    try:
        if st.st_size > limit:
            raise InputError(f"cannot read {what} {name}: {st.st_size} bytes, larger than {limit}")
        return read_fd(fd, name, limit, what)
    finally:
        os.close(fd)


def read_text(path: PathLike, what: str = "file", limit: int = SMALL, *, stdin: bool = False) -> str:
    """:func:`read_file` (with ``stdin``, :func:`read_input`) decoded as UTF-8 (InputError
    naming the byte otherwise)."""
    data = read_input(path, what, limit) if stdin else read_file(path, what, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{what} {os.fspath(path)}: not UTF-8 text (byte {e.start})") from e


#: A file argument of ``-`` means standard input (as in tpm2-tools and coreutils).
STDIN = "-"
#: The most read from standard input: more than any event log, evidence bundle or boot image.
MAX_STDIN = 1 << 30


def read_stdin(what: str, limit: int = MAX_STDIN) -> bytes:
    """Standard input's bytes for a ``-`` argument, at most ``limit`` (else InputError)."""
    import sys

    try:
        data = sys.stdin.buffer.read(limit + 1)
    except (OSError, AttributeError, ValueError) as e:
        raise InputError(f"cannot read {what} from standard input: {e}") from e
    if len(data) > limit:
        raise InputError(f"{what} on standard input is larger than {limit} bytes")
    return data


def read_input(path: PathLike, what: str = "file", limit: int = SMALL) -> bytes:
    """:func:`read_file`, or standard input when ``path`` is ``-`` (same cap, same errors)."""
    if os.fspath(path) == STDIN:
        return read_stdin(what, limit)
    return read_file(path, what, limit)


def stdin_fd(what: str, limit: int = MAX_STDIN) -> int:
    """Standard input copied once into a sealed anonymous file, for readers that take an fd
    and read it with pread (``measure``): a pipe cannot be read at offsets."""
    fd = os.memfd_create("stdin", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        write_all(fd, read_stdin(what, limit))
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    except BaseException:
        os.close(fd)
        raise
    return fd


def lock_exclusive(lock: PathLike, what: str = "lock") -> int:
    """Open (creating it, never through a symbolic link) and take an exclusive ``flock`` on
    the lock file ``lock``; returns its fd, whose closing releases the lock. Waits for a
    holder in another process. Raises InputError."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        raise InputError(f"cannot open the {what} {os.fspath(lock)}: {os.strerror(e.errno or 0)}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as e:
        os.close(fd)
        raise InputError(f"cannot lock {os.fspath(lock)}: {os.strerror(e.errno or 0)}") from e
    return fd


@contextlib.contextmanager
def locked(lock: PathLike, what: str = "lock") -> Iterator[None]:
    """Hold :func:`lock_exclusive` on ``lock`` for the ``with`` block. Not re-entrant."""
    fd = lock_exclusive(lock, what)
    try:
        yield
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """Write every byte (a short write is retried; ENOSPC and friends raise OSError)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # pragma: no cover - os.write raises rather than return 0 for files
            raise OSError(errno.EIO, "short write")
        view = view[n:]


def write_atomic(path: PathLike, data: bytes, mode: int = 0o644, what: str = "file") -> None:
    """Replace ``path`` with ``data`` atomically and durably (see the module docstring).
    Only a regular file is replaced: a symbolic link, a FIFO or a device at ``path`` (say
    ``-o /dev/stdout``) is refused, never followed nor replaced. Raises InputError."""
    from pathlib import Path

    p = Path(path)
    directory = p.parent if str(p.parent) else Path(".")
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise InputError(f"cannot write {what} {p}: {os.strerror(e.errno or 0)}") from e
    else:
        if stat.S_ISLNK(st.st_mode):
            raise InputError(f"cannot write {what} {p}: it is a symbolic link; give the real path")
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"cannot write {what} {p}: it {describe_kind(st.st_mode)}")
    tmp = directory / f".{p.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    except OSError as e:
        raise InputError(f"cannot write {what} {p}: {os.strerror(e.errno or 0)}") from e
    try:
        try:
            write_all(fd, data)
            os.fchmod(fd, mode)  # whatever the umask
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, p)
        fsync_dir(directory)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise InputError(f"cannot write {what} {p}: {os.strerror(e.errno or 0)}") from e


def append_atomic(path: PathLike, old: bytes, new: bytes, mode: int = 0o644, what: str = "file") -> None:
    """Append ``new`` to a file whose current content the caller read (under its lock) as
    ``old``: the whole file is replaced atomically, so a crash or a full disk never leaves
    a torn record at the end."""
    write_atomic(path, old + new, mode, what)


def check_write_path(path: PathLike, what: str) -> None:
    """Refuse a path the gate will write that another user could redirect: the path itself
    must not be a symbolic link, and its directory must be owned by this user (or root) and
    writable by nobody else (whoever can write there can replace the file)."""
    from pathlib import Path

    p = Path(path)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise InputError(f"{what} {p}: cannot access: {os.strerror(e.errno or 0)}") from e
    if st is not None:
        if stat.S_ISLNK(st.st_mode):
            raise InputError(f"{what} {p}: is a symbolic link; give the real path")
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{what} {p}: {describe_kind(st.st_mode)}")
    directory = p.parent if str(p.parent) else Path(".")
    check_private_dir(directory, f"directory of {what} {p}", allow_root=True)


def check_private_dir(path: Path, what: str = "state directory", *, allow_root: bool = False) -> None:
    """Refuse a directory that others could write to, or one that is a symbolic link: whoever
    can write there can swap the files the gate trusts (as ssh refuses loose key files)."""
    try:
        lst = os.lstat(path)
        st = os.stat(path)
    except OSError as e:
        raise InputError(f"cannot access the {what} {path}: {os.strerror(e.errno or 0)}") from e
    if stat.S_ISLNK(lst.st_mode) and lst.st_uid not in (0, os.geteuid()):
        raise InputError(f"{what} {path} is a symbolic link owned by another user")
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{what} {path} is not a directory")
    owners = (os.geteuid(), 0) if allow_root else (os.geteuid(),)
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or st.st_uid not in owners:
        raise InputError(f"{what} {path} must be owned by this user and writable by nobody else "
                         f"(mode {stat.S_IMODE(st.st_mode):o})")
