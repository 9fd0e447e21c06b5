"""build_initrd boots: the same busybox initrd runs /init and powers off with ``poweroff -f``
both on bare (emulated) hardware and as Xen 4.17's dom0.

The oracle is the guest itself: its kernel release, its view of the hypervisor, and QEMU
exiting because the kernel powered the machine down (not because the test timed out).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ovmf_harness import run_qemu, serial_tail

from tboot_py._artifacts import Artifacts, build_initrd, fetch_all

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INIT = """#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo "@@INIT pid=$$ release=$(uname -r) hypervisor=$(cat /sys/hypervisor/type 2>/dev/null || echo none)"
echo "@@EXTRA $(cat /etc/tboot-marker)"
poweroff -f
"""
MARKER = b"measured-launch-check"
LINE = re.compile(r"^@@INIT pid=(\d+) release=(\S+) hypervisor=(\S+)\s*$", re.M)


@pytest.fixture(scope="module")
def artifacts() -> Artifacts:
    return fetch_all()


def _check(out: str, release: str, hypervisor: str) -> None:
    text = out.replace("\r", "")
    m = LINE.search(text)
    assert m is not None, "/init did not run; serial tail:\n" + serial_tail(out)
    assert m.groups() == ("1", release, hypervisor), serial_tail(out)
    assert f"@@EXTRA {MARKER.decode()}" in text, "extra file missing from the initrd"
    # kernel_power_off() logs "reboot: Power down" (pr_emerg) right before the hardware off.
    assert "reboot: Power down" in text, "the guest did not power off; serial tail:\n" + serial_tail(out)


def test_initrd_boots_bare_kernel_and_powers_off(tmp_path: Path, artifacts: Artifacts) -> None:
    initrd = build_initrd(tmp_path / "initrd.img", INIT, {"etc/tboot-marker": MARKER})
    out, _ = run_qemu(["-machine", "q35,accel=tcg", "-smp", "1", "-m", "512",
                       "-kernel", str(artifacts.vmlinuz_cloud), "-initrd", str(initrd),
                       "-append", "console=ttyS0 panic=-1"], tmp_path / "serial.log")
    _check(out, artifacts.kernel_version_cloud, "none")


def test_initrd_boots_xen_dom0_and_powers_off(tmp_path: Path, artifacts: Artifacts) -> None:
    """Xen's multiboot ELF with the dom0 kernel and the initrd as modules (QEMU's multiboot
    loader takes the modules as ``-initrd "file args,file"``). -cpu Nehalem: see DESIGN.md."""
    initrd = build_initrd(tmp_path / "initrd.img", INIT, {"etc/tboot-marker": MARKER})
    assert "," not in str(initrd) and "," not in str(artifacts.vmlinuz)
    out, _ = run_qemu(["-machine", "q35,accel=tcg", "-cpu", "Nehalem", "-smp", "1", "-m", "1024",
                       "-kernel", str(artifacts.xen_elf),
                       "-append", "console=com1 com1=115200 dom0_mem=512M",
                       "-initrd", f"{artifacts.vmlinuz} console=hvc0 panic=-1,{initrd}"], tmp_path / "serial.log")
    assert "(XEN) Xen version 4.17" in out, serial_tail(out)
    _check(out, artifacts.kernel_version, "xen")
