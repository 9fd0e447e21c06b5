"""Real firmware: EDK2 OVMF boots Debian's signed cloud kernel with a real swtpm as its TPM.

The oracles are the TPM itself (PCR values Linux reads from /sys/class/tpm), osslsigncode
(Authenticode digest of the kernel), hashlib over the kernel command line, and tpm2_eventlog.
What is checked is tboot-py: its parser and replay, and its Authenticode digest.
"""

from __future__ import annotations

import re
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from ovmf_harness import BootResult, boot, serial_tail

from tboot_py import algorithms
from tboot_py._artifacts import Artifacts, fetch_all
from tboot_py.eventlog import EventLog, parse_log, replay
from tboot_py.measure import authenticode

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EV_NO_ACTION = 0x00000003
EV_EVENT_TAG = 0x00000006
EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
BANK_CONFIGS = ("sha256", "sha1,sha256,sha384")
# PCRs OVMF plus the EFI stub extend on every boot: 0-7 (PC Client PFP 3.3.4) and 9 (the EFI stub: LoadOptions).
FIRMWARE_PCRS = {0, 1, 2, 3, 4, 5, 6, 7, 9}


@pytest.fixture(scope="module")
def artifacts() -> Artifacts:
    return fetch_all()


@dataclass(frozen=True)
class Booted:
    banks: tuple[str, ...]
    result: BootResult
    log: EventLog  # parsed by tboot-py


@pytest.fixture(scope="module", params=BANK_CONFIGS, ids=lambda b: b.replace(",", "+"))
def booted(request: pytest.FixtureRequest, artifacts: Artifacts, tmp_path_factory: pytest.TempPathFactory) -> Booted:
    spec: str = request.param
    work = tmp_path_factory.mktemp("ovmf-" + spec.replace(",", "-"))
    result = boot(work, artifacts.vmlinuz_cloud, spec)
    banks = tuple(spec.split(","))
    assert set(result.pcrs) == set(banks), f"Linux sees banks {sorted(result.pcrs)}, swtpm was set up with {spec}"
    return Booted(banks, result, parse_log(result.eventlog, source=f"OVMF boot ({spec})"))


def _context(result: BootResult) -> str:
    return f"\n(boot took {result.seconds:.1f} s; serial tail:)\n{serial_tail(result.serial, 15)}"


def test_replay_equals_kernel_pcrs(booted: Booted) -> None:
    banks, result, log = booted.banks, booted.result, booted.log
    assert set(log.bank_names) == set(banks)
    replayed = replay(log)
    assert set(replayed) == set(banks)
    mismatches = []
    for bank, regs in replayed.items():
        assert set(regs) >= FIRMWARE_PCRS, f"{bank}: the log extends only PCRs {sorted(regs)}"
        for pcr, value in sorted(regs.items()):
            actual = result.pcrs[bank][pcr]
            if value != actual:
                first = [e.seq for e in log.events_for(pcr)][:1]
                mismatches.append(f"PCR{pcr} {bank}: replay {value.hex()} != TPM {actual.hex()} "
                                  f"(events from #{first})")
    assert not mismatches, "\n".join(mismatches) + _context(result)


def _image_device_path(data: bytes) -> bytes:
    """UEFI_IMAGE_LOAD_EVENT (PC Client PFP 10.2.3): 4 UINT64 then the device path."""
    assert len(data) >= 32, "EV_EFI_BOOT_SERVICES_APPLICATION data is shorter than its header"
    (dp_len,) = struct.unpack_from("<Q", data, 24)
    assert 32 + dp_len <= len(data), "device path length runs past the event data"
    return data[32:32 + dp_len]


def _osslsigncode_sha256(image: Path) -> bytes:
    r = subprocess.run(["osslsigncode", "verify", "-in", str(image)], capture_output=True, text=True,
                       timeout=120, check=False)
    m = re.search(r"Calculated message digest\s*:\s*([0-9A-Fa-f]{64})", r.stdout + r.stderr)
    assert m, f"osslsigncode printed no SHA-256 digest: {r.stdout[-500:]} {r.stderr[-500:]}"
    return bytes.fromhex(m.group(1))


