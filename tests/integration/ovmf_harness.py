"""Boot real EDK2 OVMF under QEMU (TCG) with a real swtpm and read back what Linux saw.

The ESP holds the signed Debian cloud kernel, a busybox initrd and a startup.nsh, so the
UEFI shell loads the kernel file unchanged and PCR4 holds its Authenticode digest (booting
with ``-kernel`` would let QEMU patch the bzImage setup header). The initrd prints the
firmware event log (base64) and every PCR of every bank between markers, then powers off.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tboot_py._artifacts import build_initrd

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
ESP_KERNEL = "\\vmlinuz"
CMDLINE = "console=ttyS0 initrd=\\initrd.img"
BOOT_TIMEOUT = 420.0  # seconds; one boot takes ~15 s on an idle core, the CI box may be busy

LOG_BEGIN, LOG_END = "@@TBOOT-EVENTLOG-BEGIN@@", "@@TBOOT-EVENTLOG-END@@"
PCR_TAG, DONE = "@@TBOOT-PCR", "@@TBOOT-DONE@@"

# /init of the probe initrd. dmesg -n 1 keeps kernel messages off the console while the log
# is printed. /sys/class/tpm/tpm0/pcr-<bank>/<n> exists since Linux 5.12.
INIT = f"""#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t securityfs securityfs /sys/kernel/security
dmesg -n 1
echo
echo {LOG_BEGIN}
base64 /sys/kernel/security/tpm0/binary_bios_measurements
echo {LOG_END}
for d in /sys/class/tpm/tpm0/pcr-*; do
  bank=${{d##*/pcr-}}
  for n in $(seq 0 23); do
    echo "{PCR_TAG} $bank $n $(cat $d/$n)"
  done
done
echo {DONE}
poweroff -f
"""


class BootError(AssertionError):
    """The boot did not produce what the probe initrd should print."""


@dataclass(frozen=True)
class BootResult:
    eventlog: bytes  # binary_bios_measurements, as the kernel exported it
    pcrs: dict[str, dict[int, bytes]]  # the TPM's PCRs as Linux read them, per bank
    serial: str
    seconds: float
    initrd: Path
    load_options: str  # what the UEFI shell passes the kernel (startup.nsh line, image path first)


def serial_tail(text: str, lines: int = 40) -> str:
    clean = re.sub(r"\x1b\[[0-9;?=]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]", "", text.replace("\r", ""))
    return "\n".join(clean.splitlines()[-lines:]) or "(no serial output)"


def _run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, env=env)
    if r.returncode != 0:
        raise BootError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")


def make_esp(path: Path, kernel: Path, initrd: Path, cmdline: str) -> Path:
    """A FAT image with \\vmlinuz, \\initrd.img and \\startup.nsh (mkfs.vfat + mtools, no root)."""
    size_kb = ((kernel.stat().st_size + initrd.stat().st_size) // 1024 + 8192) // 1024 * 1024
    _run(["mkfs.vfat", "-C", "-n", "TBOOTESP", str(path), str(size_kb)])
    nsh = path.with_name("startup.nsh")
    nsh.write_text(f"{ESP_KERNEL} {cmdline}\r\n")
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    for src, dst in ((kernel, "::/vmlinuz"), (initrd, "::/initrd.img"), (nsh, "::/startup.nsh")):
        _run(["mcopy", "-i", str(path), str(src), dst], env=env)
    return path


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextmanager
def swtpm_unix(workdir: Path, banks: str) -> Iterator[Path]:
    """A freshly manufactured TPM 2.0 with the given PCR banks behind a unix control socket."""
    state = (workdir / "tpm").resolve()
    state.mkdir()
    # No EK is needed for a boot; manufacture only the PCR bank allocation (TPM2_PCR_Allocate).
    conf = workdir / "swtpm_setup.conf"
    conf.write_text(f"active_pcr_banks = {banks}\n")
    _run(["swtpm_setup", "--tpm2", "--tpmstate", str(state), "--pcr-banks", banks, "--config", str(conf),
          "--overwrite"])
    sock = state / "swtpm.sock"
    short_dir: Path | None = None
    if len(str(sock)) > 100:  # sun_path holds 108 bytes
        short_dir = Path(tempfile.mkdtemp(prefix="tbswtpm-"))
        sock = short_dir / "swtpm.sock"
    proc = subprocess.Popen(
        ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={state}", "--ctrl", f"type=unixio,path={sock}",
         "--log", f"file={state / 'swtpm.log'},level=1", "--terminate"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BootError(f"swtpm did not create {sock} (exit {proc.poll()})")
            time.sleep(0.05)
        yield sock
    finally:
        _stop(proc)
        sock.unlink(missing_ok=True)
        if short_dir is not None:
            shutil.rmtree(short_dir, ignore_errors=True)


def parse_serial(serial: str) -> tuple[bytes, dict[str, dict[int, bytes]]]:
    text = serial.replace("\r", "")
    m = re.search(re.escape(LOG_BEGIN) + r"\n(.*?)\n" + re.escape(LOG_END), text, re.S)
    if m is None or DONE not in text:
        raise BootError("the probe initrd did not print its markers; serial tail:\n" + serial_tail(serial))
    b64 = "".join(line.strip() for line in m.group(1).splitlines())
    eventlog = base64.b64decode(b64, validate=True)
    pcrs: dict[str, dict[int, bytes]] = {}
    for bank, n, value in re.findall(re.escape(PCR_TAG) + r" (\w+) (\d+) ([0-9A-Fa-f]+)\s*$", text, re.M):
        pcrs.setdefault(bank, {})[int(n)] = bytes.fromhex(value)
    if not pcrs:
        raise BootError("no PCR values in the serial output; tail:\n" + serial_tail(serial))
    return eventlog, pcrs


def run_qemu(args: list[str], serial: Path, timeout: float = BOOT_TIMEOUT) -> tuple[str, float]:
    """Run qemu-system-x86_64 with ``args`` until the guest powers off; returns (serial, seconds).

    Adds a serial file, no network (else the firmware tries PXE and HTTP boot for minutes),
    no display and ``-no-reboot``. QEMU is killed after ``timeout`` seconds.
    """
    if shutil.which("qemu-system-x86_64") is None:
        raise BootError("qemu-system-x86_64 is not installed (run `make setup`)")
    cmd = ["qemu-system-x86_64", *args, "-nic", "none", "-display", "none", "-monitor", "none",
           "-serial", f"file:{serial}", "-no-reboot"]
    start = time.monotonic()
    qemu = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        try:
            _, err = qemu.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(qemu)
            out = serial.read_text(errors="replace") if serial.exists() else ""
            raise BootError(f"QEMU did not power off within {timeout:.0f} s; serial tail:\n"
                            + serial_tail(out)) from None
    finally:
        _stop(qemu)
    seconds = time.monotonic() - start
    out = serial.read_text(errors="replace") if serial.exists() else ""
    if qemu.returncode != 0:
        raise BootError(f"QEMU exited {qemu.returncode}: {err.decode(errors='replace').strip()}\n"
                        + serial_tail(out))
    return out, seconds


def boot(workdir: Path, kernel: Path, banks: str, cmdline: str = CMDLINE, timeout: float = BOOT_TIMEOUT) -> BootResult:
    """Boot OVMF -> UEFI shell -> startup.nsh -> kernel (EFI stub) -> probe initrd."""
    for f in (OVMF_CODE, OVMF_VARS, kernel):
        if not f.is_file():
            raise BootError(f"{f} is missing (run `make setup artifacts`)")
    for tool in ("swtpm", "swtpm_setup", "mkfs.vfat", "mcopy"):
        if shutil.which(tool) is None:
            raise BootError(f"{tool} is not installed (run `make setup`)")
    workdir = workdir.resolve()
    initrd = build_initrd(workdir / "initrd.img", INIT)
    esp = make_esp(workdir / "esp.img", kernel, initrd, cmdline)
    vars_fd = workdir / "OVMF_VARS.fd"
    shutil.copyfile(OVMF_VARS, vars_fd)
    serial = workdir / "serial.log"
    with swtpm_unix(workdir, banks) as sock:
        cmd = [
            "-machine", "q35,accel=tcg", "-cpu", "max", "-smp", "1", "-m", "512",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,file={vars_fd}",
            "-drive", f"if=virtio,format=raw,file={esp}",
            "-chardev", f"socket,id=chrtpm,path={sock}",
            "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0",
        ]
        out, seconds = run_qemu(cmd, serial, timeout)
    eventlog, pcrs = parse_serial(out)
    return BootResult(eventlog=eventlog, pcrs=pcrs, serial=out, seconds=seconds, initrd=initrd,
                      load_options=f"{ESP_KERNEL} {cmdline}")
