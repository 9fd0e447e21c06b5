"""Hash-chained JSON-lines audit log of launch decisions.

Each line is one JSON object. ``prev`` is the ``hash`` of the line before it (64 zeros for
the first line) and ``hash`` is SHA-256 over the canonical JSON (sorted keys, no spaces)
of the record without its ``hash`` field. Changing, removing or reordering any line breaks
the chain from that line on, which ``verify_chain`` reports.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tboot_py.errors import InputError, VerificationError

GENESIS = "0" * 64


def _canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(record: Mapping[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(_canonical(body)).hexdigest()


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    records: int
    error: str | None = None
    line: int | None = None


class AuditChainError(VerificationError):
    """The audit log's hash chain is broken."""


def _last_hash(path: Path) -> str:
    """The hash of the last record; checks the whole chain first (never extend a broken log)."""
    report = check_chain(path)
    if not report.ok:
        raise AuditChainError(f"{path}: refusing to append to a broken audit log: {report.error}")
    if report.records == 0:
        return GENESIS
    with path.open("rb") as f:
        last = f.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    return str(json.loads(last)["hash"])


def append_record(path: Path, record: Mapping[str, Any]) -> dict[str, Any]:
    """Append ``record`` (with ``prev`` and ``hash`` added) under an exclusive lock, fsync'd."""
    # Only the gate's user may write the log, its lock or a directory made for them: a
    # writer could otherwise rewrite the (unkeyed) chain or hold the lock forever.
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = path.with_name(path.name + ".lock")
    with os.fdopen(os.open(lock, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600), "a") as lf:
        fcntl.flock(lf, fcntl.LOCK_EX)
        prev = _last_hash(path) if path.exists() else GENESIS
        full = dict(record)
        full["prev"] = prev
        full["hash"] = record_hash(full)
        line = _canonical(full) + b"\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
    return full


def check_chain(path: Path) -> ChainReport:
    """Check every line's hash and link; never raises for bad content."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ChainReport(True, 0)
    except OSError as e:
        return ChainReport(False, 0, f"cannot read {path}: {e.strerror}")
    prev = GENESIS
    if data and not data.endswith(b"\n"):
        return ChainReport(False, 0, "the last record is incomplete (no newline): a torn write")
    lines = data.split(b"\n")[:-1] if data else []
    for n, raw in enumerate(lines, start=1):
        try:
            rec = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return ChainReport(False, n - 1, f"line {n} is not JSON", n)
        if not isinstance(rec, dict) or not isinstance(rec.get("hash"), str):
            return ChainReport(False, n - 1, f"line {n} has no hash", n)
        if rec.get("prev") != prev:
            return ChainReport(False, n - 1, f"line {n}: chain link broken (prev does not match line {n - 1})", n)
        if record_hash(rec) != rec["hash"]:
            return ChainReport(False, n - 1, f"line {n}: record was modified (hash mismatch)", n)
        prev = rec["hash"]
    return ChainReport(True, len(lines))


def verify_chain(path: Path) -> int:
    """Raise AuditChainError unless the chain is intact; returns the number of records."""
    if not path.exists():
        raise InputError(f"{path}: no such audit log")
    report = check_chain(path)
    if not report.ok:
        raise AuditChainError(f"{path}: {report.error}")
    return report.records
