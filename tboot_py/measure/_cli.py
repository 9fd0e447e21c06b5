"""``tboot-py measure``: digests of launch artifacts (plain, Authenticode, tboot module)."""

from __future__ import annotations

import argparse
from typing import Any

from tboot_py.errors import EXIT_OK


def register(sub: Any) -> None:
    p = sub.add_parser("measure", help="compute the digests of launch artifacts in every bank")
    p.add_argument("--kind", default="auto", choices=["auto", "file", "pe", "tboot-module"],
                   help="how to measure: auto (default), plain file hash, PE Authenticode, tboot VL module hash")
    p.add_argument("--cmdline", default=None, metavar="S",
                   help="module command line (implies a tboot module hash under --kind auto)")
    p.add_argument("--banks", default=None, metavar="LIST",
                   help="comma-separated banks (default: sha1,sha256,sha384)")
    p.add_argument("--json", action="store_true", help="machine output")
    p.add_argument("files", nargs="+", metavar="FILE", help="file to measure; - for standard input")
    p.set_defaults(func=_measure)


def _measure(args: argparse.Namespace) -> int:
    import os

    from tboot_py import algorithms
    from tboot_py._output import emit_json, hash_progress
    from tboot_py.fileio import STDIN, stdin_fd
    from tboot_py.measure import Measurement, measure

    banks = algorithms.parse_banks(args.banks) if args.banks is not None else algorithms.DEFAULT_BANKS
    results: list[Measurement] = []
    with hash_progress(enabled=not args.json) as track:
        for f in args.files:
            if f == STDIN:
                fd = stdin_fd("the file to measure")
                try:
                    results.append(measure(fd, kind=args.kind, banks=banks, cmdline=args.cmdline, name=STDIN))
                finally:
                    os.close(fd)
                continue
            try:
                size = os.stat(f).st_size
            except OSError:
                size = 0  # measure() reports the error
            results.append(measure(f, kind=args.kind, banks=banks, cmdline=args.cmdline, progress=track(f, size)))
    if args.json:
        emit_json({"measurements": [m.to_json() for m in results]})
    else:
        _print(results)
    return EXIT_OK


def _print(results: list[Any]) -> None:
    """A table on a terminal; in a pipe one ``bank digest kind size file`` line per file and bank."""
    import sys

    from tboot_py._output import Column, is_terminal, print_table

    if not is_terminal():
        for m in results:
            for bank, hexd in m.digests.hex().items():
                sys.stdout.write(f"{bank} {hexd} {m.kind.value} {m.size} {m.name}\n")
        return
    rows = []
    for m in results:
        first = True
        for bank, hexd in m.digests.hex().items():
            label = m.name if m.cmdline is None or not first else f"{m.name}\ncmdline: {m.cmdline!r}"
            rows.append((label if first else "", m.kind.value if first else "", str(m.size) if first else "",
                         bank, hexd))
            first = False
    print_table("Measurements", (Column("file"), Column("kind"), Column("size", right=True), Column("bank"),
                                 Column("digest", digest=True)), rows)
