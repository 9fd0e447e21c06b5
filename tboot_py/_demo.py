"""``make demo``: a measured launch of real Xen 4.17 with a real Debian dom0 kernel.

1. Fetch the Debian artifacts and build a tiny dom0 initrd.
2. Start a fresh swtpm (EK certificate from swtpm-config's local CA).
3. Write a policy from the artifacts, sign it (Ed25519, DSSE).
4. Run the gate: it measures sealed copies, extends the TPM, logs, quotes, verifies its own
   quote, evaluates the signed policy and then boots Xen + dom0 under QEMU (software
   emulation). The dom0 prints a line and powers off.
5. Flip one byte of the initrd and run the gate again: it refuses, naming the component
   and the expected and actual digests, and the launcher never runs.
6. Show the PCRs, the event log and the audit chain.

Exit status 0 only if all of that happened as described.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
DOM0_MARK = "tboot-py demo: dom0 is up"
CMDLINE = "console=hvc0"
XEN_CMDLINE = "console=com1 dom0_mem=512M"
INIT = f"""#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo "{DOM0_MARK} (kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) vcpu)"
poweroff -f
"""

con = Console(highlight=False, width=120)


def _run(argv: Sequence[str], *, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if check and p.returncode != 0:
        con.print(p.stdout, markup=False)
        con.print(p.stderr, markup=False)
        raise SystemExit(f"demo: command failed ({p.returncode}): {' '.join(argv)}")
    return p


def tboot_py(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "tboot_py", *args], timeout=timeout, check=check)


def step(title: str) -> None:
    con.rule(f"[bold cyan]{title}")


def qemu_command() -> list[str]:
    """QEMU boots Xen (multiboot) with the dom0 kernel and initrd as modules. Every
    placeholder is a whole argument; {qemu_modules} is the gate's own "KERNEL CMDLINE,INITRD"
    list for -initrd, with the command line's commas doubled so none can add a module."""
    return ["timeout", "300", "qemu-system-x86_64", "-machine", "accel=tcg", "-cpu", "Nehalem", "-m", "1024",
            "-nographic", "-no-reboot", "-nic", "none", "-kernel", "{hypervisor}", "-append", "{hypervisor_cmdline}",
            "-initrd", "{qemu_modules}"]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tboot_py._demo")
    ap.add_argument("--workdir", type=Path, default=REPO / ".state" / "demo")
    args = ap.parse_args(argv)
    # The tboot-py commands the demo runs print rich tables; give them the demo's width.
    os.environ.setdefault("COLUMNS", "120")
    from tboot_py._artifacts import build_initrd, fetch_all
    from tboot_py.tpm.swtpm import Swtpm, free_port

    work: Path = args.workdir
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)

    step("1. Real artifacts from Debian")
    art = fetch_all()
    initrd = build_initrd(work / "dom0-initrd.gz", INIT)
    t = Table("component", "file", "bytes", "origin")
    t.add_row("hypervisor", art.xen_elf.name, str(art.xen_elf.stat().st_size),
              f"xen-hypervisor-4.17-amd64 {art.xen_version} (gunzipped multiboot ELF)")
    t.add_row("kernel", art.vmlinuz.name, str(art.vmlinuz.stat().st_size),
              f"linux-image-{art.kernel_version} {art.kernel_package_version} (signed EFI stub)")
    t.add_row("initrd", initrd.name, str(initrd.stat().st_size), "busybox initrd built by the demo")
    con.print(t)

    step("2. Software TPM")
    tpm = Swtpm(state_dir=work / "swtpm", port=free_port(), ca_dir=work / "localca").start()
    try:
        return _demo(work, art, initrd, tpm)
    finally:
        tpm.stop()


