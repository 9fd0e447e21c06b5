"""``tboot-py log show|replay`` on Linux IMA lists, ASCII and binary, told apart by content.

Oracles: PCR 10 of a real swtpm extended with the list's template digests (tpm2_pcrextend,
read back with tpm2_pcrread), and a boot_aggregate computed here from the PCR values the
corpus machine's own TPM reported for PCRs 0-9 (not from tboot-py's replay).
"""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from tboot_py.tpm.swtpm import Swtpm

FW = "go-tpm-tools__rhel8-uefi"
SAMPLE = REPO / "tests" / "unit" / "eventlog" / "data" / "ima_ascii_runtime_measurements"


def _field(b: bytes) -> bytes:
    return struct.pack("<I", len(b)) + b


def _aggregate_line(corpus: Path) -> tuple[str, bytes]:
    """An ima-ng boot_aggregate record over the TPM-read sha256 PCRs 0-9 (kernel >= 5.8 rule)."""
    tpm = json.loads((corpus / "expected" / f"{FW}.pcrs.json").read_text())
    tpm = tpm.get("pcrs", tpm)["sha256"]
    agg = hashlib.sha256(b"".join(bytes.fromhex(tpm[str(i)]) for i in range(10))).digest()
    data = _field(b"sha256:\x00" + agg) + _field(b"boot_aggregate\x00")
    return f"10 {hashlib.sha1(data).hexdigest()} ima-ng sha256:{agg.hex()} boot_aggregate", data


def _to_binary(lines: list[str], agg_data: bytes) -> bytes:
    """The binary list (ima_fs.c layout) of the aggregate record and the sample's ima-sig records."""
    out = b""
    for i, line in enumerate(lines):
        pcr, thash, tname, *rest = line.split(" ")
        head = struct.pack("<I", int(pcr)) + bytes.fromhex(thash) + _field(tname.encode())
        if tname == "ima":  # file digest and name, no template-data length
            out += head + bytes.fromhex(rest[0]) + _field(" ".join(rest[1:]).encode())
            continue
        if i == 0:
            data = agg_data
        else:
            alg, _, hexd = rest[0].partition(":")
            trailing = tname in ("ima-sig", "ima-buf")  # one more hex field after the name
            name = " ".join(rest[1:-1] if trailing else rest[1:]).encode() + b"\x00"
            data = _field(alg.encode() + b":\x00" + bytes.fromhex(hexd)) + _field(name)
            if trailing:
                data += _field(bytes.fromhex(rest[-1]))
        out += head + _field(data)
    return out


@pytest.fixture
def ima_lists(corpus_dir: Path, tmp_path: Path) -> tuple[Path, Path, list[str]]:
    agg, agg_data = _aggregate_line(corpus_dir)
    lines = [agg, *[x for x in SAMPLE.read_text().splitlines() if x.strip()]]
    text = tmp_path / "ascii_runtime_measurements"
    text.write_text("\n".join(lines) + "\n")
    binary = tmp_path / "binary_runtime_measurements"
    binary.write_bytes(_to_binary(lines, agg_data))
    return text, binary, lines


def _tpm_pcr10(swtpm: Swtpm, lines: list[str], out: Path) -> Path:
    for line in lines:
        subprocess.run(["tpm2_pcrextend", "-T", swtpm.tcti, f"10:sha1={line.split(' ')[1]}"],
                       check=True, capture_output=True, timeout=60)
    r = subprocess.run(["tpm2_pcrread", "-T", swtpm.tcti, "sha1:10"], check=True, capture_output=True,
                       text=True, timeout=60).stdout
    value = r.split("0x", 1)[1].split()[0].lower()
    out.write_text(json.dumps({"sha1": {"10": value}}))
    return out


def test_show_reads_ascii_and_binary_alike(ima_lists: tuple[Path, Path, list[str]]) -> None:
    text, binary, lines = ima_lists
    a = json.loads(run_cli("log", "show", str(text), "--json").out)
    b = json.loads(run_cli("log", "show", str(binary), "--json").out)
    assert a["format"] == "ima-ascii" and b["format"] == "ima-binary" and len(a["events"]) == len(lines)
    strip = ("offset", "template_hash_ok")
    assert [{k: v for k, v in e.items() if k not in strip} for e in a["events"]] == \
        [{k: v for k, v in e.items() if k not in strip} for e in b["events"]]
    assert a["events"][0]["file_name"] == "boot_aggregate" and all(e["template_hash_ok"] for e in b["events"])
    r = run_cli("log", "show", str(binary))
    assert r.rc == 0 and "boot_aggregate" in r.out and "/usr/bin/dd" in r.out


def test_replay_checks_pcr10_and_boot_aggregate(ima_lists: tuple[Path, Path, list[str]], swtpm: Swtpm,
                                               corpus_dir: Path, tmp_path: Path) -> None:
    text, binary, lines = ima_lists
    pcrs = _tpm_pcr10(swtpm, lines, tmp_path / "pcrs.json")
    fw = str(corpus_dir / "logs" / f"{FW}.bin")
    for ima in (text, binary):
        r = run_cli("log", "replay", str(ima), "--banks", "sha1", "--pcrs", str(pcrs), "--firmware-log", fw, "--json")
        assert r.rc == 0, r.out + r.err
        doc = json.loads(r.out)
        assert doc["ok"] and doc["pcr10"]["ok"] and doc["boot_aggregate"]["ok"]
        assert doc["pcrs"]["sha1"]["10"] == json.loads(pcrs.read_text())["sha1"]["10"]
        assert doc["boot_aggregate"]["bank"] == "sha256"
    # Standard input, detected by content.
    p = subprocess.run([sys.executable, "-m", "tboot_py", "log", "replay", "-", "--banks", "sha1", "--pcrs", str(pcrs)],
                       input=binary.read_bytes(), capture_output=True, check=False, cwd=REPO)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == f"sha1 10 {json.loads(pcrs.read_text())['sha1']['10']}\n"

    # One template digest changed: PCR 10 no longer matches, exit 1.
    bad = tmp_path / "tampered"
    bad.write_text("\n".join([lines[0], lines[1].replace(lines[1].split(" ")[1], "00" * 19 + "01"), *lines[2:]]))
    r = run_cli("log", "replay", str(bad), "--banks", "sha1", "--pcrs", str(pcrs))
    assert r.rc == 1 and "MISMATCH" in r.err and "PCR 10 sha1" in r.err
    # Another machine's firmware log: the boot_aggregate does not match, exit 1.
    other = str(corpus_dir / "logs" / "go-tpm-tools__ubuntu-2104-no-secure-boot.bin")
    r = run_cli("log", "replay", str(text), "--banks", "sha1", "--pcrs", str(pcrs), "--firmware-log", other, "--json")
    doc = json.loads(r.out)
    assert r.rc == 1 and doc["pcr10"]["ok"] and not doc["boot_aggregate"]["ok"] and not doc["ok"]
    # --firmware-log is for IMA lists; commands that read only TCG logs say so.
    assert run_cli("log", "replay", fw, "--firmware-log", fw).rc == 2
    r = run_cli("log", "check", str(text))
    assert r.rc == 2 and "IMA" in r.err
