"""An audit log summarised for display: chain state, head, the last record's anchor, decisions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tboot_py.audit.records import GENESIS, check_chain
from tboot_py.audit.report import _normalise

#: The dashboard lists at most this many of the latest decisions of a log.
SHOWN_RECORDS = 200


def trail_summary(path: Path) -> dict[str, Any]:
    """Never raises: a missing or broken log is reported as such."""
    rep = check_chain(path)
    out: dict[str, Any] = {"path": str(path), "ok": rep.ok, "error": rep.error, "records": rep.records,
                           "head": GENESIS, "anchor": None, "decisions": [], "dry_runs": 0, "launches": 0,
                           "denied": 0, "exists": path.exists()}
    if not rep.ok or not rep.records:
        return out
    try:
        recs = [json.loads(line) for line in path.read_text().splitlines()]
    except (OSError, ValueError) as e:
        return {**out, "ok": False, "error": str(e)}
    out["head"] = str(recs[-1].get("hash", GENESIS))
    anchor = recs[-1].get("anchor")
    out["anchor"] = anchor if isinstance(anchor, dict) else None
    norm = [_normalise(r) for r in recs]
    out["dry_runs"] = sum(1 for r in norm if r["dry_run"])
    out["launches"] = sum(1 for r in norm if r["decision"] == "allow" and not r["dry_run"])
    out["denied"] = sum(1 for r in norm if r["decision"] != "allow")
    out["decisions"] = [{**n, "hash": str(r.get("hash", "")), "policy_sha256": r.get("policy_sha256")}
                        for n, r in list(zip(norm, recs, strict=True))[-SHOWN_RECORDS:]][::-1]
    return out
