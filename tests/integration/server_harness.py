"""Real server processes and swtpm-backed hosts for the attestation service tests."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tboot_py.tpm.swtpm import Swtpm, free_port
from tests.conftest import CliResult, run_cli, start_swtpm

REPO = Path(__file__).resolve().parents[2]


def ok(r: CliResult) -> CliResult:
    assert r.rc == 0, r.err + r.out
    return r


@dataclass
class Server:
    url: str
    token: str
    proc: subprocess.Popen[bytes]
    log: Path

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def start_server(state: Path, *extra: str, db: str | None = None, token_file: Path | None = None) -> Server:
    """``tboot-py serve`` on a free loopback port; returns once /v1/health answers."""
    state.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = state / f"server-{port}.log"
    argv = [sys.executable, "-m", "tboot_py", "serve", "--state", str(state), "--listen", f"127.0.0.1:{port}",
            *(["--db", db] if db else []), *(["--admin-token-file", str(token_file)] if token_file else []), *extra]
    proc = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=REPO,
                            env=dict(os.environ))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}: {log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/v1/health", timeout=2).status_code == 200:
                break
        time.sleep(0.2)
    else:
        proc.kill()
        raise AssertionError(f"server did not come up: {log.read_text()}")
    return Server(url, (token_file or state / "admin-token").read_text().strip(), proc, log)


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


def pg_bindir() -> str:
    """Debian keeps the server programs in /usr/lib/postgresql/N/bin, off PATH."""
    import glob

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return str(Path(found[-1]).parent)
    path = shutil.which("initdb")
    assert path, "PostgreSQL is not installed (Debian package postgresql; make setup installs it)"
    return str(Path(path).parent)


@dataclass
class Postgres:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl in a temp dir, trust auth on loopback).
    PostgreSQL refuses to run as root, so as root the cluster belongs to the postgres user."""

    dir: Path
    port: int
    bindir: str

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        cmd = list(argv)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)

    def start(self) -> Postgres:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        data = self.dir / "data"
        r = self._run(f"{self.bindir}/initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                      "--no-sync")
        assert r.returncode == 0, r.stderr
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        r = self._run(f"{self.bindir}/pg_ctl", "-D", str(data), "-l", str(self.dir / "pg.log"), "-o", opts, "-w",
                      "start")
        assert r.returncode == 0, r.stderr + r.stdout
        return self

    def fresh_db(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}"')
            c.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self._run(f"{self.bindir}/pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def postgres() -> Iterator[Postgres]:
    import tempfile

    pg = Postgres(Path(tempfile.mkdtemp(prefix="tboot-pg-")), free_port(), pg_bindir())
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture(scope="session")
def pg() -> Iterator[Postgres]:
    """One PostgreSQL cluster per test session (import this fixture into a test module)."""
    with postgres() as cluster:
        yield cluster
