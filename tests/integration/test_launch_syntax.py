"""What QEMU and Xen load is what the gate measured: real QEMU, real Xen 4.17, the real
Debian dom0 kernel, and a real swtpm behind the gate.

* QEMU's multiboot ``-initrd`` list: a comma in a measured command line used to add a
  module (reproduced with QEMU itself); ``{qemu_modules}`` keeps it inside its module, and
  the dom0 sees the comma in its command line (one real Xen boot).
* A gzip tboot module: the launcher (QEMU here) gets the gunzipped image the module hash
  covers, not a gzip file whose header can carry bytes the hash never saw.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tboot_py._artifacts import Artifacts, build_initrd, fetch_all
from tboot_py.launch.handover import qemu_modules
from tboot_py.tpm.swtpm import Swtpm
from tests.conftest import run_cli
from tests.unit.launch.test_handover import _gzip_with_hidden_payload

pytestmark = pytest.mark.integration

#: Load the images and stop before the first instruction (-S): QEMU's loaders have run, and
#: a QEMU still alive after a few seconds accepted every image it was given.
PAUSED = ["timeout", "5", "qemu-system-x86_64", "-S", "-machine", "accel=tcg", "-m", "256", "-nic", "none",
          "-display", "none", "-monitor", "none", "-serial", "none"]
LOADED = 124  # timeout(1)'s status: QEMU was still running, paused


@pytest.fixture(scope="module")
def artifacts() -> Artifacts:
    return fetch_all()


def test_qemu_splits_module_lists_at_commas(tmp_path: Path, artifacts: Artifacts) -> None:
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"initrd")
    evil = tmp_path / "not-measured.bin"  # absent: QEMU's error names what it tried to load
    cmdline = f"console=hvc0,{evil}"
    # Reproduced: substituted inside the list, the approved command line adds a module.
    old = subprocess.run([*PAUSED, "-kernel", str(artifacts.xen_elf), "-initrd",
                          f"{artifacts.vmlinuz} {cmdline},{initrd}"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert old.returncode == 1 and str(evil) in old.stderr, old.stderr
    # The gate's list: the same command line stays one module's arguments.
    new = subprocess.run([*PAUSED, "-kernel", str(artifacts.xen_elf), "-initrd",
                          qemu_modules(str(artifacts.vmlinuz), cmdline, str(initrd))], capture_output=True,
                         text=True, timeout=60, check=False)
    assert new.returncode == LOADED, new.stderr


def _signed(tmp_path: Path, adds: list[list[str]]) -> tuple[Path, Path]:
    plain = tmp_path / "policy.toml"
    assert run_cli("policy", "init", str(plain)).rc == 0
    for a in adds:
        r = run_cli("policy", "add", str(plain), *a)
        assert r.rc == 0, r.err
    key = tmp_path / "k"
    assert run_cli("policy", "keygen", "-o", str(key)).rc == 0
    assert run_cli("policy", "sign", str(plain), "--key", str(key), "-o", str(tmp_path / "p.json")).rc == 0
    return tmp_path / "p.json", Path(f"{key}.pub")


def _gate(swtpm: Swtpm, tmp_path: Path, policy: Path, pub: Path, *args: str,
          timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tboot_py", "launch", "--policy", str(policy), "--trust-key",
                           str(pub), "--tpm", swtpm.tcti, "--state", str(tmp_path / "state"), *args],
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, "TBOOT_PY_KERNEL": "/stale/kernel"})


def test_gzip_module_reaches_qemu_as_the_measured_image(swtpm: Swtpm, tmp_path: Path,
                                                        artifacts: Artifacts) -> None:
    image = artifacts.xen_elf.read_bytes()
    # Same module hash as Debian's xen.gz, plus bytes in the gzip header that no hash covers.
    evil = tmp_path / "xen.gz"
    evil.write_bytes(_gzip_with_hidden_payload(image, b"\xcc" * 4096))
    ref = tmp_path / "xen-ref.gz"
    ref.write_bytes(gzip.compress(image))
    policy, pub = _signed(tmp_path, [["--component", "hypervisor", "--file", str(ref), "--kind", "tboot-module",
                                      "--cmdline", "console=com1"]])
    marker = tmp_path / "handed"
    script = tmp_path / "launch.sh"
    script.write_text(f'sha256sum "$1" > {marker}\nenv >> {marker}\nshift\nexec "$@"\n')
    r = _gate(swtpm, tmp_path, policy, pub, "--pcr-map", "tboot", "--hypervisor", str(evil),
              "--hypervisor-cmdline", "console=com1", "--",
              "sh", str(script), "{hypervisor}", *PAUSED, "-kernel", "{hypervisor}", "-append",
              "{hypervisor_cmdline}")
    # The gate allowed it, then QEMU loaded the handed image as the multiboot ELF it is.
    assert r.returncode == LOADED, r.stderr
    out = marker.read_text()
    assert out.split()[0] == hashlib.sha256(image).hexdigest()
    assert "TBOOT_PY_KERNEL" not in out  # the caller's stale variable never reaches the launcher
    rec = json.loads((tmp_path / "state" / "audit.jsonl").read_text().splitlines()[-1])
    assert rec["decision"] == "allow" and rec["launch"]["argv"][0] == "sh"
    assert rec["launch"]["env"]["TBOOT_PY_HYPERVISOR"] == out.split()[1]


@pytest.mark.slow
def test_xen_boots_with_a_comma_in_the_measured_dom0_cmdline(swtpm: Swtpm, tmp_path: Path,
                                                             artifacts: Artifacts) -> None:
    """One real boot through the gate: Xen, the dom0 kernel and its initrd as {qemu_modules};
    the dom0 reads back the command line with its comma, and nothing was added to the boot."""
    init = ("#!/bin/sh\nmount -t proc proc /proc\necho \"@@CMDLINE $(cat /proc/cmdline)\"\n"
            "echo \"@@MODULES $(ls /proc/self >/dev/null && echo ok)\"\npoweroff -f\n")
    initrd = build_initrd(tmp_path / "initrd.gz", init)
    cmdline = f"console=hvc0 tbootpy.marker=a,{initrd}"
    xen_cmdline = "console=com1 dom0_mem=512M"
    policy, pub = _signed(tmp_path, [
        ["--component", "hypervisor", "--file", str(artifacts.xen_elf), "--kind", "file"],
        ["--component", "kernel", "--file", str(artifacts.vmlinuz), "--kind", "pe"],
        ["--component", "initrd", "--file", str(initrd)],
        ["--component", "cmdline", "--cmdline", cmdline],
        ["--component", "hypervisor-cmdline", "--cmdline", xen_cmdline]])
    r = _gate(swtpm, tmp_path, policy, pub, "--hypervisor", str(artifacts.xen_elf), "--kernel",
              str(artifacts.vmlinuz), "--initrd", str(initrd), "--cmdline", cmdline, "--hypervisor-cmdline",
              xen_cmdline, "--", "timeout", "300", "qemu-system-x86_64", "-machine", "accel=tcg", "-cpu", "Nehalem",
              "-m", "1024", "-nographic", "-no-reboot", "-nic", "none", "-kernel", "{hypervisor}", "-append",
              "{hypervisor_cmdline}", "-initrd", "{qemu_modules}", timeout=400)
    out = r.stdout.replace("\r", "")
    assert r.returncode == 0, out[-3000:] + r.stderr
    assert "(XEN) Xen version 4.17" in out
    line = next((ln for ln in out.splitlines() if ln.startswith("@@CMDLINE")), None)
    assert line is not None, out[-3000:]
    assert line.split(" ", 1)[1].strip().endswith(f"tbootpy.marker=a,{initrd}"), line
