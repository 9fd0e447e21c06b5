"""from-log and predict against real swtpm PCRs read with tpm2_pcrread."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tboot_py import algorithms
from tboot_py.eventlog import read_log
from tboot_py.policy import Inputs, evaluate, load_policy
from tboot_py.policy.derive import firmware_events
from tboot_py.tpm.swtpm import Swtpm
from tests.conftest import run_cli, start_swtpm

pytestmark = pytest.mark.integration


def pcrread(tcti: str, bank: str, pcr: int) -> str:
    out = subprocess.run(["tpm2_pcrread", "-T", tcti, f"{bank}:{pcr}"], capture_output=True, text=True,
                         check=True).stdout
    v = yaml.safe_load(out)[bank][pcr]
    return v.to_bytes(algorithms.by_name(bank).size, "big").hex() if isinstance(v, int) else str(v)[2:].lower()


def boot(tcti: str, log: Path, kernel: Path, initrd: Path) -> None:
    r = run_cli("extend", "--tpm", tcti, "--log", str(log), "--kernel", str(kernel), "--initrd", str(initrd),
                "--cmdline", "console=hvc0")
    assert r.rc == 0, r.err


def test_predict_matches_the_tpm_after_the_update(swtpm: Swtpm, tmp_path: Path, ca_dir: Path) -> None:
    old_k, new_k, initrd = tmp_path / "vmlinuz-old", tmp_path / "vmlinuz-new", tmp_path / "initrd"
    old_k.write_bytes(b"old kernel" * 5000)
    new_k.write_bytes(b"new kernel" * 5000)
    initrd.write_bytes(b"initrd" * 999)
    golden = tmp_path / "golden.log"
    boot(swtpm.tcti, golden, old_k, initrd)

    r = run_cli("policy", "predict", "--log", str(golden), "--kernel", str(new_k), "--json",
                "-o", str(tmp_path / "next.toml"))
    assert r.rc == 0, r.err
    pred = json.loads(r.out)
    assert [x["component"] for x in pred["replaced"]] == ["kernel"]
    assert set(pred["changed"]["sha256"]) == {"9"}

    other = start_swtpm(tmp_path / "tpm2", ca_dir)
    try:
        boot(other.tcti, tmp_path / "after.log", new_k, initrd)
        for bank in ("sha1", "sha256", "sha384"):
            assert pred["pcrs"][bank]["9"] == pcrread(other.tcti, bank, 9), bank
            assert pred["changed"][bank]["9"]["before"] == pcrread(swtpm.tcti, bank, 9)
        # the policy written with the prediction admits the updated machine only
        pol = load_policy(tmp_path / "next.toml")
        new_pcrs = {b: {9: bytes.fromhex(pcrread(other.tcti, b, 9))} for b in ("sha1", "sha256", "sha384")}
        old_pcrs = {b: {9: bytes.fromhex(pcrread(swtpm.tcti, b, 9))} for b in ("sha1", "sha256", "sha384")}
        assert evaluate(pol, Inputs(pcrs=new_pcrs)).allowed
        v = evaluate(pol, Inputs(pcrs=old_pcrs))
        assert not v.allowed and v.failures[0].pcr == 9
    finally:
        other.stop()


def test_from_log_policy_admits_the_golden_machine(swtpm: Swtpm, tmp_path: Path) -> None:
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd"
    kernel.write_bytes(b"kernel" * 4000)
    initrd.write_bytes(b"initrd" * 4000)
    golden = tmp_path / "golden.log"
    boot(swtpm.tcti, golden, kernel, initrd)
    r = run_cli("policy", "from-log", str(golden), "-o", str(tmp_path / "p.json"))
    assert r.rc == 0, r.err
    pol = load_policy(tmp_path / "p.json")
    doc = json.loads((tmp_path / "p.json").read_text())
    types = [rule["type"] for rule in doc["rules"]]
    assert types[0] == "pcrs" and types.count("reference") == 3  # kernel, initrd, cmdline
    assert doc["rules"][0]["values"]["sha256"]["9"] == pcrread(swtpm.tcti, "sha256", 9)

    from tboot_py.measure import measure
    from tboot_py.policy import MeasuredComponent, measured
    from tboot_py.policy.model import Component, DigestKind

    cmd = "console=hvc0"
    ms = (measured(measure(kernel), component="kernel"), measured(measure(initrd), component="initrd"),
          MeasuredComponent(Component.CMDLINE, DigestKind.FILE,
                            tuple((b, algorithms.by_name(b).digest(cmd.encode())) for b in ("sha256",)), cmdline=cmd))
    pcrs = {b: {9: bytes.fromhex(pcrread(swtpm.tcti, b, 9))} for b in ("sha1", "sha256", "sha384")}
    log = read_log(golden)
    v = evaluate(pol, Inputs(measurements=ms, pcrs=pcrs, events=firmware_events(log)))
    assert v.allowed, [r.message for r in v.failures]
    # one more extend moves PCR 9: the same policy now denies and says where
    boot(swtpm.tcti, golden, kernel, initrd)
    pcrs2 = {b: {9: bytes.fromhex(pcrread(swtpm.tcti, b, 9))} for b in ("sha1", "sha256", "sha384")}
    v = evaluate(pol, Inputs(measurements=ms, pcrs=pcrs2))
    f = v.failures[0]
    assert not v.allowed and f.pcr == 9 and f.actual == pcrs2[f.bank or ""][9].hex()
