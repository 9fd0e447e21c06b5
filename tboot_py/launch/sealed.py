"""Private, sealed copies of the artifacts the gate launches.

The gate copies each artifact once into an anonymous memory file (memfd_create(2)) and
seals it against writes, shrinking and growing (F_SEAL_WRITE | F_SEAL_SHRINK |
F_SEAL_GROW | F_SEAL_SEAL, fcntl(2)). It measures that copy and hands the launcher
``/proc/self/fd/N`` for it. Nothing can change the bytes between measurement and use: the
path the user named is read exactly once, and replacing it afterwards has no effect.

What the launcher receives, per kind of artifact (the rule the README states):

* a plain file (``file``) and a non-gzip tboot module: every byte of the copy is hashed;
* a gzip tboot module: the digest covers the *decompressed* image (tb_polgen gunzips, and
  so does GRUB's ``module`` before tboot hashes it), so the copy holds the decompressed
  image, never the gzip file: bytes that decompression skips (header fields, padding)
  never reach the launcher (:func:`seal_artifact` with ``tboot_module=True``);
* a PE image (``pe``): the Authenticode digest leaves out the CheckSum, the Certificate
  Table directory entry, the certificate table at the end of the file, and the padding
  between sections. The signatures are needed by firmware and stay, but padding must be
  zero (:func:`tboot_py.measure.authenticode.check_padding`): an unhashed gap can carry
  nothing a loader could run.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
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
    #: (st_dev, st_ino) of the file the copy was read from (None for generated files), so a
    #: launch command that names the original under any spelling can be refused.
    origin_id: tuple[int, int] | None = None
    #: The copy holds the gunzipped image of a gzip file.
    gunzipped: bool = False

    @property
    def path(self) -> str:
        return f"/proc/self/fd/{self.fd}"

    def sha256(self) -> str:
        """SHA-256 (hex) of the sealed bytes (read with pread; the position is not moved)."""
        h = hashlib.sha256()
        for off in range(0, self.size, _CHUNK):
            h.update(os.pread(self.fd, min(_CHUNK, self.size - off), off))
        return h.hexdigest()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def seal_artifact(component: str, origin: Path, *, tboot_module: bool) -> SealedCopy:
    """The sealed copy the launcher gets for an artifact of this kind (module docstring):
    a gzip tboot module decompressed, a PE image with its padding checked, else the file."""
    copy = seal_copy(component, origin)
    try:
        if tboot_module and _is_gzip_fd(copy.fd):
            from tboot_py.measure.tboot import gunzip_into

            mfd = _new_memfd(component)
            try:
                size = gunzip_into(copy.fd, _FdSink(mfd))
                fcntl.fcntl(mfd, fcntl.F_ADD_SEALS, _SEALS)
            except BaseException:
                os.close(mfd)
                raise
            return SealedCopy(component, origin, mfd, size, copy.origin_id, gunzipped=True)
        if not tboot_module:
            from tboot_py.measure.authenticode import check_padding

            check_padding(copy.fd, f"{component}: {origin}")
    except BaseException:
        copy.close()
        raise
    return copy


def seal_bytes(component: str, name: str, data: bytes) -> SealedCopy:
    """A sealed memfd holding ``data`` (a file the gate generates, such as an xl config)."""
    if len(data) > MAX_ARTIFACT:
        raise InputError(f"{component}: larger than {MAX_ARTIFACT} bytes")
    mfd = _new_memfd(component)
    try:
        _FdSink(mfd).update(data)
        fcntl.fcntl(mfd, fcntl.F_ADD_SEALS, _SEALS)
    except BaseException:
        os.close(mfd)
        raise
    return SealedCopy(component, Path(name), mfd, len(data))


class _FdSink:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.total = 0

    def update(self, data: bytes | memoryview) -> None:
        self.total += len(data)
        if self.total > MAX_ARTIFACT:
            raise InputError(f"artifact larger than {MAX_ARTIFACT} bytes (or grew while being copied)")
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]


def _new_memfd(component: str) -> int:
    return os.memfd_create(f"tboot-py-{component}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)


def _is_gzip_fd(fd: int) -> bool:
    from tboot_py.measure.tboot import is_gzip

    return is_gzip(os.pread(fd, 2, 0))


def seal_copy(component: str, origin: Path) -> SealedCopy:
    """Copy ``origin`` into a sealed memfd. InputError for a missing file, a directory, etc."""
    from tboot_py.fileio import open_regular

    # Without blocking: a FIFO named as an artifact is refused, not waited on.
    src, st = open_regular(origin, component)
    try:
        if st.st_size > MAX_ARTIFACT:
            raise InputError(f"{component}: {origin}: larger than {MAX_ARTIFACT} bytes")
        mfd = _new_memfd(component)
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
    return SealedCopy(component, origin, mfd, size, (st.st_dev, st.st_ino))


def _copy(src: int, dst: int) -> int:
    sink = _FdSink(dst)
    while True:
        chunk = os.read(src, _CHUNK)
        if not chunk:
            return sink.total
        sink.update(chunk)


def is_sealed(fd: int) -> bool:
    return fcntl.fcntl(fd, fcntl.F_GET_SEALS) & _SEALS == _SEALS
