"""``tboot-py log ...`` in-process, against corpus logs and their independent PCR values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CORPUS, run_cli

pytestmark = pytest.mark.corpus
LOGS = CORPUS / "logs"
EXP = CORPUS / "expected"


def test_show_table_json_and_cel() -> None:
    log = str(LOGS / "secboot__eventlog1_qemu_ovmf_sb.bin")
    r = run_cli("log", "show", log)
    assert r.rc == 0 and "SecureBoot = on" in r.out and "EV_SEPARATOR" in r.out
    r = run_cli("log", "show", log, "--json")
    doc = json.loads(r.out)
    assert r.rc == 0 and doc["format"] == "crypto-agile" and doc["banks"] == ["sha1", "sha256"]
    assert len(doc["events"]) == 32 and doc["events"][4]["decoded"]["enabled"] is True
    r = run_cli("log", "show", log, "--cel")
    cel = json.loads(r.out)
    assert r.rc == 0 and len(cel) == 32 and cel[9]["content"]["event_type"] == 4


def test_replay_json_only_extended_pcrs_and_matches_tpm_values() -> None:
    stem = "tpm_futurepcr__QEMU_tpm_binary_measurements"
    r = run_cli("log", "replay", str(LOGS / f"{stem}.bin"), "--json")
    assert r.rc == 0
    doc = json.loads(r.out)
    tpm = json.loads((EXP / f"{stem}.pcrs.json").read_text())
    assert set(doc) == {"pcrs"} and set(doc["pcrs"]) == {"sha256"}
    assert "10" not in doc["pcrs"]["sha256"]  # IMA: the firmware log never extends it
    for pcr, value in doc["pcrs"]["sha256"].items():
        assert value == tpm["sha256"][pcr].lower()


def test_replay_with_pcrs_lists_quirks(tmp_path: Path) -> None:
    stem = "go-tpm-tools__rhel8-uefi"
    r = run_cli("log", "replay", str(LOGS / f"{stem}.bin"), "--json", "--pcrs", str(EXP / f"{stem}.pcrs.json"))
    assert r.rc == 0 and json.loads(r.out)["quirks"] == []


def test_verify_ok_and_mismatch_explained(tmp_path: Path) -> None:
    stem = "go-tpm-tools__ubuntu-2104-no-secure-boot"
    log = str(LOGS / f"{stem}.bin")
    r = run_cli("log", "verify", log, "--pcrs", str(EXP / f"{stem}.pcrs.json"))
    assert r.rc == 0 and r.out.startswith("OK")
    vals = json.loads((EXP / f"{stem}.pcrs.json").read_text())
    vals["sha256"]["4"] = "11" * 32
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"pcrs": vals}))
    r = run_cli("log", "verify", log, "--pcrs", str(bad))
    assert r.rc == 1
    assert "PCR 4 bank sha256" in r.out and "11" * 32 in r.out and "EV_EFI_BOOT_SERVICES_APPLICATION" in r.out
    assert "expected" in r.out and "replayed" in r.out
    r = run_cli("log", "verify", log, "--pcrs", str(bad), "--json")
    doc = json.loads(r.out)
    assert r.rc == 1 and doc["ok"] is False and doc["mismatches"][0]["pcr"] == 4
    assert "EV_EFI_BOOT_SERVICES_APPLICATION" in [e["type"] for e in doc["mismatches"][0]["events"]]


def test_verify_with_no_comparable_bank_denies(tmp_path: Path) -> None:
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"sha384": {"0": "00" * 48}}))
    r = run_cli("log", "verify", str(LOGS / "go-attestation__linux_tpm12.bin"), "--pcrs", str(f))
    assert r.rc == 1


def test_bad_input_exit_2_with_offset(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes((LOGS / "tpm2-tools__event-sd-boot-fedora37.bin").read_bytes()[:-7])
    r = run_cli("log", "show", str(bad))
    assert r.rc == 2 and "offset" in r.err and "Traceback" not in r.err
    r = run_cli("log", "replay", str(tmp_path / "missing.bin"))
    assert r.rc == 2 and r.err.count("\n") == 1
    notjson = tmp_path / "p.json"
    notjson.write_text("{")
    r = run_cli("log", "verify", str(LOGS / "go-attestation__linux_tpm12.bin"), "--pcrs", str(notjson))
    assert r.rc == 2


def test_diff_and_check_and_state(tmp_path: Path) -> None:
    a = str(LOGS / "tpm2-tools__event-arch-linux.bin")
    b = str(LOGS / "go-tpm-tools__arch-linux-workstation.bin")
    r = run_cli("log", "diff", a, a)
    assert r.rc == 0
    r = run_cli("log", "diff", a, b, "--json")
    doc = json.loads(r.out)
    assert r.rc == 1 and doc["equal"] is False and isinstance(doc["index"], int)
    r = run_cli("log", "check", a, "--json")
    assert r.rc == 1 and [m["seq"] for m in json.loads(r.out)["mismatches"]] == [24]
    r = run_cli("log", "state", str(LOGS / "secboot__eventlog1_qemu_ovmf_sb.bin"), "--json")
    st = json.loads(r.out)
    assert r.rc == 0 and st["secure_boot"] is True
    assert any((i["device_path"] or "").endswith("shimx64.efi") for i in st["loaded_images"] if i["pcr"] == 4)


def test_cel_file_is_accepted_as_log(tmp_path: Path) -> None:
    src = str(LOGS / "tpm2-tools__event-sd-boot-fedora37.bin")
    cel = tmp_path / "log.json"
    cel.write_text(run_cli("log", "show", src, "--cel").out)
    assert run_cli("log", "replay", str(cel), "--json").out == run_cli("log", "replay", src, "--json").out
