"""Every subcommand, given bad arguments, exits with the README's code (2: usage or input
error; 1: denied or not verified) and one line on stderr, never a traceback."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from tboot_py._cli import build_parser
from tests.conftest import run_cli

NO_TPM = "swtpm:host=127.0.0.1,port=1"
NONCE = "11" * 16


def _leaves() -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            out.append(path)
        for a in subs:
            for name, sp in a.choices.items():
                walk(sp, (*path, name))

    walk(build_parser(), ())
    return out


LEAVES = _leaves()


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    if lines and lines[0].startswith("DENIED (exit"):  # the gate: its verdict, then one reason
        lines = [ln.strip() for ln in lines[1:]]
    lines = [ln for ln in lines if not ln.startswith(("usage:", " "))]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("path", LEAVES, ids=[" ".join(p) for p in LEAVES])
def test_every_subcommand_refuses_an_unknown_option_with_exit_2(path: tuple[str, ...]) -> None:
    r = run_cli(*path, "--no-such-option")
    assert r.rc == 2, (path, r.rc, r.err)
    assert "error:" in _one_error_line(r.err)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad-inputs")
    kernel = d / "vmlinuz"
    kernel.write_bytes(b"k" * 100)
    policy = d / "policy.toml"
    assert run_cli("policy", "init", str(policy)).rc == 0
    dup = d / "dup.json"
    dup.write_text('{"version": 1, "mode": "halt", "mode": "nonfatal", "rules": []}')
    arabic = d / "arabic.toml"
    arabic.write_text('version = 1\n[[rules]]\ntype = "pcrs"\n[rules.values.sha256]\n'
                      f'"\u0661\u0660" = "{"ab" * 32}"\n')
    badkey = d / "badkey.toml"
    badkey.write_text('version = 1\n[[rules]]\ntype = "pcrs"\n[rules.values.sha256]\n'
                      f'"x" = "{"ab" * 32}"\n')
    pcrs_dup = d / "pcrs-dup.json"
    pcrs_dup.write_text('{"sha256": {"0": "' + "00" * 32 + '", "0": "' + "11" * 32 + '"}}')
    pcrs_arabic = d / "pcrs-arabic.json"
    pcrs_arabic.write_text('{"sha256": {"\u0660": "' + "00" * 32 + '"}}')
    evidence_dup = d / "evidence-dup.json"
    evidence_dup.write_text('{"format": "tboot-py-evidence/1", "format": "x"}')
    policy1 = d / "policy1.toml"
    assert run_cli("policy", "init", str(policy1)).rc == 0
    assert run_cli("policy", "add", str(policy1), "--component", "kernel", "--file", str(kernel)).rc == 0
    from tboot_py.algorithms import SHA256
    from tboot_py.eventlog.write import NewEvent, encode_log

    log = d / "tiny.log"
    log.write_bytes(encode_log([NewEvent(9, 13, {"sha256": bytes(32)}, b"x")], [SHA256]))
    audit = d / "audit.jsonl"
    from tboot_py.audit.records import append_record

    append_record(audit, {"decision": "deny"})
    return {"dir": d, "kernel": kernel, "policy": policy, "dup": dup, "arabic": arabic, "badkey": badkey,
            "pcrs_dup": pcrs_dup,
            "policy1": policy1, "log": log, "pcrs_arabic": pcrs_arabic, "evidence_dup": evidence_dup, "audit": audit}


def _cases(f: dict[str, Path]) -> list[tuple[list[str], int, str]]:
    d = f["dir"]
    missing = str(d / "missing")
    log = str(d / "missing.log")
    non_utf8 = os.fsdecode(bytes(d) + b"/\xff-missing")
    return [
        (["pcrs", "--tpm", NO_TPM, "--banks", "sha999"], 2, "sha999"),
        (["pcrs", "--tpm", NO_TPM], 2, "TPM"),
        (["log", "show", missing], 2, "missing"),
        (["log", "replay", str(f["log"]), "--banks", "nope"], 2, "nope"),
        (["log", "verify", missing, "--pcrs", str(f["pcrs_dup"])], 2, "missing"),
        (["log", "diff", missing, missing], 2, "missing"),
        (["log", "check", missing], 2, "missing"),
        (["log", "state", missing], 2, "missing"),
        (["extend", "--tpm", NO_TPM, "--log", log, "--kernel", missing], 2, ""),
        (["launch", "--policy", missing, "--tpm", NO_TPM, "--state", str(d / "st"), "--kernel", str(f["kernel"]),
          "--dry-run"], 2, "missing"),
        (["launch", "--policy", str(f["policy"]), "--tpm", NO_TPM, "--state", str(d / "st"), "--kernel",
          str(f["kernel"]), "--dry-run", "--audit-pcr", "x"], 2, "--audit-pcr"),
        (["launch", "--policy", str(f["policy"]), "--tpm", NO_TPM, "--state", str(d / "st"), "--kernel",
          str(f["kernel"]), "--dry-run", "--handle", "zz"], 2, "handle"),
        (["hook", "xl-create", missing], 2, "missing"),
        (["hook", "libvirt-qemu"], 2, ""),
        (["audit", "verify", str(d)], 2, "directory"),
        (["audit", "verify", missing], 2, "missing"),
        (["audit", "verify", str(f["audit"]), "--expect-head", "xyz"], 2, "--expect-head"),
        (["audit", "verify", str(f["audit"]), "--expect-head", "ab" * 32], 1, "expected head"),
        (["audit", "verify", str(f["audit"]), "--audit-pcr", "15"], 2, "--tpm"),
        (["audit", "show", str(d)], 2, "directory"),
        (["audit", "report", missing], 2, "missing"),
        (["audit", "recheck", "--db", missing], 2, "no such database"),
        (["measure", missing], 2, "missing"),
        (["measure", "--banks", "sha999", str(f["kernel"])], 2, "sha999"),
        (["policy", "init", str(f["policy"])], 2, ""),
        (["policy", "add", str(f["policy"]), "--component", "kernel", "--file", non_utf8], 2, "no such file"),
        (["policy", "add", str(f["policy"]), "--component", "kernel", "--file", str(f["kernel"]), "--banks", "x"],
         2, "'x'"),
        (["policy", "show", str(f["dup"])], 2, "duplicate key 'mode'"),
        (["policy", "show", str(f["arabic"])], 2, "PCR index"),
        (["policy", "show", str(f["badkey"])], 2, "PCR index"),
        (["policy", "from-log", missing], 2, "missing"),
        (["policy", "predict", "--log", missing], 2, "missing"),
        (["policy", "keygen", "--type", "rsa", "-o", str(d / "k")], 2, "rsa"),
        (["policy", "sign", str(f["policy1"]), "--key", missing, "-o", str(d / "s")], 2, "missing"),
        (["policy", "verify", missing, "--trust-key", missing], 2, "missing"),
        (["policy", "import-vlp", missing, "-o", str(d / "o")], 2, "missing"),
        (["policy", "export-vlp", missing, "-o", str(d / "o")], 2, "missing"),
        (["attest", "ek", "--tpm", NO_TPM], 2, "TPM"),
        (["attest", "ek", "--tpm", NO_TPM, "--ek-ca", missing], 2, ""),
        (["attest", "ak", "--tpm", NO_TPM, "--state", str(d / "ak"), "--handle", "0x1"], 2, ""),
        (["attest", "quote", "--tpm", NO_TPM, "--state", str(d / "ak"), "--nonce", "zz", "--out", "-"], 2, ""),
        (["attest", "activate", "--tpm", NO_TPM, "--state", str(d / "ak")], 2, "TPM"),
        (["verify", missing, "--ak", missing, "--nonce", NONCE], 2, "missing"),
        (["verify", str(f["evidence_dup"]), "--ak", missing, "--nonce", NONCE], 2, "duplicate key"),
        (["quote", "verify", "--ak", missing, "-m", missing, "-s", missing, "-q", NONCE, "-f", missing], 2,
         "missing"),
        (["log", "verify", str(f["log"]), "--pcrs", str(f["pcrs_dup"])], 2, "duplicate key"),
        (["log", "replay", str(f["log"]), "--pcrs", str(f["pcrs_arabic"])], 2, "bad PCR value"),
        (["ear", "verify", "x", "--key", missing], 2, "missing"),
        (["completion", "tcsh"], 2, ""),
    ]


def test_bad_arguments_exit_with_the_documented_code_and_one_line(inputs: dict[str, Path]) -> None:
    failures = []
    for argv, code, needle in _cases(inputs):
        r = run_cli(*argv)
        try:
            assert r.rc == code, f"exit {r.rc}, wanted {code}: {r.err.strip()}"
            line = _one_error_line(r.err)
            assert needle in line, f"{needle!r} not in {line!r}"
        except AssertionError as e:
            failures.append(f"{' '.join(argv)}: {e}")
    assert not failures, "\n".join(failures)


def test_every_leaf_command_has_a_bad_input_case(inputs: dict[str, Path]) -> None:
    covered = {tuple(argv[: len(p)]) for argv, _c, _n in _cases(inputs) for p in LEAVES}
    servers = {p for p in LEAVES if p[0] in ("serve", "fleet", "agent")}  # tests/integration/test_server*
    missing = [p for p in LEAVES if p not in covered and p not in servers]
    assert not missing, missing
