"""Real server processes and swtpm-backed hosts for the attestation service tests."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tboot_py.server._harness import Postgres, postgres
from tboot_py.tpm.swtpm import Swtpm
from tests.conftest import CliResult, run_cli, start_swtpm

REPO = Path(__file__).resolve().parents[2]


def ok(r: CliResult) -> CliResult:
    assert r.rc == 0, r.err + r.out
    return r


@dataclass
class HostTPM:
    """A simulated host: a swtpm with a tboot-py measurement log of a kernel, initrd and cmdline."""

    name: str
    tpm: Swtpm
    dir: Path
    log: Path
    state: Path = field(init=False)

    def __post_init__(self) -> None:
        self.state = self.dir / "agent"

    def agent_argv(self, servers: Sequence[str], *extra: str) -> list[str]:
        argv = [sys.executable, "-m", "tboot_py", "agent", "--tpm", self.tpm.tcti, "--state", str(self.state),
                "--name", self.name, "--event-log", f"tboot-py={self.log}"]
        for s in servers:
            argv += ["--server", s]
        return argv + list(extra)

    def agent_once(self, servers: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.agent_argv(servers, "--once", "--json"), capture_output=True, text=True,
                              timeout=120, check=False, cwd=REPO)

    def extend(self, kernel: Path, initrd: Path, cmdline: str = "console=hvc0") -> None:
        ok(run_cli("extend", "--tpm", self.tpm.tcti, "--log", str(self.log), "--kernel", str(kernel),
                   "--initrd", str(initrd), "--cmdline", cmdline))


@dataclass
class Artifacts:
    kernel: Path
    initrd: Path
    policy: Path  # signed DSSE envelope
    pub: Path
    key: Path


def make_artifacts(d: Path) -> Artifacts:
    d.mkdir(parents=True, exist_ok=True)
    kernel = d / "vmlinuz"
    kernel.write_bytes(b"a kernel image " * 4096)
    initrd = d / "initrd.img"
    initrd.write_bytes(bytes(range(256)) * 512)
    plain = d / "policy.toml"
    ok(run_cli("policy", "init", str(plain)))
    ok(run_cli("policy", "add", str(plain), "--component", "kernel", "--file", str(kernel), "--label", "k1"))
    ok(run_cli("policy", "add", str(plain), "--component", "initrd", "--file", str(initrd), "--label", "i1"))
    ok(run_cli("policy", "add", str(plain), "--component", "cmdline", "--cmdline", "console=hvc0"))
    key = d / "policy.key"
    ok(run_cli("policy", "keygen", "-o", str(key)))
    signed = d / "policy.signed.json"
    ok(run_cli("policy", "sign", str(plain), "--key", str(key), "-o", str(signed)))
    return Artifacts(kernel, initrd, signed, Path(str(key) + ".pub"), key)


@contextlib.contextmanager
def hosts(base: Path, ca_dir: Path, n: int, art: Artifacts, prefix: str = "host") -> Iterator[list[HostTPM]]:
    out: list[HostTPM] = []
    try:
        for i in range(n):
            d = base / f"{prefix}{i}"
            d.mkdir(parents=True, exist_ok=True)
            tpm = start_swtpm(d / "swtpm", ca_dir, banks="sha256")
            h = HostTPM(f"{prefix}{i}", tpm, d, d / "tboot-py.log")
            out.append(h)
            h.extend(art.kernel, art.initrd)
        yield out
    finally:
        for h in out:
            h.tpm.stop()


def json_out(p: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    try:
        d: dict[str, Any] = json.loads(p.stdout)
    except ValueError as e:
        raise AssertionError(f"rc {p.returncode}: {p.stdout} {p.stderr}") from e
    return d


@pytest.fixture(scope="session")
def pg() -> Iterator[Postgres]:
    """One PostgreSQL cluster per test session (import this fixture into a test module)."""
    with postgres() as cluster:
        yield cluster