def test_pcr4_kernel_event_is_authenticode_digest(booted: Booted,
                                                  artifacts: Artifacts) -> None:
    banks, result, log = booted.banks, booted.result, booted.log
    apps = [e for e in log.events_for(4) if e.event_type == EV_EFI_BOOT_SERVICES_APPLICATION]
    # The UEFI shell is loaded first, then the kernel by startup.nsh.
    assert len(apps) >= 2, f"expected the shell and the kernel in PCR4, got {len(apps)} images" + _context(result)
    kernel_event = apps[-1]
    assert "\\vmlinuz".encode("utf-16-le") in _image_device_path(kernel_event.data), \
        "the last PCR4 image is not \\vmlinuz"
    algs = algorithms.parse_banks(list(banks))
    ours = authenticode(artifacts.vmlinuz_cloud, algs)
    for alg in algs:
        recorded = kernel_event.digest(alg.name)
        assert recorded is not None, f"PCR4 kernel event has no {alg.name} digest"
        assert ours[alg.name] == recorded, f"{alg.name}: tboot-py {ours[alg.name].hex()} != firmware {recorded.hex()}"
    if "sha256" in banks:
        assert kernel_event.digest("sha256") == _osslsigncode_sha256(artifacts.vmlinuz_cloud)


def test_pcr9_load_options_measured_by_efi_stub(booted: Booted) -> None:
    """Debian's 6.1 EFI stub extends the kernel's LoadOptions into PCR9 as an EV_EVENT_TAG
    (tagged event "LOADED_IMAGE::LoadOptions"): the UTF-16 command line the shell passed,
    NUL included. An initrd loaded through initrd= is not measured; only one handed over by
    the LoadFile2 protocol would be ("Linux initrd")."""
    banks, result, log = booted.banks, booted.result, booted.log
    tags = [e for e in log.events_for(9) if e.event_type == EV_EVENT_TAG]
    assert len(tags) == 1, f"expected one event in PCR9, got {len(tags)}" + _context(result)
    # TCG_PCClientTaggedEvent (PC Client PFP 10.4.2): taggedEventID, taggedEventDataSize, data.
    tag_id, size = struct.unpack_from("<II", tags[0].data)
    assert (tag_id, tags[0].data[8:8 + size]) == (0x8F3B22ED, b"LOADED_IMAGE::LoadOptions\0")
    options = (result.load_options + "\0").encode("utf-16-le")
    for alg in algorithms.parse_banks(list(banks)):
        assert tags[0].digest(alg.name) == alg.digest(options), f"{alg.name} digest of {result.load_options!r}"


def test_tpm2_eventlog_agrees_with_kernel(booted: Booted,
                                         tmp_path: Path) -> None:
    """Harness self-check with an independent parser (its PCR0 is wrong when a StartupLocality
    event is present, see corpus/README.md; OVMF writes none, which is checked first)."""
    import yaml

    banks, result, log = booted.banks, booted.result, booted.log
    assert not any(e.event_type == EV_NO_ACTION and e.data.startswith(b"StartupLocality\0") for e in log.events)
    path = tmp_path / "log.bin"
    path.write_bytes(result.eventlog)
    r = subprocess.run(["tpm2_eventlog", str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    doc = yaml.safe_load(r.stdout)
    theirs = doc["pcrs"]
    assert set(theirs) == set(banks)
    for bank, regs in theirs.items():
        for pcr, value in regs.items():
            assert int(value).to_bytes(algorithms.by_name(bank).size, "big") == result.pcrs[bank][int(pcr)], \
                f"tpm2_eventlog PCR{pcr} {bank}"


def test_tampered_log_does_not_replay(booted: Booted) -> None:
    """Negative control: flip one byte of the kernel's PCR4 digest; replay must now differ."""
    result, log = booted.result, booted.log
    apps = [e for e in log.events_for(4) if e.event_type == EV_EFI_BOOT_SERVICES_APPLICATION]
    digest = apps[-1].digest("sha256")
    assert digest is not None
    raw = bytearray(result.eventlog)
    at = raw.find(digest, apps[-1].offset)
    assert at > 0
    raw[at] ^= 0x01
    tampered = replay(parse_log(bytes(raw)))
    assert tampered["sha256"][4] != result.pcrs["sha256"][4]
    assert all(tampered["sha256"][p] == result.pcrs["sha256"][p] for p in FIRMWARE_PCRS - {4})
