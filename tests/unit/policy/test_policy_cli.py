"""CLI exit codes: 0 ok, 1 verification failure, 2 bad input; never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli


def make_policy(tmp_path: Path) -> Path:
    pol = tmp_path / "p.toml"
    f = tmp_path / "vmlinuz"
    f.write_bytes(b"k" * 1000)
    assert run_cli("policy", "init", str(pol), "--mode", "continue").rc == 0
    r = run_cli("policy", "add", str(pol), "--component", "kernel", "--file", str(f), "--kind", "file",
                "--label", "6.1", "--expires", "2031-01-01", "--banks", "sha256")
    assert r.rc == 0, r.err
    return pol


def test_sign_verify_exit_codes(tmp_path: Path) -> None:
    pol = make_policy(tmp_path)
    key, other = tmp_path / "k", tmp_path / "o"
    assert run_cli("policy", "keygen", "-o", str(key)).rc == 0
    assert run_cli("policy", "keygen", "--type", "ecdsa-p256", "-o", str(other)).rc == 0
    assert run_cli("policy", "keygen", "-o", str(key)).rc == 2  # refuses to overwrite
    signed = tmp_path / "p.signed.json"
    assert run_cli("policy", "sign", str(pol), "--key", str(key), "-o", str(signed)).rc == 0
    ok = run_cli("policy", "verify", str(signed), "--trust-key", f"{key}.pub", "--json")
    assert ok.rc == 0 and json.loads(ok.out)["verified"] is True
    assert run_cli("policy", "verify", str(signed), "--trust-key", f"{other}.pub", "--trust-key",
                   f"{key}.pub").rc == 0
    wrong = run_cli("policy", "verify", str(signed), "--trust-key", f"{other}.pub")
    assert wrong.rc == 1 and "Traceback" not in wrong.err and "trusted key" in wrong.err
    unsigned = run_cli("policy", "verify", str(pol), "--trust-key", f"{key}.pub")
    assert unsigned.rc == 1 and "not signed" in unsigned.err
    missing = run_cli("policy", "verify", str(tmp_path / "nope"), "--trust-key", f"{key}.pub")
    assert missing.rc == 2 and "cannot read" in missing.err
    badkey = run_cli("policy", "verify", str(signed), "--trust-key", str(pol))
    assert badkey.rc == 2 and "not a PEM public key" in badkey.err


def test_show_and_bad_inputs(tmp_path: Path) -> None:
    pol = make_policy(tmp_path)
    r = run_cli("policy", "show", str(pol), "--json")
    assert r.rc == 0
    doc = json.loads(r.out)["policy"]
    assert doc["mode"] == "continue" and doc["rules"][0]["values"][0]["expires"] == "2031-01-01"
    assert run_cli("policy", "show", str(pol)).rc == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('version = 1\nmode = "sometimes"\n')
    r = run_cli("policy", "show", str(bad))
    assert r.rc == 2 and "mode:" in r.err and "Traceback" not in r.err
    for argv in (["policy", "add", str(pol), "--component", "kernel"],
                 ["policy", "add", str(pol), "--component", "bios", "--file", str(pol)],
                 ["policy", "add", str(pol), "--component", "kernel", "--file", str(pol), "--expires", "soon"],
                 ["policy", "add", str(pol), "--component", "kernel", "--file", str(tmp_path / "none")],
                 ["policy", "init", str(pol)],
                 ["policy", "export-vlp", str(pol), "-o", str(tmp_path / "x.pol")],
                 ["policy", "import-vlp", str(pol), "-o", str(tmp_path / "x.toml")],
                 ["policy", "from-log", str(pol)],
                 ["policy", "predict", "--log", str(pol)],
                 ["policy"]):
        r = run_cli(*argv)
        assert r.rc == 2, (argv, r.rc, r.err)
        assert "Traceback" not in r.err


def test_empty_draft_never_loads_for_evaluation(tmp_path: Path) -> None:
    from tboot_py.errors import PolicyError
    from tboot_py.policy import load_policy

    pol = tmp_path / "draft.toml"
    assert run_cli("policy", "init", str(pol)).rc == 0
    try:
        load_policy(pol)
    except PolicyError as e:
        assert "at least one rule" in str(e)
    else:
        raise AssertionError("an empty policy loaded")
