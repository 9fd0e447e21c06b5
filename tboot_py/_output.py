"""Shared CLI output helpers: JSON on stdout, rich tables for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.table import Table


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def emit_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def pcrs_json(values: Mapping[str, Mapping[int, bytes]]) -> dict[str, dict[str, str]]:
    """``{bank: {"pcr": "hex"}}`` with PCRs in numeric order (the README's JSON shape)."""
    return {bank: {str(i): values[bank][i].hex() for i in sorted(values[bank])} for bank in values}


def pcr_table(values: Mapping[str, Mapping[int, bytes]], title: str = "PCRs") -> Table:
    t = Table(title=title)
    t.add_column("PCR", justify="right")
    t.add_column("bank")
    t.add_column("value", overflow="fold")
    for bank, regs in values.items():
        for i in sorted(regs):
            t.add_row(str(i), bank, regs[i].hex())
    return t


#: Files at least this large get a progress bar when stderr is a terminal.
PROGRESS_MIN_BYTES = 64 * 1024 * 1024

Tracker = Callable[[str, int], "Callable[[int], None] | None"]


@contextmanager
def hash_progress(enabled: bool = True) -> Iterator[Tracker]:
    """Yields ``track(name, size)``, which returns a bytes-done callback for one file, or
    None when no bar is wanted (not a terminal, small file, or disabled)."""
    if not enabled or not sys.stderr.isatty():
        yield lambda _name, _size: None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=console(stderr=True), transient=True) as bar:

        def track(name: str, size: int) -> Callable[[int], None] | None:
            if size < PROGRESS_MIN_BYTES:
                return None
            task = bar.add_task(name, total=size)
            return lambda done: bar.update(task, completed=done)

        yield track
