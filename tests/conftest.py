"""Shared fixtures: a real swtpm per test (free port, temp state), the corpus, the CLI."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tboot_py._cli import main
from tboot_py.tpm.swtpm import Swtpm, free_port

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
ARTIFACTS = REPO / ".artifacts"


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    assert (CORPUS / "MANIFEST.tsv").is_file(), f"corpus missing at {CORPUS}"
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
