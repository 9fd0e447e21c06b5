"""Which kind of log a file holds, from its first bytes, without loading the parsers: the
CLI sniffs every log it reads, and a TCG log should not pay for the IMA parser's import."""

from __future__ import annotations

import struct

#: The longest IMA template name tboot-py accepts (the kernel's are at most 15 bytes).
MAX_TEMPLATE_NAME = 64


def looks_like_ima(data: bytes) -> bool:
    """Whether ``data`` is an IMA list rather than a TCG event log, from its first record.

    ASCII: ``<pcr> <hex template digest> <template name> ...``. Binary: the template-name
    length (u32 at offset 24) is 1..64 and the name starts with ``ima``. A TCG log's first
    record has its event type at offset 4 and digest or size fields there, never such a name.
    """
    first = data[:512].split(b"\n", 1)[0].split(b" ")
    if len(first) >= 4 and first[0].isdigit():
        return len(first[1]) in (40, 64, 96, 128) and all(c in b"0123456789abcdefABCDEF" for c in first[1])
    if len(data) < 31:
        return False
    (nlen,) = struct.unpack_from("<I", data, 24)
    return 1 <= nlen <= MAX_TEMPLATE_NAME and data[28:31] == b"ima"


__all__ = ["MAX_TEMPLATE_NAME", "looks_like_ima"]
