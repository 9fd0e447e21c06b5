"""Small argument parsers shared by the CLI commands."""

from __future__ import annotations

from tboot_py.errors import InputError


def parse_hex(value: str, what: str) -> bytes:
    try:
        return bytes.fromhex(value.strip().removeprefix("0x"))
    except ValueError as e:
        raise InputError(f"{what} must be hex: {value!r}") from e


def parse_handle(value: str) -> int:
    try:
        return int(value, 0)
    except ValueError as e:
        raise InputError(f"bad handle {value!r}; use e.g. 0x81010002") from e


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


def stdin_fd(what: str, limit: int = MAX_STDIN) -> int:
    """Standard input copied once into a sealed anonymous file, for readers that take an fd
    and read it with pread (``measure``): a pipe cannot be read at offsets."""
    import fcntl
    import os

    fd = os.memfd_create("stdin", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(read_stdin(what, limit))
        while view:
            view = view[os.write(fd, view):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    except BaseException:
        os.close(fd)
        raise
    return fd
