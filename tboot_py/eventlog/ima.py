"""Linux IMA measurement lists (PCR 10): ASCII and binary, templates ima, ima-ng, ima-sig,
ima-buf (and ima-modsig), parsed with bounds checks into a sibling of the event model.

Layout (Linux Documentation/security/IMA-templates.rst and the kernel's ima_fs.c):

* binary record: pcr u32, template digest (20 bytes, SHA-1), template-name length u32,
  name, then (except for the ``ima`` template) template-data length u32 and the data: each
  field as u32 length + bytes. The ``ima`` template's data is the 20-byte file digest and
  the file name as u32 length + bytes.
* ASCII line: ``<pcr> <template hex digest> <template name> <fields...>``.

What is extended (per bank) is the hash of the template data as the kernel hashes it: for
``ima`` the file digest followed by the name zero-padded to 256 bytes; for other templates
every field as u32 length + bytes. A violation (all-zero template digest) extends all-FF.
Integers are little-endian (x86, or ``ima_canonical_fmt``). Only ParseError escapes.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from tboot_py import algorithms
from tboot_py.algorithms import HashAlg
from tboot_py.errors import ParseError, UnknownAlgorithmError
from tboot_py.eventlog.sniff import MAX_TEMPLATE_NAME

IMA_PCR = 10
_NAME_LEN_MAX = 255  # IMA_EVENT_NAME_LEN_MAX
MAX_TEMPLATE_DATA = 1 << 20
MAX_FIELDS = 16
KNOWN_TEMPLATES: dict[str, tuple[str, ...]] = {
    "ima": ("d", "n"),
    "ima-ng": ("d-ng", "n-ng"),
    "ima-sig": ("d-ng", "n-ng", "sig"),
    "ima-buf": ("d-ng", "n-ng", "buf"),
    "ima-modsig": ("d-ng", "n-ng", "sig", "d-modsig", "modsig"),
}


@dataclass(frozen=True, slots=True)
class ImaEvent:
    """One IMA measurement. ``offset`` is the byte offset (binary) or the line number (ASCII)."""

    seq: int
    offset: int
    pcr: int
    template_hash: bytes  # as listed (SHA-1, or the bank of an ascii_runtime_measurements_<bank> file)
    template_name: str
    #: The template fields as recorded: ``(field id, bytes)``.
    fields: tuple[tuple[str, bytes], ...]
    file_hash_alg: str | None
    file_hash: bytes | None
    file_name: str | None
    signature: bytes | None = None
    buf: bytes | None = None

    @property
    def is_violation(self) -> bool:
        return not any(self.template_hash)

    def template_data(self) -> bytes:
        """The bytes the kernel hashes into the template digest."""
        if self.template_name == "ima":
            d = self.fields[0][1] if self.fields else b""
            name = self.fields[1][1] if len(self.fields) > 1 else b""
            return d + name[:_NAME_LEN_MAX + 1].ljust(_NAME_LEN_MAX + 1, b"\x00")
        return b"".join(struct.pack("<I", len(v)) + v for _, v in self.fields)


@dataclass(frozen=True, slots=True)
class ImaLog:
    events: tuple[ImaEvent, ...]
    ascii: bool
    source: str | None = None


def _d_ng(v: bytes) -> tuple[str | None, bytes]:
    """``<algo>:\\0<digest>`` (d-ng), or a bare SHA-1/MD5 digest."""
    i = v.find(b":\x00")
    if 0 < i <= 16:
        try:
            return v[:i].decode("ascii"), v[i + 2:]
        except UnicodeDecodeError:
            pass
    return ("sha1" if len(v) == 20 else None), v


def _name(v: bytes) -> str:
    return v.split(b"\x00", 1)[0].decode("utf-8", "replace")


def _event(seq: int, off: int, pcr: int, thash: bytes, tname: str, fields: list[tuple[str, bytes]]) -> ImaEvent:
    alg: str | None = None
    digest: bytes | None = None
    fname: str | None = None
    sig = buf = None
    for fid, v in fields:
        if fid == "d":
            alg, digest = "sha1", v
        elif fid == "d-ng":
            alg, digest = _d_ng(v)
        elif fid in ("n", "n-ng"):
            fname = _name(v)
        elif fid == "sig":
            sig = v
        elif fid == "buf":
            buf = v
    return ImaEvent(seq, off, pcr, thash, tname, tuple(fields), alg, digest, fname, sig, buf)


def parse_ima(data: bytes | str, source: str | None = None) -> ImaLog:
    """Parse an IMA list; ASCII when it looks like text, else binary. Only ParseError escapes."""
    try:
        if isinstance(data, str):
            return _parse_ascii(data, source)
        if data[:1].isdigit() and b"\x00" not in data[:64]:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ParseError("IMA ASCII list is not UTF-8", e.start, source) from e
            return _parse_ascii(text, source)
        return _parse_binary(bytes(data), source)
    except ParseError as e:
        if e.source is None:
            e.source = source
        raise
    except Exception as e:  # never let another exception type escape a parser
        raise ParseError(f"internal IMA parser failure: {type(e).__name__}", 0, source) from e


def _parse_binary(buf: bytes, source: str | None) -> ImaLog:
    n = len(buf)
    off = 0
    events: list[ImaEvent] = []
    if n == 0:
        raise ParseError("empty IMA list", 0, source)
    while off < n:
        rec = off
        if n - off < 28:
            raise ParseError(f"truncated IMA record header: {n - off} bytes", off, source)
        pcr, thash, nlen = struct.unpack_from("<I20sI", buf, off)
        off += 28
        if nlen == 0 or nlen > MAX_TEMPLATE_NAME or nlen > n - off:
            raise ParseError(f"template name length {nlen}", off - 4, source)
        try:
            tname = buf[off:off + nlen].decode("ascii")
        except UnicodeDecodeError as e:
            raise ParseError("template name is not ASCII", off, source) from e
        off += nlen
        fields: list[tuple[str, bytes]] = []
        if tname == "ima":
            if n - off < 24:
                raise ParseError("truncated ima template data", off, source)
            d = buf[off:off + 20]
            (ln,) = struct.unpack_from("<I", buf, off + 20)
            off += 24
            if ln > _NAME_LEN_MAX + 1 or ln > n - off:
                raise ParseError(f"ima file name length {ln}", off - 4, source)
            fields = [("d", d), ("n", buf[off:off + ln])]
            off += ln
        else:
            if n - off < 4:
                raise ParseError("truncated template data length", off, source)
            (tlen,) = struct.unpack_from("<I", buf, off)
            off += 4
            if tlen > MAX_TEMPLATE_DATA or tlen > n - off:
                raise ParseError(f"template data length {tlen} exceeds the {n - off} bytes left", off - 4, source)
            end = off + tlen
            ids = KNOWN_TEMPLATES.get(tname)
            i = 0
            while off < end:
                if end - off < 4:
                    raise ParseError("truncated template field length", off, source)
                (flen,) = struct.unpack_from("<I", buf, off)
                off += 4
                if flen > end - off:
                    raise ParseError(f"template field length {flen} exceeds the template data", off - 4, source)
                if i >= MAX_FIELDS:
                    raise ParseError("too many template fields", off, source)
                fid = ids[i] if ids is not None and i < len(ids) else f"field{i}"
                fields.append((fid, buf[off:off + flen]))
                off += flen
                i += 1
            if ids is not None and len(fields) != len(ids):
                raise ParseError(f"{tname} record has {len(fields)} fields, expected {len(ids)}", rec, source)
        events.append(_event(len(events), rec, pcr, thash, tname, fields))
    return ImaLog(tuple(events), False, source)


def _ascii_field(fid: str, text: str) -> bytes:
    """A trailing template field as the kernel prints it: hex, except a digest-with-algorithm
    field (d-modsig), printed ``<algo>:<hex>`` and stored ``<algo>:\\0<digest>``
    (ima_template_lib.c, DATA_FMT_DIGEST_WITH_ALGO); an empty field prints nothing."""
    if fid == "d-modsig" and text:
        alg, sep, hexd = text.partition(":")
        if not sep or not alg:
            raise ValueError("digest lacks an algorithm prefix")
        return alg.encode("ascii") + b":\x00" + bytes.fromhex(hexd)
    return bytes.fromhex(text)


def _parse_ascii(text: str, source: str | None) -> ImaLog:
    events: list[ImaEvent] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(" ")
        if len(parts) < 4:
            raise ParseError(f"line {lineno}: too few fields", lineno, source)
        try:
            pcr = int(parts[0])
            thash = bytes.fromhex(parts[1])
        except ValueError as e:
            raise ParseError(f"line {lineno}: bad PCR or template digest", lineno, source) from e
        if not 0 <= pcr <= 0xFFFFFFFF or len(thash) not in (20, 32, 48, 64):
            raise ParseError(f"line {lineno}: bad PCR or template digest size", lineno, source)
        tname = parts[2]
        rest = parts[3:]
        try:
            if tname == "ima":
                fields = [("d", bytes.fromhex(rest[0])), ("n", " ".join(rest[1:]).encode())]
            elif tname in KNOWN_TEMPLATES:
                alg, _, hexd = rest[0].partition(":")
                if not hexd:
                    raise ParseError(f"line {lineno}: file digest lacks an algorithm prefix", lineno, source)
                dng = alg.encode() + b":\x00" + bytes.fromhex(hexd)
                ids = KNOWN_TEMPLATES[tname]
                tail = rest[1:]
                extra: list[bytes] = []
                if len(ids) > 2:
                    # Trailing hex fields (sig, buf...) follow the name; the name may contain spaces.
                    k = len(ids) - 2
                    if len(tail) < k + 1:
                        tail = tail + [""] * (k + 1 - len(tail))
                    extra = [_ascii_field(fid, x) for fid, x in zip(ids[2:], tail[len(tail) - k:], strict=True)]
                    tail = tail[:len(tail) - k]
                name = " ".join(tail).encode() + b"\x00"
                fields = [("d-ng", dng), ("n-ng", name), *zip(ids[2:], extra, strict=True)]
            else:
                raise ParseError(f"line {lineno}: template {tname!r} cannot be read from ASCII", lineno, source)
        except (ValueError, IndexError) as e:
            raise ParseError(f"line {lineno}: bad template fields", lineno, source) from e
        events.append(_event(len(events), lineno, pcr, thash, tname, fields))
    if not events:
        raise ParseError("empty IMA list", 0, source)
    return ImaLog(tuple(events), True, source)


def replay_ima(log: ImaLog, banks: Iterable[str | HashAlg] = ("sha1", "sha256")) -> dict[str, dict[int, bytes]]:
    """Replay IMA into PCR values per bank (``{bank: {pcr: value}}``).

    The SHA-1 bank extends the listed template digests. Other banks extend the bank's hash of
    the template data (kernel 5.8 and later), or all-FF for a violation.
    """
    out: dict[str, dict[int, bytes]] = {}
    for b in banks:
        alg = b if isinstance(b, HashAlg) else algorithms.by_name(b)
        regs: dict[int, bytes] = {}
        for e in log.events:
            if e.is_violation:
                d = b"\xff" * alg.size
            elif alg.name == "sha1" and len(e.template_hash) == 20:
                d = e.template_hash
            else:
                d = alg.digest(e.template_data())
            old = regs.get(e.pcr, b"\x00" * alg.size)
            regs[e.pcr] = hashlib.new(alg.hashlib_name, old + d).digest()
        out[alg.name] = regs
    return out


def template_hash_ok(e: ImaEvent) -> bool:
    """Whether the listed template digest is the hash of the template data (violations pass)."""
    if e.is_violation:
        return True
    for alg in (algorithms.SHA1, algorithms.SHA256, algorithms.SHA384, algorithms.SHA512):
        if alg.size == len(e.template_hash):
            return alg.digest(e.template_data()) == e.template_hash
    return False


#: The PCRs the boot_aggregate covers: 0-7 for a SHA-1 aggregate, 0-9 for other hashes
#: (Linux security/integrity/ima/ima_crypto.c, ima_calc_boot_aggregate_tfm, since 5.8).
def boot_aggregate_pcrs(alg: HashAlg) -> range:
    return range(8) if alg.name == "sha1" else range(10)


def boot_aggregate(pcrs: dict[int, bytes], alg: HashAlg) -> bytes:
    """H(PCR 0 || ... || PCR 7 [|| PCR 8 || PCR 9]) in ``alg``'s bank; a PCR missing from
    ``pcrs`` (never extended) is all zero."""
    h = hashlib.new(alg.hashlib_name)
    for i in boot_aggregate_pcrs(alg):
        h.update(pcrs.get(i, b"\x00" * alg.size))
    return h.digest()


@dataclass(frozen=True, slots=True)
class BootAggregateCheck:
    """The IMA list's boot_aggregate entry against the firmware PCRs. ``ok`` is False when the
    entry is missing, its hash algorithm unknown, or the bank absent from ``firmware_pcrs``."""

    ok: bool
    bank: str | None
    listed: bytes | None
    computed: bytes | None
    reason: str


def check_boot_aggregate(log: ImaLog, firmware_pcrs: dict[str, dict[int, bytes]]) -> BootAggregateCheck:
    """Check the first ``boot_aggregate`` entry against PCRs 0-9 of ``firmware_pcrs``
    (``{bank: {pcr: value}}``, e.g. a replayed firmware log). Never raises."""
    entry = next((e for e in log.events if e.file_name == "boot_aggregate"), None)
    if entry is None or entry.file_hash is None or entry.file_hash_alg is None:
        return BootAggregateCheck(False, None, None, None, "the IMA list has no boot_aggregate entry")
    try:
        alg = algorithms.by_name(entry.file_hash_alg)
    except UnknownAlgorithmError:
        return BootAggregateCheck(False, entry.file_hash_alg, entry.file_hash, None,
                                  f"boot_aggregate uses an unknown hash {entry.file_hash_alg!r}")
    regs = firmware_pcrs.get(alg.name)
    if regs is None:
        return BootAggregateCheck(False, alg.name, entry.file_hash, None,
                                  f"the firmware PCRs have no {alg.name} bank for the boot_aggregate")
    computed = boot_aggregate(regs, alg)
    span = boot_aggregate_pcrs(alg)
    if computed != entry.file_hash:
        return BootAggregateCheck(False, alg.name, entry.file_hash, computed,
                                  f"boot_aggregate {entry.file_hash.hex()} is not the {alg.name} hash of the firmware "
                                  f"PCRs {span[0]}-{span[-1]} ({computed.hex()})")
    return BootAggregateCheck(True, alg.name, entry.file_hash, computed,
                              f"boot_aggregate matches the firmware PCRs {span[0]}-{span[-1]} ({alg.name})")
