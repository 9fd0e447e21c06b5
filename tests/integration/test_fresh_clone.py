"""``make test`` in a fresh clone with no corpus passes and says which corpus tests it left out."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

# A few cheap files: one that needs the corpus throughout, one that mixes, one that never does.
SUBSET = " ".join(["tests/unit/eventlog/test_eventlog_cli.py", "tests/unit/eventlog/test_eventlog_checks.py",
                   "tests/unit/test_output.py"])


def _clone(dst: Path) -> Path:
    """The tracked files as they are in this checkout (committed or not), in a new git repository."""
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        src = REPO / name
        if src.is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)
    subprocess.run(["git", "init", "-q", str(dst)], check=True)
    # The machine is set up already: the clone shares its venv, apt stamp and downloaded artifacts.
    (dst / ".state").mkdir()
    (dst / ".state" / ".apt-installed").touch()
    (dst / ".venv").mkdir()
    (dst / ".venv" / ".installed").touch()
    if (REPO / ".artifacts").exists():
        (dst / ".artifacts").symlink_to((REPO / ".artifacts").resolve())
    return dst


def _make_test(clone: Path, **env: str) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST")}
    e.update(env)
    return subprocess.run(["make", "-s", "test", f"PY={sys.executable}", f"TESTS=-p no:cacheprovider {SUBSET}"],
                          cwd=clone, env=e, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _clone(tmp_path_factory.mktemp("clone") / "tboot-py")


def test_make_test_without_corpus_passes_and_reports_what_did_not_run(clone: Path, tmp_path: Path) -> None:
    r = _make_test(clone, TBOOT_PY_CORPUS=str(tmp_path / "no-corpus"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    last = r.stdout.strip().splitlines()[-2:]
    assert " passed" in last[0] and " deselected" in last[0], last
    n = int(last[0].split(" deselected")[0].rsplit(" ", 1)[1])
    assert last[1].startswith(f"{n} corpus test(s) did not run: no corpus at {tmp_path / 'no-corpus'}"), last
    assert "TBOOT_PY_CORPUS" in last[1] and n >= 10
    assert "Traceback" not in r.stdout + r.stderr


def test_make_test_under_ci_fails_without_corpus(clone: Path, tmp_path: Path) -> None:
    r = _make_test(clone, TBOOT_PY_CORPUS=str(tmp_path / "no-corpus"), CI="true")
    assert r.returncode != 0
    assert "need the corpus" in r.stdout + r.stderr


def test_make_test_finds_the_corpus_the_variable_names(clone: Path, corpus_dir: Path) -> None:
    r = _make_test(clone, TBOOT_PY_CORPUS=str(corpus_dir))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "deselected" not in r.stdout and "did not run" not in r.stdout
