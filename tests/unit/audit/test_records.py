from __future__ import annotations

import json
from pathlib import Path

import pytest

from tboot_py.audit.records import AuditChainError, append_record, check_chain, verify_chain


def _write3(p: Path) -> None:
    for i in range(3):
        append_record(p, {"decision": "allow" if i % 2 else "deny", "n": i})


def test_chain_links_and_verifies(tmp_path: Path) -> None:
    p = tmp_path / "audit.jsonl"
    _write3(p)
    lines = [json.loads(x) for x in p.read_text().splitlines()]
    assert [r["n"] for r in lines] == [0, 1, 2]
    assert lines[0]["prev"] == "0" * 64
    assert lines[1]["prev"] == lines[0]["hash"] and lines[2]["prev"] == lines[1]["hash"]
    assert verify_chain(p) == 3


@pytest.mark.parametrize("attack", ["modify", "delete", "reorder", "truncate"])
def test_tampering_is_detected(tmp_path: Path, attack: str) -> None:
    p = tmp_path / "audit.jsonl"
    _write3(p)
    lines = p.read_text().splitlines(keepends=True)
    if attack == "modify":
        lines[1] = lines[1].replace('"deny"', '"allow"').replace('"allow"', '"allow "', 1)
    elif attack == "delete":
        del lines[1]
    elif attack == "reorder":
        lines[0], lines[1] = lines[1], lines[0]
    else:
        lines[-1] = lines[-1][:10]
    p.write_text("".join(lines))
    assert not check_chain(p).ok
    with pytest.raises(AuditChainError):
        verify_chain(p)
    with pytest.raises(AuditChainError):
        append_record(p, {"decision": "allow"})


def test_cli_verify_and_show(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    p = tmp_path / "audit.jsonl"
    _write3(p)
    ok = run_cli("audit", "verify", str(p), "--json")
    assert ok.rc == 0 and json.loads(ok.out) == {"ok": True, "records": 3}
    shown = run_cli("audit", "show", str(p), "--json")
    assert [r["n"] for r in json.loads(shown.out)["records"]] == [0, 1, 2]
    p.write_text(p.read_text().replace('"n":1', '"n":7'))
    bad = run_cli("audit", "verify", str(p))
    assert bad.rc == 1 and "line 2" in bad.err
    assert run_cli("audit", "verify", str(tmp_path / "missing")).rc == 2


def test_new_audit_log_is_not_writable_by_others_whatever_the_umask(tmp_path: Path) -> None:
    import os
    import stat

    path = tmp_path / "new-dir" / "audit.jsonl"
    old = os.umask(0)
    try:
        append_record(path, {"decision": "deny"})
    finally:
        os.umask(old)
    for p in (path.parent, path, path.with_name(path.name + ".lock")):
        mode = stat.S_IMODE(p.stat().st_mode)
        assert not mode & (stat.S_IWOTH | stat.S_IWGRP), (p, oct(mode))
