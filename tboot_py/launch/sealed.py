"""Private, sealed copies of the artifacts the gate launches.

The gate copies each artifact once into an anonymous memory file (memfd_create(2)) and
seals it against writes, shrinking and growing (F_SEAL_WRITE | F_SEAL_SHRINK |
F_SEAL_GROW | F_SEAL_SEAL, fcntl(2)). It measures that copy and hands the launcher
``/proc/self/fd/N`` for it. Nothing can change the bytes between measurement and use: the
path the user named is read exactly once, and replacing it afterwards has no effect.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from tboot_py.errors import InputError

_SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
_CHUNK = 1 << 20
#: Refuse artifacts larger than this (a hypervisor, kernel or initrd is far smaller).
MAX_ARTIFACT = 4 << 30


@dataclass(frozen=True)
class SealedCopy:
    """A sealed private copy: ``fd`` is inheritable by the launcher, ``path`` names it there."""

    component: str
    origin: Path
    fd: int
    size: int

    @property
    def path(self) -> str:
        return f"/proc/self/fd/{self.fd}"

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def seal_copy(component: str, origin: Path) -> SealedCopy:
    """Copy ``origin`` into a sealed memfd. InputError for a missing file, a directory, etc."""
    try:
        src = os.open(origin, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise InputError(f"{component}: {origin}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{component}: {origin}: is a directory") from None
    except OSError as e:
        raise InputError(f"{component}: {origin}: {e.strerror}") from None
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{component}: {origin}: not a regular file")
        if st.st_size > MAX_ARTIFACT:
            raise InputError(f"{component}: {origin}: larger than {MAX_ARTIFACT} bytes")
        mfd = os.memfd_create(f"tboot-py-{component}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            size = _copy(src, mfd)
            fcntl.fcntl(mfd, fcntl.F_ADD_SEALS, _SEALS)
        except BaseException:
            os.close(mfd)
            raise
    except OSError as e:
        if e.errno == errno.EISDIR:
            raise InputError(f"{component}: {origin}: is a directory") from None
        raise InputError(f"{component}: {origin}: {e.strerror}") from None
    finally:
        os.close(src)
    return SealedCopy(component, origin, mfd, size)


def _copy(src: int, dst: int) -> int:
    total = 0
    while True:
        chunk = os.read(src, _CHUNK)
        if not chunk:
            return total
        total += len(chunk)
        if total > MAX_ARTIFACT:
            raise InputError("artifact grew beyond the size limit while being copied")
        view = memoryview(chunk)
        while view:
            n = os.write(dst, view)
            view = view[n:]


def is_sealed(fd: int) -> bool:
    return fcntl.fcntl(fd, fcntl.F_GET_SEALS) & _SEALS == _SEALS
