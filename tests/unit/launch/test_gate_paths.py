"""Paths the gate writes (--log, --audit-log, --evidence-out) get the checks --state gets: no
symbolic link, no directory others can write. Refused before the TPM is opened (exit 2)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import run_cli

NO_TPM = "swtpm:host=127.0.0.1,port=1"


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Path]:
    os.chmod(tmp_path, 0o700)
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k" * 64)
    policy = tmp_path / "policy.toml"
    assert run_cli("policy", "init", str(policy)).rc == 0
    assert run_cli("policy", "add", str(policy), "--component", "kernel", "--file", str(kernel)).rc == 0
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o777)
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(target / "file")
    return {"dir": tmp_path, "kernel": kernel, "policy": policy, "loose": loose, "link": link}


@pytest.mark.parametrize("option", ["--log", "--audit-log", "--evidence-out"])
@pytest.mark.parametrize("where", ["symlink", "loose-dir"])
def test_written_paths_refuse_symlinks_and_directories_others_can_write(setup: dict[str, Path], option: str,
                                                                        where: str) -> None:
    path = setup["link"] if where == "symlink" else setup["loose"] / "file"
    r = run_cli("launch", "--policy", str(setup["policy"]), "--tpm", NO_TPM, "--state", str(setup["dir"] / "state"),
                "--kernel", str(setup["kernel"]), "--dry-run", option, str(path))
    assert r.rc == 2, r.err
    assert "Traceback" not in r.err
    assert ("symbolic link" if where == "symlink" else "writable by nobody else") in r.err
    assert not (setup["dir"] / "elsewhere" / "file").exists()
    assert not (setup["loose"] / "file").exists()
