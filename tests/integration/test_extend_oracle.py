"""`tboot-py extend` against a real swtpm, checked by tpm2-tools (tpm2_eventlog, tpm2_pcrread)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tboot_py import algorithms
from tboot_py.tpm.swtpm import Swtpm
from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def _hex(value: object, bank: str) -> str:
    """tpm2-tools prints 0x... values, which YAML reads as integers."""
    size = algorithms.by_name(bank).size
    if isinstance(value, int):
        return value.to_bytes(size, "big").hex()
    return str(value).lower().removeprefix("0x")


def _tpm2_eventlog_pcrs(log: Path) -> dict[str, dict[int, str]]:
    out = subprocess.run(["tpm2_eventlog", str(log)], capture_output=True, text=True, check=True).stdout
    doc = yaml.safe_load(out)
    return {bank: {int(k): _hex(v, bank) for k, v in regs.items()} for bank, regs in doc["pcrs"].items()}


def _tpm2_pcrread(tcti: str, bank: str, pcrs: list[int]) -> dict[int, str]:
    sel = f"{bank}:{','.join(map(str, pcrs))}"
    out = subprocess.run(["tpm2_pcrread", "-T", tcti, sel], capture_output=True, text=True, check=True).stdout
    doc = yaml.safe_load(out)
    return {int(k): _hex(v, bank) for k, v in doc[bank].items()}


@pytest.mark.parametrize("pcr", [9, 14])
def test_extend_log_replays_to_tpm_pcrs(swtpm: Swtpm, tmp_path: Path, pcr: int) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel image " * 1000)
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(bytes(range(256)) * 77)
    log = tmp_path / "tboot-py.log"
    # Two runs: the second appends to the log the first created.
    r1 = run_cli("extend", "--tpm", swtpm.tcti, "--log", str(log), "--pcr", str(pcr),
                 "--kernel", str(kernel), "--initrd", str(initrd), "--cmdline", "console=ttyS0 ro")
    assert r1.rc == 0, r1.err
    r2 = run_cli("extend", "--tpm", swtpm.tcti, "--log", str(log), "--pcr", str(pcr), "--kernel", str(kernel))
    assert r2.rc == 0, r2.err

    replayed = _tpm2_eventlog_pcrs(log)
    assert set(replayed) == {"sha1", "sha256", "sha384"}
    for bank, regs in replayed.items():
        assert set(regs) == {pcr}
        tpm_value = _tpm2_pcrread(swtpm.tcti, bank, [pcr])[pcr]
        assert regs[pcr] == tpm_value, f"{bank} PCR{pcr}: log replays to {regs[pcr]}, TPM has {tpm_value}"
        assert int(tpm_value, 16) != 0


def test_tboot_mapping_extends_18_and_19(swtpm: Swtpm, tmp_path: Path) -> None:
    xen = tmp_path / "xen.gz"
    xen.write_bytes(b"\x1f\x8b\x08\x00" + b"not really gzip")  # detected as gzip: must be refused cleanly
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k" * 4096)
    log = tmp_path / "log.bin"
    bad = run_cli("extend", "--tpm", swtpm.tcti, "--log", str(log), "--pcr-map", "tboot", "--hypervisor", str(xen))
    assert bad.rc == 2 and "Traceback" not in bad.err
    assert not log.exists(), "a failed measurement must not create the log"
    ok = run_cli("extend", "--tpm", swtpm.tcti, "--log", str(log), "--pcr-map", "tboot", "--json",
                 "--kernel", str(kernel), "--cmdline", "root=/dev/xvda")
    assert ok.rc == 0, ok.err
    read = run_cli("pcrs", "--tpm", swtpm.tcti, "--pcr", "18,19", "--json")
    import json
    pcrs = json.loads(read.out)["pcrs"]["sha256"]
    assert pcrs["18"] == "ff" * 32  # untouched DRTM PCR keeps its reset value
    assert pcrs["19"] not in ("ff" * 32, "00" * 32)


def test_extend_refuses_a_torn_log(swtpm: Swtpm, tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k" * 100)
    log = tmp_path / "log.bin"
    assert run_cli("extend", "--tpm", swtpm.tcti, "--log", str(log), "--kernel", str(kernel)).rc == 0
    before = run_cli("pcrs", "--tpm", swtpm.tcti, "--pcr", "9", "--json").out
    log.write_bytes(log.read_bytes()[:-7])  # a half-written last record
    r = run_cli("extend", "--tpm", swtpm.tcti, "--log", str(log), "--kernel", str(kernel))
    assert r.rc == 2 and "offset" in r.err
    assert run_cli("pcrs", "--tpm", swtpm.tcti, "--pcr", "9", "--json").out == before, "PCRs moved for a bad log"
