"""Audit-log reports as JSON and print-ready HTML, and the report/recheck argument rules."""

from __future__ import annotations

import json
from pathlib import Path

from tboot_py.audit.records import append_record
from tests.conftest import run_cli


def _log(tmp_path: Path) -> Path:
    p = tmp_path / "audit.jsonl"
    m = {"file": "vmlinuz", "kind": "pe", "size": 3, "digests": {"sha256": "bb" * 32}}
    append_record(p, {"time": "2026-11-24T10:00:00+00:00", "decision": "allow", "exit_code": 0,
                      "policy_sha256": "cc" * 32, "reasons": ["policy satisfied"], "measurements": [m]})
    append_record(p, {"time": "2026-11-24T11:00:00+00:00", "decision": "allow", "exit_code": 0, "dry_run": True,
                      "reasons": ["dry run"], "measurements": []})
    return p


def test_json_report_states_what_it_covers_and_how_to_recheck(tmp_path: Path) -> None:
    p = _log(tmp_path)
    head = json.loads(p.read_text().splitlines()[-1])["hash"]
    r = run_cli("audit", "report", str(p), "--format", "json")
    assert r.rc == 0, r.err
    out = json.loads(r.out)
    assert out["kind"] == "audit-log" and out["head"] == head and out["source"] == str(p)
    assert out["policies"] == ["cc" * 32] and len(out["records"]) == 2
    assert out["recheck"] == f"tboot-py audit verify {p} --expect-head {head}"
    assert out["first_time"] == "2026-11-24T10:00:00+00:00"
    # -o x.json picks JSON.
    assert run_cli("audit", "report", str(p), "-o", str(tmp_path / "r.json")).rc == 0
    assert json.loads((tmp_path / "r.json").read_text())["head"] == head


def test_print_report_keeps_digests_whole(tmp_path: Path) -> None:
    r = run_cli("audit", "report", str(_log(tmp_path)), "--format", "print")
    assert r.rc == 0, r.err
    assert "@page" in r.out and "break-all" not in r.out and "white-space: nowrap" in r.out
    assert "bb" * 32 in r.out


def test_report_and_recheck_arguments(tmp_path: Path) -> None:
    log = _log(tmp_path)
    assert run_cli("audit", "report").rc == 2
    assert run_cli("audit", "report", str(log), "--host", "h").rc == 2
    assert run_cli("audit", "report", "--db", str(tmp_path / "none.sqlite"), "--fleet").rc == 2
    assert run_cli("audit", "report", "--db", str(log), "--fleet", "--host", "h").rc == 2
    not_db = run_cli("audit", "recheck", "--db", str(log))
    assert not_db.rc == 2 and "Traceback" not in not_db.err, not_db.err
    assert run_cli("audit", "recheck", "--db", str(tmp_path / "none.sqlite")).rc == 2
