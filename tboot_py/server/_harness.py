"""Server processes and a throwaway PostgreSQL cluster (initdb + pg_ctl in a temp dir), for the
tests and the benchmark.

PostgreSQL refuses to run as root, so as root the cluster runs as the ``postgres`` user
(Debian's package creates it). Trust authentication, loopback only, fsync off.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tboot_py.errors import InputError
from tboot_py.tpm.swtpm import free_port

if TYPE_CHECKING:
    import httpx

#: Non-default settings of the throwaway cluster (a benchmark run states them). fsync=off: the
#: cluster lives for one test run; durability of a real deployment is PostgreSQL's default.
PG_SETTINGS = "fsync=off"


def pg_bindir() -> str:
    """Debian keeps the server programs in /usr/lib/postgresql/N/bin, off PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return str(Path(found[-1]).parent)
    path = shutil.which("initdb")
    if not path:
        raise InputError("PostgreSQL is not installed (Debian package postgresql; make setup installs it)")
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
        if r.returncode != 0:
            raise InputError(f"initdb failed: {r.stderr.strip()}")
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200 " + " ".join(
            f"-c {kv}" for kv in PG_SETTINGS.split(", "))
        r = self._run(f"{self.bindir}/pg_ctl", "-D", str(data), "-l", str(self.dir / "pg.log"), "-o", opts, "-w",
                      "start")
        if r.returncode != 0:
            raise InputError(f"pg_ctl start failed: {(r.stderr + r.stdout).strip()}")
        return self

    def pid(self) -> int:
        """The postmaster's process id (its first line of postmaster.pid)."""
        return int((self.dir / "data" / "postmaster.pid").read_text().split()[0])

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
    pg = Postgres(Path(tempfile.mkdtemp(prefix="tboot-pg-")), free_port(), pg_bindir())
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()


@dataclass
class Server:
    url: str
    token: str
    proc: subprocess.Popen[bytes]
    log: Path

    def admin(self) -> httpx.Client:
        import httpx

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


def start_server(state: Path, *extra: str, db: str | None = None, token_file: Path | None = None,
                 scheme: str = "http", cacert: Path | None = None) -> Server:
    """``tboot-py serve`` on a free loopback port; returns once /v1/health answers."""
    state.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"{scheme}://127.0.0.1:{port}"
    log = state / f"server-{port}.log"
    argv = [sys.executable, "-m", "tboot_py", "serve", "--state", str(state), "--listen", f"127.0.0.1:{port}",
            *(["--db", db] if db else []), *(["--admin-token-file", str(token_file)] if token_file else []), *extra]
    import ssl

    import httpx

    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(cacert)) if cacert else True
    proc = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env=dict(os.environ))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise InputError(f"server exited {proc.returncode}: {log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/v1/health", timeout=2, verify=verify).status_code == 200:
                break
        time.sleep(0.2)
    else:
        proc.kill()
        raise InputError(f"server did not come up: {log.read_text()}")
    return Server(url, (token_file or state / "admin-token").read_text().strip(), proc, log)
