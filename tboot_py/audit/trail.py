"""An audit log summarised for display: chain state, head, the head's anchor, decisions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tboot_py.audit.records import check_chain
from tboot_py.audit.report import _normalise

#: The dashboard lists at most this many of the latest decisions of a log.
SHOWN_RECORDS = 200


def trail_summary(path: Path) -> dict[str, Any]:
    """Never raises: a missing, unreadable or broken log is reported as such."""
    rep = check_chain(path)
    recs = rep.parsed
    anchor = recs[-1].get("anchor") if recs else None
    norm = [_normalise(r) for r in recs]
    return {
        "path": str(path), "exists": os.path.lexists(path), "ok": rep.ok, "error": rep.error,
        "records": rep.records, "head": rep.head,
        # The PCR and TPM boot (resetCount, restartCount) the head record was extended into.
        "anchor": anchor if isinstance(anchor, dict) else None,
        "dry_runs": sum(1 for r in norm if r["dry_run"]),
        "launches": sum(1 for r in norm if r["decision"] == "allow" and not r["dry_run"]),
        "denied": sum(1 for r in norm if r["decision"] != "allow"),
        "decisions": [{**n, "hash": str(r.get("hash", "")), "policy_sha256": r.get("policy_sha256")}
                      for n, r in list(zip(norm, recs, strict=True))[-SHOWN_RECORDS:]][::-1],
    }
