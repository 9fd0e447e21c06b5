"""The package as users get it: `python -m build` makes an sdist and a wheel carrying the
templates, man pages and completion; the wheel installs into a fresh venv (no Makefile, no
checkout) and its `tboot-py` works on a corpus log."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

from tboot_py import __version__


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sdist and wheel built from the tracked files only (the wheel is built from the sdist)."""
    src = tmp_path_factory.mktemp("src") / "tboot-py"
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run([sys.executable, "-m", "build", "-o", str(out), str(src)], capture_output=True, text=True,
                       timeout=900, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return out


def test_sdist_and_wheel_carry_data_and_metadata(dist: Path) -> None:
    (whl,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        meta = z.read(f"tboot_py-{__version__}.dist-info/METADATA").decode()
    for want in ("tboot_py/audit/templates/", "tboot_py/server/templates/host.html.j2",
                 "tboot_py/server/templates/compliance.html.j2", "tboot_py/server/static/dashboard.css",
                 "tboot_py/share/man/man1/tboot-py.1",
                 "tboot_py/share/man/man1/tboot-py-log-replay.1", "tboot_py/share/completions/tboot-py",
                 "tboot_py/share/completions/_tboot-py", "tboot_py/launch/hooks/xl-create-measured",
                 ".data/data/share/man/man1/tboot-py.1", ".data/data/share/bash-completion/completions/tboot-py",
                 ".data/data/share/zsh/site-functions/_tboot-py", "tboot_py/py.typed"):
        assert any(want in n for n in names), want
    assert "Requires-Python: >=3.11" in meta and "License-Expression: Apache-2.0" in meta
    assert "Classifier: Programming Language :: Python :: 3.11" in meta
    with tarfile.open(sdist) as t:
        members = t.getnames()
    for want in ("templates/", "share/man/man1/tboot-py.1", "share/completions/_tboot-py", "README.md"):
        assert any(want in n for n in members), want


def test_wheel_installs_into_a_fresh_venv_and_runs(dist: Path, corpus_dir: Path, tmp_path: Path) -> None:
    (whl,) = dist.glob("*.whl")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    r = subprocess.run([str(env_dir / "bin" / "pip"), "install", "-q", str(whl)], capture_output=True, text=True,
                       timeout=900, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    exe = env_dir / "bin" / "tboot-py"

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        # From /, with no PYTHONPATH: only the installed package can answer.
        return subprocess.run([str(exe), *argv], capture_output=True, text=True, timeout=120, check=False, cwd="/",
                              env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})

    v = run("--version")
    assert v.returncode == 0 and v.stdout == f"tboot-py {__version__}\n"
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    m = run("measure", "--banks", "sha256", "--json", str(f))
    assert m.returncode == 0 and json.loads(m.stdout)["measurements"][0]["digests"]["sha256"] == \
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    stem = "tpm_futurepcr__QEMU_tpm_binary_measurements"
    rp = run("log", "replay", "--json", str(corpus_dir / "logs" / f"{stem}.bin"))
    assert rp.returncode == 0, rp.stderr
    tpm = json.loads((corpus_dir / "expected" / f"{stem}.pcrs.json").read_text())
    for pcr, value in json.loads(rp.stdout)["pcrs"]["sha256"].items():
        assert value == tpm["sha256"][pcr].lower()
    assert (env_dir / "share" / "man" / "man1" / "tboot-py-log-replay.1").is_file()
    assert (env_dir / "share" / "bash-completion" / "completions" / "tboot-py").is_file()
    assert run("hook", "xl-create", "--help").returncode == 0
