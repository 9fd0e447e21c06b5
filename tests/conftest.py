"""Shared fixtures: a real swtpm per test (free port, temp state), the corpus, the CLI.

The corpus of real event logs lives outside the repository: ``TBOOT_PY_CORPUS`` names it,
default ``../shared/corpus``. A test that reads it takes the ``corpus_dir`` fixture or carries
``@pytest.mark.corpus``. Without a corpus those tests do not run and the summary says so; under
``CI=true`` a missing corpus fails the run.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tboot_py._cli import main
from tboot_py.tpm.swtpm import Swtpm, free_port

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("TBOOT_PY_CORPUS") or REPO.parent / "shared" / "corpus").resolve()
HAVE_CORPUS = (CORPUS / "MANIFEST.tsv").is_file()
ARTIFACTS = REPO / ".artifacts"
_NOT_RUN: list[str] = []


def corpus_logs(pattern: str = "*.bin") -> list[Path]:
    """Corpus logs matching ``pattern`` (none without a corpus), for parametrizing at collection."""
    return sorted((CORPUS / "logs").glob(pattern)) if HAVE_CORPUS else []


def _needs_corpus(item: pytest.Item) -> bool:
    return "corpus_dir" in getattr(item, "fixturenames", ()) or item.get_closest_marker("corpus") is not None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "corpus: reads the event-log corpus (TBOOT_PY_CORPUS)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAVE_CORPUS:
        return
    need = [i for i in items if _needs_corpus(i)]
    if not need:
        return
    if os.environ.get("CI", "").lower() == "true":
        raise pytest.UsageError(f"CI=true and {len(need)} test(s) need the corpus, but there is none at {CORPUS} "
                                "(set TBOOT_PY_CORPUS)")
    _NOT_RUN.extend(i.nodeid for i in need)
    config.hook.pytest_deselected(items=need)
    items[:] = [i for i in items if not _needs_corpus(i)]


def pytest_unconfigure(config: pytest.Config) -> None:
    """Printed after pytest's own summary line, so it is the last thing ``make test`` shows."""
    reporter: Any = config.pluginmanager.get_plugin("terminalreporter")
    if _NOT_RUN and reporter is not None:
        reporter.write_line(f"{len(_NOT_RUN)} corpus test(s) did not run: no corpus at {CORPUS}. "
                                    "Point TBOOT_PY_CORPUS at a corpus directory (with MANIFEST.tsv) to run them.")


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    assert HAVE_CORPUS, f"corpus missing at {CORPUS} (set TBOOT_PY_CORPUS)"
    return CORPUS


@pytest.fixture(scope="session")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One local CA per test session; every swtpm's EK certificate chains to it."""
    return tmp_path_factory.mktemp("localca")


def start_swtpm(state: Path, ca_dir: Path, banks: str = "sha1,sha256,sha384") -> Swtpm:
    return Swtpm(state_dir=state, port=free_port(), banks=banks, ca_dir=ca_dir).start()


@pytest.fixture
def swtpm(tmp_path: Path, ca_dir: Path) -> Iterator[Swtpm]:
    """A freshly manufactured swtpm (sha1, sha256, sha384 banks) for one test."""
    tpm = start_swtpm(tmp_path / "swtpm-state", ca_dir)
    try:
        yield tpm
    finally:
        tpm.stop()


@dataclass(frozen=True)
class CliResult:
    rc: int
    out: str
    err: str


def run_cli(*argv: str) -> CliResult:
    """Run ``tboot-py`` in-process and capture its output."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return CliResult(rc, out.getvalue(), err.getvalue())


@pytest.fixture
def cli() -> type[CliResult]:
    """Use as ``run_cli`` imported from conftest; this fixture only documents the helper."""
    return CliResult