def _demo(work: Path, art: object, initrd: Path, tpm: object) -> int:
    from tboot_py._artifacts import Artifacts
    from tboot_py.tpm.swtpm import Swtpm

    assert isinstance(art, Artifacts) and isinstance(tpm, Swtpm)
    con.print(f"swtpm running: [bold]{tpm.tcti}[/] (banks sha1, sha256, sha384; EK cert from the local CA)")

    step("3. Policy from the artifacts, signed")
    policy, key, signed = work / "policy.toml", work / "policy.key", work / "policy.signed.json"
    tboot_py("policy", "init", str(policy))
    tboot_py("policy", "add", str(policy), "--component", "hypervisor", "--file", str(art.xen_elf),
             "--kind", "file", "--label", f"xen {art.xen_version}")
    tboot_py("policy", "add", str(policy), "--component", "kernel", "--file", str(art.vmlinuz),
             "--kind", "pe", "--label", f"linux {art.kernel_package_version}")
    tboot_py("policy", "add", str(policy), "--component", "initrd", "--file", str(initrd), "--label", "demo initrd")
    tboot_py("policy", "add", str(policy), "--component", "cmdline", "--cmdline", CMDLINE, "--label", "dom0")
    tboot_py("policy", "add", str(policy), "--component", "hypervisor-cmdline", "--cmdline", XEN_CMDLINE,
             "--label", "xen")
    tboot_py("policy", "keygen", "-o", str(key))
    tboot_py("policy", "sign", str(policy), "--key", str(key), "-o", str(signed))
    con.print(tboot_py("policy", "show", str(signed), "--trust-key", f"{key}.pub").stdout, markup=False) \
        if _has_show_trust() else con.print(tboot_py("policy", "show", str(policy)).stdout, markup=False)

    state = work / "gate-state"
    gate = ["launch", "--policy", str(signed), "--trust-key", f"{key}.pub", "--tpm", tpm.tcti,
            "--state", str(state), "--hypervisor", str(art.xen_elf), "--kernel", str(art.vmlinuz),
            "--cmdline", CMDLINE, "--hypervisor-cmdline", XEN_CMDLINE]

    step("4. Gate passes, Xen boots the dom0 (QEMU, software emulation)")
    t0 = time.monotonic()
    evidence = work / "evidence.json"
    good = tboot_py(*gate, "--initrd", str(initrd), "--evidence-out", str(evidence), "--", *qemu_command(),
                    timeout=400, check=False)
    took = time.monotonic() - t0
    con.print(good.stderr, markup=False, highlight=False)
    boot_lines = [ln for ln in good.stdout.splitlines()
                  if ln.startswith("(XEN) Xen version") or "Command line" in ln or DOM0_MARK in ln
                  or "Power down" in ln]
    con.print(Panel("\n".join(boot_lines) or good.stdout[-2000:], title=f"serial console (excerpt, {took:.0f} s)"))
    booted = good.returncode == 0 and any(DOM0_MARK in ln for ln in boot_lines)
    if not booted:
        con.print(good.stdout[-4000:], markup=False)
        con.print(f"[bold red]demo failed:[/] the allowed launch did not boot the dom0 (exit {good.returncode})")
        return 1
    con.print(f"[bold green]dom0 booted under Xen[/] after the gate allowed it (exit {good.returncode}).")

    step("5. One flipped byte in the initrd: the gate refuses")
    bad_initrd = work / "dom0-initrd.tampered.gz"
    data = bytearray(initrd.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad_initrd.write_bytes(bytes(data))
    marker = work / "launcher-ran"
    bad = tboot_py(*gate, "--initrd", str(bad_initrd), "--json", "--", "touch", str(marker), check=False)
    decision = json.loads(bad.stdout) if bad.stdout.strip() else {}
    failed = [r for r in (decision.get("verdict") or {}).get("reasons", []) if not r["passed"] and r.get("component")]
    t = Table("component", "bank", "expected", "actual", title="Denied", title_style="bold red")
    for r in failed:
        t.add_row(str(r["component"]), str(r.get("bank")), "\n".join(r.get("expected", [])), str(r.get("actual")))
        t.columns[2].overflow = t.columns[3].overflow = "fold"
    con.print(t)
    refused = bad.returncode == 1 and not marker.exists() and any(r.get("component") == "initrd" for r in failed)
    if not refused:
        con.print(bad.stdout, bad.stderr, markup=False)
        con.print("[bold red]demo failed:[/] the tampered initrd was not refused as expected")
        return 1
    con.print(f"[bold green]refused[/] (exit {bad.returncode}); the launcher did not run.")

    step("6. PCRs, event log, audit chain")
    con.print(tboot_py("pcrs", "--tpm", tpm.tcti, "--pcr", "9", "--banks", "sha256,sha384").stdout, markup=False)
    logs = sorted((state / "logs").glob("*.log"))
    con.print(tboot_py("log", "show", str(logs[-1])).stdout, markup=False)
    con.print(tboot_py("audit", "verify", str(state / "audit.jsonl")).stdout, markup=False)
    tboot_py("audit", "report", str(state / "audit.jsonl"), "-o", str(work / "audit-report.html"))
    con.print(f"compliance report: {work / 'audit-report.html'}")

    step("7. A remote verifier re-checks the allowed launch from its evidence")
    first = json.loads((state / "audit.jsonl").read_text().splitlines()[0])
    remote = tboot_py("verify", str(evidence), "--ak", str(state / "ak.json"), "--nonce", str(first["nonce"]),
                      "--policy", str(signed), "--trust-key", f"{key}.pub", check=False)
    con.print(remote.stdout, markup=False)
    if remote.returncode != 0:
        con.print(remote.stderr, markup=False)
        con.print("[bold red]demo failed:[/] the remote verifier did not confirm the allowed launch")
        return 1
    if _attestation_service(work, tpm, key, signed, art, initrd) != 0:
        return 1
    con.print(Panel("[bold green]demo passed[/]: the measured launch booted Xen and its dom0, "
                    "the tampered initrd was refused, and a remote verifier confirmed the launch from its evidence; "
                    "the attestation service enrolled the TPM, passed it, failed it after a change, and its EAR "
                    "verified offline."))
    return 0


def _attestation_service(work: Path, tpm: object, key: Path, signed: Path, art: object, initrd: Path) -> int:
    """8. The attestation service on SQLite: the demo's swtpm enrolled through the agent
    (EK chain, ActivateCredential), one passing attestation, one failing after a change,
    and the EAR checked offline against the service's published key."""
    import httpx

    from tboot_py._artifacts import Artifacts
    from tboot_py.server._harness import start_server
    from tboot_py.tpm.swtpm import Swtpm

    assert isinstance(art, Artifacts) and isinstance(tpm, Swtpm)
    step("8. Attestation service: enroll the swtpm through the agent, attest, verify the EAR offline")
    # The host reboots (PCRs start over; the tampered launch of step 5 is in the old boot). The
    # agent keeps its AK at its own handle: the gate's is 0x81010003, `tboot-py attest`'s 0x81010002.
    tpm.stop()
    tpm.start()
    log = work / "service-boot.log"
    tboot_py("extend", "--tpm", tpm.tcti, "--log", str(log), "--hypervisor", str(art.xen_elf), "--kernel",
             str(art.vmlinuz), "--initrd", str(initrd), "--cmdline", CMDLINE, "--hypervisor-cmdline", XEN_CMDLINE)
    srv = start_server(work / "service", "--ek-roots", str(work / "localca"), "--trust-key", f"{key}.pub")
    try:
        con.print(f"tboot-py serve: {srv.url} (SQLite in {work / 'service'}), admin token in "
                  f"{work / 'service' / 'admin-token'}")
        admin = ["--server", srv.url, "--admin-token-file", str(work / "service" / "admin-token")]
        tboot_py("fleet", "policy", "set", "host", "demo-host", str(signed), *admin)
        agent = ["agent", "--server", srv.url, "--tpm", tpm.tcti, "--state", str(work / "agent"), "--name",
                 "demo-host", "--ak-handle", "0x81010004", "--event-log", f"tboot-py={log}", "--once", "--json"]
        good = tboot_py(*agent, check=False)
        passed = json.loads(good.stdout) if good.stdout.strip() else {}
        con.print(f"agent --once: exit {good.returncode}, EAR status [bold]{passed.get('status')}[/]")
        # A change on the host: another initrd is measured into the same boot.
        bad_initrd = work / "service-other-initrd.gz"
        bad_initrd.write_bytes(initrd.read_bytes() + b"\0")
        tboot_py("extend", "--tpm", tpm.tcti, "--log", str(log), "--initrd", str(bad_initrd))
        bad = tboot_py(*agent, check=False)
        failed = json.loads(bad.stdout) if bad.stdout.strip() else {}
        con.print(f"agent --once after the change: exit {bad.returncode}, EAR status [bold]{failed.get('status')}[/]: "
                  f"{failed.get('reason')}")
        con.print(tboot_py("fleet", "host", "demo-host", *admin).stdout, markup=False)
        jwks = work / "service-jwks.json"
        jwks.write_text(httpx.get(srv.url + "/.well-known/jwks.json", timeout=30).text)
        ear = work / "service-ear.jwt"
        ear.write_text(str(passed.get("ear", "")))
        offline = tboot_py("ear", "verify", f"@{ear}", "--key", str(jwks), "--host", "demo-host", check=False)
        con.print(offline.stdout, markup=False)
    finally:
        srv.stop()
    if good.returncode != 0 or bad.returncode != 1 or offline.returncode != 0 or \
            failed.get("status") != "contraindicated":
        con.print(good.stderr, bad.stderr, offline.stderr, markup=False)
        con.print("[bold red]demo failed:[/] the attestation service did not pass, then fail, the host as expected")
        return 1
    con.print("[bold green]attested[/]: passing, then failing after the change; the EAR verified offline.")
    return 0


def _has_show_trust() -> bool:
    p = tboot_py("policy", "show", "--help", check=False)
    return "--trust-key" in p.stdout


if __name__ == "__main__":
    sys.exit(main())
