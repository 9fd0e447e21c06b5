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
    out = Path("BENCHMARKS.md")
    kept = _sections(out.read_text() if out.exists() else "")
    written: set[str] = set()
    for name in SECTIONS:
        if only and name.rsplit(".", 2)[-2] not in only:
            continue
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        text = importlib.import_module(name).run()
        written.add(text.splitlines()[0])
        parts.append(text)
        parts.append("")
    # Sections this run did not measure (another target's, e.g. `make bench-server`, or a
    # section left out with arguments) stay as they were, with their own dates.
    for heading, body in kept:
        if heading not in written:
            parts.append(body)
            parts.append("")
    out.write_text("\n".join(parts).rstrip() + "\n")
    print("bench: wrote BENCHMARKS.md", file=sys.stderr)
    return 0


def _sections(text: str) -> list[tuple[str, str]]:
    """The ``## `` sections of a BENCHMARKS.md: (heading line, whole section)."""
    out: list[tuple[str, str]] = []
    for chunk in ("\n" + text).split("\n## ")[1:]:
        body = "## " + chunk.rstrip()
        out.append((body.splitlines()[0], body))
    return out


if __name__ == "__main__":
    sys.exit(main())
