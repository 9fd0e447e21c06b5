"""Shared CLI output: JSON, plain records for pipes, tables for people.

On a terminal, tables (rich, imported only then). Off a terminal, plain text: one record per
line, fields separated by single spaces, no title, no colour, so ``grep`` and ``awk`` work and
start-up skips rich. A digest is never broken across lines: in a table, digest columns never
wrap, other columns fold, and the table grows past the terminal width rather than split one.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def is_terminal(stderr: bool = False) -> bool:
    stream = sys.stderr if stderr else sys.stdout
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def emit_json(obj: Any) -> None:
    import json  # only here: plain and table output never load it

    json.dump(obj, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


_MARKUP = re.compile(r"\[/?(?:bold|green|red|yellow|dim)?(?: (?:green|red|yellow))?\]")


def say(text: str, stderr: bool = False) -> None:
    """One message line; rich markup such as ``[red]...[/]`` is kept only on a terminal."""
    if is_terminal(stderr):
        console(stderr).print(text, soft_wrap=True)  # the terminal wraps; rich would break digests
    else:
        print(_MARKUP.sub("", text), file=sys.stderr if stderr else sys.stdout)


def pcrs_json(values: Mapping[str, Mapping[int, bytes]]) -> dict[str, dict[str, str]]:
    """``{bank: {"pcr": "hex"}}`` with PCRs in numeric order (the README's JSON shape)."""
    return {bank: {str(i): values[bank][i].hex() for i in sorted(values[bank])} for bank in values}


@dataclass(frozen=True)
class Column:
    header: str
    digest: bool = False  # never wrapped: hex digests, PCR values
    right: bool = False


def print_table(title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]], stderr: bool = False) -> None:
    """A table on a terminal, else one record per line (no title, fields space-separated)."""
    stream = sys.stderr if stderr else sys.stdout
    if not is_terminal(stderr):
        for row in rows:
            stream.write(" ".join(_plain(c) for c in row) + "\n")
        return
    import shutil

    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for i, col in enumerate(columns):
        widest = max([len(col.header), *(len(line) for r in rows for line in r[i].splitlines())])
        if col.digest:
            t.add_column(col.header, no_wrap=True, min_width=widest, justify="right" if col.right else "left")
        else:
            t.add_column(col.header, overflow="fold", justify="right" if col.right else "left")
    for row in rows:
        t.add_row(*row)
    # Each column costs 3 cells of border and padding; a folded column keeps at least 8.
    need = 1 + sum(3 + (max(len(c.header), *(len(r[i]) for r in rows)) if c.digest else 8)
                   for i, c in enumerate(columns))
    width = max(shutil.get_terminal_size().columns, need)
    Console(file=stream, width=width, highlight=False, soft_wrap=False).print(t)


def _plain(cell: str) -> str:
    text = "; ".join(line.strip() for line in cell.splitlines() if line.strip())
    return _MARKUP.sub("", text) or "-"


PCR_COLUMNS = (Column("bank"), Column("PCR", right=True), Column("value", digest=True))


def print_pcrs(values: Mapping[str, Mapping[int, bytes]], title: str = "PCRs") -> None:
    """PCR values: a table, or ``bank pcr hex`` lines."""
    rows = [(bank, str(i), regs[i].hex()) for bank, regs in values.items() for i in sorted(regs)]
    print_table(title, PCR_COLUMNS, rows)


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
