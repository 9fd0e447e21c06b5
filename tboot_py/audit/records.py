"""Hash-chained JSON-lines audit log of launch decisions, anchored in a TPM PCR.

Each line is one JSON object. ``prev`` is the ``hash`` of the line before it (64 zeros for
the first line) and ``hash`` is SHA-256 over the canonical JSON (sorted keys, no spaces)
of the record without its ``hash`` field. Changing, removing or reordering any line breaks
the chain from that line on, which ``verify_chain`` reports.

The chain alone is unkeyed: whoever can write the file can cut its tail or rewrite it
whole. So the gate also extends each record into a PCR (its ``anchor``: ``{"pcr": N,
"boot": [resetCount, restartCount]}``), as IMA does with PCR 10: the record's hash is the
SHA-256 digest, each other bank gets that bank's hash of the same canonical bytes. A PCR
starts at zero at every TPM reset and only ever extends, so the records of the current TPM
boot fold to the PCR's value (:func:`anchor_value`); a trail cut, emptied or rewritten does
not (:func:`check_anchor`). A head kept elsewhere (a report, a remote log) is checked with
``--expect-head``.

Appends are serialised on ``<log>.lock`` and replace the file atomically
(:func:`tboot_py.fileio.append_atomic`): a full disk or a crash leaves the old log, never a
torn record, and the caller learns that the record was not written.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tboot_py import jsonin
from tboot_py.errors import InputError, VerificationError
from tboot_py.fileio import STDIN, append_atomic, locked, read_file, read_input

GENESIS = "0" * 64
#: An audit log is read whole to check its chain; refuse anything larger.
MAX_AUDIT_LOG = 256 * 2**20
#: The PCR the gate anchors its audit records in unless told otherwise. PCR 15 is an OS PCR
#: (PC Client PFP, 3.3.4: PCRs 8-15 are for the OS) that neither firmware, boot loaders nor
#: IMA (PCR 10) extend; on systems where systemd-pcrextend uses it, choose another.
DEFAULT_ANCHOR_PCR = 15


def printable(obj: Any) -> Any:
    """``obj`` with every string made encodable as UTF-8: names and arguments that are not
    UTF-8 reach Python as lone surrogates (PEP 383), recorded here as ``\\xNN`` escapes (and
    a literal backslash in such a string doubled), so the record is written, not lost."""
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
            return obj
        except UnicodeEncodeError:
            out = []
            for ch in obj:
                o = ord(ch)
                if ch == "\\":
                    out.append("\\\\")
                elif 0xDC80 <= o <= 0xDCFF:
                    out.append(f"\\x{o - 0xDC00:02x}")
                elif 0xD800 <= o <= 0xDFFF:
                    out.append(f"\\u{o:04x}")
                else:
                    out.append(ch)
            return "".join(out)
    if isinstance(obj, Mapping):
        return {printable(k): printable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [printable(v) for v in obj]
    return obj


def canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_body(record: Mapping[str, Any]) -> bytes:
    """The canonical bytes a record's hash (and its anchor digests) are taken over."""
    return canonical({k: v for k, v in record.items() if k != "hash"})


