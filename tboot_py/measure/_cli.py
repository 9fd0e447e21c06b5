"""``tboot-py measure``: digests of launch artifacts (plain, Authenticode, tboot module)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tboot_py.errors import EXIT_OK

#: Files at least this large get a progress bar when stderr is a terminal.
PROGRESS_MIN_BYTES = 64 * 1024 * 1024


def register(sub: Any) -> None:
    p = sub.add_parser("measure", help="compute the digests of launch artifacts in every bank")
    p.add_argument("--kind", default="auto", choices=["auto", "file", "pe", "tboot-module"],
                   help="how to measure: auto (default), plain file hash, PE Authenticode, tboot VL module hash")
    p.add_argument("--cmdline", default=None, metavar="S",
                   help="module command line (implies a tboot module hash under --kind auto)")
    p.add_argument("--banks", default=None, metavar="LIST",
                   help="comma-separated banks (default: sha1,sha256,sha384)")
    p.add_argument("--json", action="store_true", help="machine output")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=_measure)


def _measure(args: argparse.Namespace) -> int:
    import os

    from tboot_py import algorithms
    from tboot_py._output import console, emit_json
    from tboot_py.measure import Measurement, measure

    banks = algorithms.parse_banks(args.banks) if args.banks is not None else algorithms.DEFAULT_BANKS
    results: list[Measurement] = []
    show_progress = not args.json and sys.stderr.isatty()
    for f in args.files:
        size = 0
        if show_progress:
            try:
                size = os.stat(f).st_size
            except OSError:
                size = 0
        if show_progress and size >= PROGRESS_MIN_BYTES:
            results.append(_with_progress(f, size, args, banks))
        else:
            results.append(measure(f, kind=args.kind, banks=banks, cmdline=args.cmdline))
    if args.json:
        emit_json({"measurements": [m.to_json() for m in results]})
    else:
        console().print(_table(results))
    return EXIT_OK


def _with_progress(f: str, size: int, args: argparse.Namespace, banks: Any) -> Any:
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from tboot_py._output import console
    from tboot_py.measure import measure

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=console(stderr=True), transient=True) as bar:
        task = bar.add_task(f, total=size)
        return measure(f, kind=args.kind, banks=banks, cmdline=args.cmdline,
                       progress=lambda done: bar.update(task, completed=done))


def _table(results: list[Any]) -> Any:
    from rich.table import Table

    t = Table(title="Measurements")
    t.add_column("file", overflow="fold")
    t.add_column("kind")
    t.add_column("size", justify="right")
    t.add_column("bank")
    t.add_column("digest", overflow="fold")
    for m in results:
        first = True
        for bank, hexd in m.digests.hex().items():
            label = m.name if m.cmdline is None or not first else f"{m.name}\ncmdline: {m.cmdline!r}"
            t.add_row(label if first else "", m.kind.value if first else "", str(m.size) if first else "",
                      bank, hexd)
            first = False
    return t
