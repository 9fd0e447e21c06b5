"""Benchmark section: whole-process parse + replay (``tboot-py log replay --json``) next to
``tpm2_eventlog`` on the largest corpus log tpm2_eventlog reads and on a synthetic
100,000-event crypto-agile log written with tboot-py's writer. Both commands get the same
file; output goes to /dev/null. Timed with hyperfine when installed, else with a median of
subprocess runs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tboot_py.algorithms import SHA1, SHA256, SHA384

_DEFAULT_CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
CORPUS = Path(os.environ.get("TBOOT_PY_CORPUS") or _DEFAULT_CORPUS) / "logs"
RUNS = 7


def _synthetic(path: Path, n: int = 100_000) -> None:
    from tboot_py.eventlog.write import NewEvent, encode_event, encode_header

    banks = (SHA1, SHA256, SHA384)
    parts = [encode_header(banks)]
    for i in range(n):
        data = json.dumps({"tboot-py": 1, "component": f"c{i}", "kind": "file", "file": f"f{i}"}).encode()
        digests = {b.name: hashlib.new(b.hashlib_name, data).digest() for b in banks}
        parts.append(encode_event(NewEvent(8 + i % 2, 0x0000000D, digests, data), banks))
    path.write_bytes(b"".join(parts))


def _largest_tpm2_eventlog_log() -> Path | None:
    for p in sorted(CORPUS.glob("*.bin"), key=lambda p: p.stat().st_size, reverse=True):
        r = subprocess.run(["tpm2_eventlog", str(p)], capture_output=True, check=False)
        if r.returncode == 0:
            return p
    return None


def _time(cmd: list[str]) -> tuple[float, float]:
    """(median, min) wall seconds over RUNS runs."""
    if shutil.which("hyperfine"):
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            subprocess.run(["hyperfine", "-N", "--warmup", "1", "--runs", str(RUNS), "--export-json", out.name,
                            "--output=null", "-i", subprocess.list2cmdline(cmd)],
                           check=True, capture_output=True)
            res = json.loads(Path(out.name).read_text())["results"][0]
            return float(res["median"]), float(res["min"])
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def run() -> str:
    from tboot_py.eventlog import read_log

    lines = [
        "## Event log: parse + replay",
        "",
        "Whole-process wall time of `tboot-py log replay LOG --json` (parse, replay every bank, print "
        "JSON) next to `tpm2_eventlog LOG` (parse, print YAML with PCR values), same machine, same run; "
        f"median and best of {RUNS} runs"
        + (" (hyperfine)." if shutil.which("hyperfine") else "."),
        "",
        "| log | events | size | tboot-py median (best) | tpm2_eventlog median (best) | tpm2_eventlog / tboot-py |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory(prefix="bench-eventlog-") as tmp:
        synth = Path(tmp) / "synthetic-100000.log"
        _synthetic(synth)
        logs: list[tuple[str, Path]] = []
        big = _largest_tpm2_eventlog_log()
        if big is not None:
            logs.append((big.stem, big))
        logs.append(("synthetic, 100,000 events, sha1+sha256+sha384", synth))
        for name, path in logs:
            n = len(read_log(path).events)
            ours = _time([sys.executable, "-m", "tboot_py", "log", "replay", str(path), "--json"])
            theirs = _time(["tpm2_eventlog", str(path)])
            lines.append(f"| {name} | {n:,} | {path.stat().st_size / 1024:,.0f} KiB | "
                         f"{ours[0] * 1000:,.0f} ms ({ours[1] * 1000:,.0f}) | "
                         f"{theirs[0] * 1000:,.0f} ms ({theirs[1] * 1000:,.0f}) | {theirs[0] / ours[0]:.2f}x |")
        startup = _time([sys.executable, "-m", "tboot_py", "log", "replay", "--help"])
    lines += ["", f"Every tboot-py run includes interpreter start-up and the CLI's imports: "
              f"`tboot-py log replay --help` alone takes {startup[0] * 1000:,.0f} ms here."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