def record_hash(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(record_body(record)).hexdigest()


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    records: int
    error: str | None = None
    line: int | None = None
    head: str = GENESIS
    parsed: tuple[Mapping[str, Any], ...] = field(default=(), repr=False)


class AuditChainError(VerificationError):
    """The audit log's hash chain is broken, or does not match its anchor."""


def check_chain_bytes(data: bytes) -> ChainReport:
    """Check every line's hash and link; never raises for bad content."""
    prev = GENESIS
    if data and not data.endswith(b"\n"):
        return ChainReport(False, 0, "the last record is incomplete (no newline): a torn write")
    lines = data.split(b"\n")[:-1] if data else []
    recs: list[Mapping[str, Any]] = []
    for n, raw in enumerate(lines, start=1):
        try:
            rec = jsonin.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return ChainReport(False, n - 1, f"line {n} is not JSON", n)
        if not isinstance(rec, dict) or not isinstance(rec.get("hash"), str):
            return ChainReport(False, n - 1, f"line {n} has no hash", n)
        if rec.get("prev") != prev:
            return ChainReport(False, n - 1, f"line {n}: chain link broken (prev does not match line {n - 1})", n)
        if record_hash(rec) != rec["hash"]:
            return ChainReport(False, n - 1, f"line {n}: record was modified (hash mismatch)", n)
        prev = rec["hash"]
        recs.append(rec)
    return ChainReport(True, len(lines), head=prev, parsed=tuple(recs))


def read_log(path: Path) -> bytes:
    """The audit log's bytes (b"" when it does not exist yet); InputError for a FIFO, a
    device, a directory or an oversized file."""
    if not os.path.lexists(path):
        return b""
    return read_file(path, "audit log", MAX_AUDIT_LOG)


def check_chain(path: Path) -> ChainReport:
    """:func:`check_chain_bytes` on a file; never raises (an unreadable file is not ok)."""
    try:
        data = read_log(path)
    except InputError as e:
        return ChainReport(False, 0, e.diagnostics())
    return check_chain_bytes(data)


def load_chain(path: Path, expect_head: str | None = None) -> ChainReport:
    """The intact chain of an existing log. InputError when it cannot be read,
    AuditChainError when the chain is broken or its head is not ``expect_head``. ``-`` reads
    standard input."""
    if os.fspath(path) != STDIN and not os.path.lexists(path):
        raise InputError(f"{path}: no such audit log")
    report = check_chain_bytes(read_input(path, "audit log", MAX_AUDIT_LOG))
    if not report.ok:
        raise AuditChainError(f"{path}: {report.error}")
    if expect_head is not None and report.head != expect_head.lower():
        raise AuditChainError(f"{path}: the chain ends at {report.head}, not at the expected head {expect_head} "
                              f"(records were removed, added or rewritten)")
    return report


def verify_chain(path: Path, expect_head: str | None = None) -> int:
    """Raise unless the chain is intact; returns the number of records."""
    return load_chain(path, expect_head).records


def _locked(path: Path) -> AbstractContextManager[None]:
    return locked(path.with_name(path.name + ".lock"), "audit lock")


#: Called with the written record, under the log's lock, to anchor it (extend a PCR).
Anchor = Callable[[Mapping[str, Any]], None]


def append_record(path: Path, record: Mapping[str, Any], anchor: Anchor | None = None) -> dict[str, Any]:
    """Append ``record`` (made printable, with ``prev`` and ``hash``) under an exclusive
    lock; the log is replaced atomically and fsync'd, every byte checked. Then, still under
    the lock, ``anchor(record)`` runs. Raises InputError when the record was not written
    and AuditChainError for a broken chain (never extend one)."""
    # Only the gate's user may write the log, its lock or a directory made for them: a
    # writer could otherwise rewrite the (unkeyed) chain or hold the lock forever.
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise InputError(f"cannot create {path.parent}: {os.strerror(e.errno or 0)}") from e
    with _locked(path):
        old = read_log(path)
        report = check_chain_bytes(old)
        if not report.ok:
            raise AuditChainError(f"{path}: refusing to append to a broken audit log: {report.error}")
        full = dict(printable(dict(record)))
        full["prev"] = report.head
        full["hash"] = record_hash(full)
        append_atomic(path, old, canonical(full) + b"\n", 0o640, what="audit log")
        if anchor is not None:
            anchor(full)
    return full


# ------------------------------------------------------------------ the anchor

def anchor_digests(record: Mapping[str, Any], banks: Sequence[Any]) -> dict[str, bytes]:
    """What anchoring ``record`` extends: each bank's hash of the record's canonical bytes
    (for SHA-256, the record's ``hash``)."""
    body = record_body(record)
    return {b.name: b.digest(body) for b in banks}


def anchored_in(record: Mapping[str, Any], pcr: int, boot: tuple[int, int]) -> bool:
    a = record.get("anchor")
    return isinstance(a, dict) and a.get("pcr") == pcr and a.get("boot") == [boot[0], boot[1]]


def anchor_value(records: Sequence[Mapping[str, Any]], pcr: int, boot: tuple[int, int], bank: Any) -> bytes:
    """The value PCR ``pcr`` of ``bank`` must hold in TPM boot ``boot`` if exactly
    ``records`` were anchored there: zero (PCRs 0-15 reset to zero, PC Client PTP), extended
    with each record anchored in that PCR and boot, in order (TPM 2.0 Part 1, 17.2)."""
    value = bytes(bank.size)
    for rec in records:
        if anchored_in(rec, pcr, boot):
            value = bank.digest(value + anchor_digests(rec, [bank])[bank.name])
    return value


@dataclass(frozen=True)
class AnchorCheck:
    """``ok``: the PCR is the fold of the records. ``pending``: it is the fold of all but
    the last record, which is anchored in this boot: a gate stopped between writing the
    record and extending it (the gate completes that on its next run)."""

    ok: bool
    pending: bool
    expected: bytes
    actual: bytes
    anchored: int


def check_anchor(records: Sequence[Mapping[str, Any]], pcr: int, boot: tuple[int, int], bank: Any,
                 actual: bytes) -> AnchorCheck:
    expected = anchor_value(records, pcr, boot, bank)
    n = sum(1 for r in records if anchored_in(r, pcr, boot))
    if expected == actual:
        return AnchorCheck(True, False, expected, actual, n)
    pending = bool(records) and anchored_in(records[-1], pcr, boot) and \
        anchor_value(records[:-1], pcr, boot, bank) == actual
    return AnchorCheck(False, pending, expected, actual, n)


def anchor_error(path: Path, pcr: int, check: AnchorCheck) -> str:
    if check.pending:
        return (f"{path}: the last record is not yet extended into PCR {pcr} (a gate was stopped between "
                "writing and anchoring it; the next gate run completes it)")
    return (f"{path}: the audit trail does not match its anchor: PCR {pcr} is {check.actual.hex()}, but the "
            f"{check.anchored} record(s) anchored in this TPM boot give {check.expected.hex()} "
            f"(records were removed, emptied or rewritten, or something else extends PCR {pcr})")


def _anchor_bank(tpm: Any) -> Any:
    banks = tpm.banks()
    if not banks:
        raise InputError("the TPM has no active PCR bank to anchor the audit log in")
    return next((b for b in banks if b.name == "sha256"), banks[0])


def check_tpm_anchor(records: Sequence[Mapping[str, Any]], tpm: Any, pcr: int) -> AnchorCheck:
    """:func:`check_anchor` against PCR ``pcr`` read from ``tpm`` in its current boot."""
    from tboot_py.tpm import check_pcr_index

    check_pcr_index(pcr)
    bank = _anchor_bank(tpm)
    boot = tpm.boot_counters()
    actual = tpm.read_pcrs([pcr], [bank])[bank.name][pcr]
    return check_anchor(records, pcr, boot, bank, actual)


def verify_tpm_anchor(path: Path, tpm: Any, pcr: int = DEFAULT_ANCHOR_PCR,
                      expect_head: str | None = None) -> tuple[ChainReport, AnchorCheck]:
    """Check the chain, then its anchor: AuditChainError unless PCR ``pcr`` is exactly
    the fold of the records anchored in the TPM's current boot."""
    report = load_chain(path, expect_head)
    check = check_tpm_anchor(report.parsed, tpm, pcr)
    if not check.ok:
        raise AuditChainError(anchor_error(path, pcr, check))
    return report, check


def tpm_anchor(tpm: Any, pcr: int) -> tuple[dict[str, Any], Anchor]:
    """The ``anchor`` field for a new record and the callback that extends it into ``pcr``."""
    boot = tpm.boot_counters()
    banks = tpm.banks()

    def extend(record: Mapping[str, Any]) -> None:
        tpm.extend(pcr, anchor_digests(record, banks))

    return {"pcr": pcr, "boot": [boot[0], boot[1]]}, extend
