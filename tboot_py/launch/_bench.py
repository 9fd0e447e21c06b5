"""Benchmark: what the launch gate adds to a boot path.

Whole-process wall time of ``tboot-py launch --dry-run`` on the demo's real artifacts (Xen
4.17, Debian's signed kernel, a busybox initrd) against a real swtpm: sealed copies,
measurement in three banks, extends, log append, quote, quote verification and replay,
signed-policy evaluation and the audit record. Next to it, in the same run, the time
``tpm2_pcrextend`` takes for the same number of extends and ``tpm2_quote`` for one quote:
the TPM's share of the work, done by tpm2-tools processes.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

RUNS = 7


def _time(argv: Sequence[str], runs: int = RUNS) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        p = subprocess.run(list(argv), capture_output=True, text=True, check=False)
        out.append(time.perf_counter() - t)
        if p.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {p.stderr.strip()[-500:]}")
    return out


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "tboot_py", *args], capture_output=True, check=True)


def run() -> str:
    from tboot_py._artifacts import build_initrd, fetch_all
    from tboot_py.tpm.swtpm import Swtpm, free_port

    art = fetch_all()
    with tempfile.TemporaryDirectory(prefix="tboot-py-bench-") as d:
        tmp = Path(d)
        initrd = build_initrd(tmp / "initrd.gz", "#!/bin/sh\npoweroff -f\n")
        size = sum(p.stat().st_size for p in (art.xen_elf, art.vmlinuz, initrd))
        policy, key, signed = tmp / "p.toml", tmp / "k", tmp / "p.json"
        _cli("policy", "init", str(policy))
        for comp, f, kind in (("hypervisor", art.xen_elf, "file"), ("kernel", art.vmlinuz, "pe"),
                              ("initrd", initrd, "file")):
            _cli("policy", "add", str(policy), "--component", comp, "--file", str(f), "--kind", kind)
        _cli("policy", "add", str(policy), "--component", "cmdline", "--cmdline", "console=hvc0")
        _cli("policy", "keygen", "-o", str(key))
        _cli("policy", "sign", str(policy), "--key", str(key), "-o", str(signed))
        tpm = Swtpm(state_dir=tmp / "swtpm", port=free_port(), ca_dir=tmp / "ca").start()
        try:
            gate = [sys.executable, "-m", "tboot_py", "launch", "--policy", str(signed), "--trust-key",
                    f"{key}.pub", "--tpm", tpm.tcti, "--state", str(tmp / "state"), "--hypervisor",
                    str(art.xen_elf), "--kernel", str(art.vmlinuz), "--initrd", str(initrd), "--cmdline",
                    "console=hvc0", "--dry-run"]
            subprocess.run(gate, capture_output=True, check=True)  # first run creates the AK
            gate_t = _time(gate)
            extend = ["tpm2_pcrextend", "-T", tpm.tcti,
                      "9:sha1=" + "11" * 20 + ",sha256=" + "22" * 32 + ",sha384=" + "33" * 48]
            ext_t = [sum(_time(extend, 4)) for _ in range(RUNS)]
            quote = ["tpm2_quote", "-T", tpm.tcti, "-c", "0x81010002", "-l", "sha1:9+sha256:9+sha384:9",
                     "-q", "00" * 32, "-m", str(tmp / "q.msg"), "-s", str(tmp / "q.sig")]
            quote_t = _time(quote)
        finally:
            tpm.stop()

    def row(name: str, ts: list[float]) -> str:
        return f"| {name} | {statistics.median(ts) * 1000:.0f} ms | {min(ts) * 1000:.0f} ms |"

    return "\n".join([
        "## Launch gate: cost in the boot path",
        "",
        f"Whole-process wall time, median and best of {RUNS} runs, against a real swtpm; artifacts "
        f"{size / 1e6:.1f} MB in all (Xen 4.17 ELF, Debian signed kernel, busybox initrd), banks sha1, sha256, "
        "sha384. The gate run does everything but exec the launcher.",
        "",
        "| what | median | best |",
        "|---|---:|---:|",
        row("`tboot-py launch --dry-run` (seal, measure, 4 extends, log, quote, verify, policy, audit)", gate_t),
        row("4 x `tpm2_pcrextend` (tpm2-tools, one process each)", ext_t),
        row("1 x `tpm2_quote` (tpm2-tools)", quote_t),
        "",
    ])
