"""``make bench``: run every benchmark section and write BENCHMARKS.md.

Each section module defines ``run() -> str`` returning Markdown. Sections compare
tboot-py against a baseline measured in the same run (OpenSSL, tpm2-tools).
"""

from __future__ import annotations

import datetime as _dt
import importlib
import os
import platform
import subprocess
import sys
from pathlib import Path

SECTIONS: tuple[str, ...] = (
    "tboot_py.measure._bench", "tboot_py.appraise._bench", "tboot_py.eventlog._bench", "tboot_py.launch._bench",
    "tboot_py._bench_cli",
)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    ossl = subprocess.run(["openssl", "version"], capture_output=True, text=True, check=False).stdout.strip()
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM; {platform.platform()}; "
            f"Python {platform.python_version()}; {ossl}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    only = set(args)
    parts = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}.",
        "",
        f"Machine: {machine()}",
        "",
    ]
    for name in SECTIONS:
        if only and name.rsplit(".", 2)[-2] not in only:
            continue
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        parts.append(importlib.import_module(name).run())
        parts.append("")
    Path("BENCHMARKS.md").write_text("\n".join(parts))
    print("bench: wrote BENCHMARKS.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
