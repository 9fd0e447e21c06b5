"""The extend journal: PCR extends and the event log stay in step across crashes.

A PCR extend and a log append cannot be one atomic step, and a process can die between
them (``kill -9``, a power cut). Then the PCRs are ahead of the log, the log no longer
replays, and every later launch is denied until the TPM resets. So, under the log's lock:

1. the intent is written and fsynced first, as ``<log>.journal``: the TPM boot (resetCount,
   restartCount), the log's length, the values of the PCRs about to move, and the events;
2. the PCRs are extended, one event at a time (each TPM2_PCR_Extend covers every bank at
   once: TPM 2.0 Part 3, 22.2);
3. the events are appended to the log (atomically), and the journal is removed.

A journal left behind is settled by the next run, under the same lock, before it touches
anything (:func:`recover`): in another TPM boot it is void (the PCRs restarted); if the log
already holds the events, only the journal is removed; otherwise the PCRs are read and the
number of events already extended is found by recomputing the PCRs from the recorded
values, and exactly those events are appended (none: rolled back). The log then replays to
the TPM again. A state that matches no prefix (something else extended those PCRs) is set
aside and reported; the replay then denies, as it must.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tboot_py.algorithms import HashAlg
from tboot_py.errors import InputError
from tboot_py.eventlog.write import NewEvent, append_events_locked
from tboot_py.fileio import fsync_dir, read_file, write_atomic

FORMAT = "tboot-py-journal/1"
_MAX_JOURNAL = 64 * 2**20

#: Test hook: ``TBOOT_PY_CRASH_AT=<point>`` kills the process with SIGKILL at that point, so
#: tests can stop the gate at each step between sealing and exec (never set in production).
CRASH_ENV = "TBOOT_PY_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def journal_path(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + ".journal")


@dataclass(frozen=True)
class Intent:
    boot: tuple[int, int]
    log_size: int
    before: dict[str, dict[int, bytes]]
    events: tuple[NewEvent, ...]

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "boot": list(self.boot), "log_size": self.log_size,
                "before": {b: {str(i): v.hex() for i, v in regs.items()} for b, regs in self.before.items()},
                "events": [{"pcr": e.pcr, "type": e.event_type, "data": e.data.hex(),
                            "digests": {b: d.hex() for b, d in e.digests.items()}} for e in self.events]}

    @classmethod
    def from_json(cls, obj: Any) -> Intent:
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise ValueError("not a tboot-py journal")
        boot = obj["boot"]
        return cls((int(boot[0]), int(boot[1])), int(obj["log_size"]),
                   {str(b): {int(i): bytes.fromhex(v) for i, v in regs.items()} for b, regs in obj["before"].items()},
                   tuple(NewEvent(int(e["pcr"]), int(e["type"]),
                                  {str(b): bytes.fromhex(d) for b, d in e["digests"].items()},
                                  bytes.fromhex(e["data"])) for e in obj["events"]))


def _log_size(log_path: Path) -> int:
    try:
        return os.stat(log_path).st_size
    except FileNotFoundError:
        return 0
    except OSError as e:
        raise InputError(f"cannot access event log {log_path}: {os.strerror(e.errno or 0)}") from e


def write_intent(tpm: Any, log_path: Path, events: Sequence[NewEvent], banks: Sequence[HashAlg]) -> Intent:
    """Step 1: record what is about to be extended (written and fsynced)."""
    pcrs = sorted({e.pcr for e in events})
    before = tpm.read_pcrs(pcrs, banks)
    intent = Intent(tpm.boot_counters(), _log_size(log_path), {b: dict(r) for b, r in before.items()},
                    tuple(events))
    write_atomic(journal_path(log_path), json.dumps(intent.to_json()).encode(), 0o600, what="extend journal")
    return intent


def finish(log_path: Path) -> None:
    """Step 3 done: the journal goes."""
    j = journal_path(log_path)
    try:
        os.unlink(j)
        fsync_dir(j.parent)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise InputError(f"cannot remove the extend journal {j}: {os.strerror(e.errno or 0)}") from e


def _fold(intent: Intent, k: int, banks: Sequence[HashAlg]) -> dict[str, dict[int, bytes]]:
    """The PCR values after the first ``k`` events (TPM 2.0 Part 1, 17.2: new = H(old || d))."""
    out = {b.name: dict(intent.before.get(b.name, {})) for b in banks}
    for e in intent.events[:k]:
        for b in banks:
            out[b.name][e.pcr] = b.digest(out[b.name][e.pcr] + e.digests[b.name])
    return out


def _set_aside(j: Path) -> Path:
    bad = j.with_name(j.name + ".unresolved")
    with contextlib.suppress(OSError):
        os.replace(j, bad)
        fsync_dir(j.parent)
    return bad


def recover(tpm: Any, log_path: Path, banks: Sequence[HashAlg]) -> str | None:
    """Settle a journal left by a run that died (the caller holds the log's lock).
    Returns what was done, or None when there was nothing to do."""
    j = journal_path(log_path)
    if not os.path.lexists(j):
        return None
    try:
        intent = Intent.from_json(json.loads(read_file(j, "extend journal", _MAX_JOURNAL)))
        names = {b.name for b in banks}
        if any(set(e.digests) != names for e in intent.events) or set(intent.before) != names:
            raise ValueError("the journal's banks are not the TPM's")
    except (InputError, ValueError, KeyError, TypeError, IndexError) as e:
        bad = _set_aside(j)
        return f"an unreadable extend journal was set aside as {bad} ({e})"
    if intent.boot != tpm.boot_counters():
        finish(log_path)
        return "a journal from an earlier TPM boot was discarded (the PCRs restarted since)"
    size = _log_size(log_path)
    if size > intent.log_size:
        finish(log_path)  # the append happened: only the journal was left
        return "an interrupted run had extended and logged its measurements; its journal was removed"
    if size < intent.log_size:
        bad = _set_aside(j)
        return f"the event log shrank since an interrupted run; its journal was set aside as {bad}"
    pcrs = sorted({e.pcr for e in intent.events})
    now = tpm.read_pcrs(pcrs, banks)
    current = {b.name: {i: now[b.name][i] for i in pcrs} for b in banks}
    n = len(intent.events)
    for k in range(n, -1, -1):
        if _fold(intent, k, banks) == current:
            if k:
                append_events_locked(log_path, intent.events[:k], banks)
            finish(log_path)
            if k == 0:
                return "an interrupted run had extended nothing: rolled back (nothing to log)"
            return (f"an interrupted run had extended {k} of {n} measurement(s) without logging them: "
                    "they were appended to the event log, which replays again")
    bad = _set_aside(j)
    return (f"an interrupted run left PCRs {pcrs} in a state its journal cannot explain (something else "
            f"extended them); the journal was set aside as {bad} and the log will not replay until the TPM resets")
