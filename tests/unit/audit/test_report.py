from __future__ import annotations

import json
from pathlib import Path

from tboot_py.audit.records import append_record
from tests.conftest import run_cli


def _log(tmp_path: Path) -> Path:
    p = tmp_path / "audit.jsonl"
    m = {"file": "vmlinuz", "kind": "pe", "size": 3, "digests": {"sha1": "aa" * 20, "sha256": "bb" * 32}}
    append_record(p, {"time": "2026-11-24T10:00:00+00:00", "decision": "allow", "exit_code": 0, "dry_run": False,
                      "policy_sha256": "cc" * 32, "reasons": ["policy satisfied"], "measurements": [m]})
    append_record(p, {"time": "2026-11-24T11:00:00+00:00", "decision": "deny", "exit_code": 1, "dry_run": True,
                      "policy_sha256": "dd" * 32, "reasons": ["initrd <script>alert(1)</script> | mismatch"],
                      "measurements": []})
    return p


def test_html_report_states_chain_head_counts_and_escapes(tmp_path: Path) -> None:
    p = _log(tmp_path)
    head = json.loads(p.read_text().splitlines()[-1])["hash"]
    out = tmp_path / "report.html"
    r = run_cli("audit", "report", str(p), "-o", str(out))
    assert r.rc == 0, r.err
    html = out.read_text()
    assert head in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert "bb" * 32 in html and "cc" * 32 in html and "dd" * 32 in html
    assert '<td class="allow">1</td>' in html and '<td class="deny">1</td>' in html
    assert "2026-11-24T10:00:00+00:00 to 2026-11-24T11:00:00+00:00" in html


def test_markdown_report(tmp_path: Path) -> None:
    r = run_cli("audit", "report", str(_log(tmp_path)), "--format", "md")
    assert r.rc == 0, r.err
    rows = [ln for ln in r.out.splitlines() if ln.startswith("| 1 |") or ln.startswith("| 2 |")]
    assert len(rows) == 2
    assert "deny (dry run)" in rows[1] and "\\|" in rows[1]  # a reason's pipe cannot break the table


def test_no_report_from_a_broken_chain(tmp_path: Path) -> None:
    p = _log(tmp_path)
    p.write_text(p.read_text().replace('"deny"', '"allow"'))
    out = tmp_path / "r.html"
    r = run_cli("audit", "report", str(p), "-o", str(out))
    assert r.rc == 1 and not out.exists()
