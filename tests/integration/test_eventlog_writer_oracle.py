"""The writer against real parts: extend a real swtpm while appending the same digests to a
log with append_events, then check with tpm2-tools that (a) tpm2_eventlog parses the log
and (b) the PCR values it computes equal what tpm2_pcrread reads from the swtpm."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tboot_py.algorithms import SHA1, SHA256, SHA384
from tboot_py.eventlog import NewEvent, append_events, read_log, replay
from tboot_py.tpm import open_tpm

pytestmark = pytest.mark.integration

BANKS = (SHA1, SHA256, SHA384)
PCRS = list(range(8, 16))


def tpm2_pcrread(tcti: str, bank: str, tmp: Path) -> dict[int, str]:
    out = tmp / f"pcrs-{bank}.bin"
    sel = f"{bank}:{','.join(map(str, PCRS))}"
    subprocess.run(["tpm2_pcrread", "-T", tcti, "-o", str(out), sel], check=True, capture_output=True, timeout=60)
    raw = out.read_bytes()
    size = {"sha1": 20, "sha256": 32, "sha384": 48}[bank]
    assert len(raw) == size * len(PCRS)
    return {pcr: raw[i * size:(i + 1) * size].hex() for i, pcr in enumerate(PCRS)}


def tpm2_eventlog(path: Path) -> dict[str, Any]:
    r = subprocess.run(["tpm2_eventlog", str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    doc = yaml.safe_load(r.stdout)
    assert isinstance(doc, dict)
    return doc


def yaml_pcrs(doc: dict[str, Any]) -> dict[str, dict[int, str]]:
    sizes = {"sha1": 20, "sha256": 32, "sha384": 48}
    return {bank: {int(k): format(v, f"0{2 * sizes[bank]}x") for k, v in regs.items()}
            for bank, regs in doc["pcrs"].items()}


def test_append_events_matches_swtpm_per_tpm2_tools(swtpm: Any, tmp_path: Path) -> None:
    log_path = tmp_path / "tboot-py.log"
    tpm = open_tpm(swtpm.tcti)
    try:
        n = 0
        for _run in range(3):  # three separate append calls, like three launches
            batch = []
            for pcr in (8, 9, 12, 15):
                n += 1
                data = json.dumps({"tboot-py": 1, "component": f"c{n}", "kind": "file",
                                   "file": f"f{n}", "cmdline": "console=hvc0"}).encode()
                payload = os.urandom(64) + data
                d = {b.name: hashlib.new(b.hashlib_name, payload).digest() for b in BANKS}
                tpm.extend(pcr, d)
                batch.append(NewEvent(pcr, 0x0000000D, d, data))
            append_events(log_path, batch, BANKS)
        ours = replay(read_log(log_path))
    finally:
        tpm.close()

    doc = tpm2_eventlog(log_path)
    events = doc["events"]
    assert len(events) == 1 + n
    assert events[0]["EventType"] == "EV_NO_ACTION"
    assert all(e["EventType"] == "EV_IPL" for e in events[1:])
    tool = yaml_pcrs(doc)
    for bank in ("sha1", "sha256", "sha384"):
        tpm_vals = tpm2_pcrread(swtpm.tcti, bank, tmp_path)
        for pcr in (8, 9, 12, 15):
            assert tool[bank][pcr] == tpm_vals[pcr], (bank, pcr)
            assert ours[bank][pcr].hex() == tpm_vals[pcr], (bank, pcr)
        # PCRs the log never extends stay at zero in the TPM and are absent from our replay.
        assert tpm_vals[10] == "00" * {"sha1": 20, "sha256": 32, "sha384": 48}[bank]
        assert 10 not in ours[bank]
