"""Starting the service: database, admin token, TLS rules, uvicorn."""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from tboot_py.errors import Error, InputError
from tboot_py.server.service import Config

DEFAULT_STATE = Path("/var/lib/tboot-py/server")
DEFAULT_LISTEN = "127.0.0.1:7478"


@dataclass(frozen=True)
class ServeOptions:
    state: Path = DEFAULT_STATE
    db: str | None = None
    listen: str = DEFAULT_LISTEN
    admin_token_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_body: int = 4 * 1024 * 1024
    #: Launch audit logs shown on the dashboard's audit trail page.
    audit_logs: tuple[Path, ...] = ()
    config: Config = field(default_factory=Config)

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite:///{(self.state / 'server.sqlite').resolve()}"

    @property
    def token_path(self) -> Path:
        return self.admin_token_file or self.state / "admin-token"


class DatabaseError(Error):
    """The database cannot be reached or migrated (exit 3)."""


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--listen wants HOST:PORT, got {value!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def admin_token(path: Path) -> tuple[str, bool]:
    """The admin token from ``path``, generated (mode 0600) when the file does not exist."""
    from tboot_py.fileio import read_text

    if os.path.lexists(path):  # without blocking, regular files only (a FIFO would hang serve)
        tok = read_text(path, "admin token", 4096).strip()
        if len(tok) < 16:
            raise InputError(f"{path}: the admin token is shorter than 16 characters")
        return tok, False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tok = "tpadm_" + secrets.token_urlsafe(32)
    try:
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(tok + "\n")
    except FileExistsError:  # another process created it first
        return path.read_text().strip(), False
    return tok, True


def check_tls(opts: ServeOptions, host: str) -> bool:
    """TLS is required outside loopback; returns whether TLS is on."""
    if (opts.tls_cert is None) != (opts.tls_key is None):
        raise InputError("--tls-cert and --tls-key go together")
    if opts.tls_cert is None and not is_loopback(host):
        raise InputError(f"listening on {host} (not loopback) needs --tls-cert and --tls-key")
    for p in (opts.tls_cert, opts.tls_key):
        if p is not None and not p.is_file():
            raise InputError(f"{p}: no such file")
    return opts.tls_cert is not None


def build(opts: ServeOptions) -> tuple[object, str, bool]:
    """(ASGI app, admin token, whether the token was just created)."""
    import sqlalchemy as sa

    from tboot_py.server.app import create_app
    from tboot_py.server.db import make_engine, migrate
    from tboot_py.server.service import Service

    try:
        if opts.db is None:
            opts.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        token, created = admin_token(opts.token_path)
    except OSError as e:
        raise InputError(f"{e.filename or opts.state}: {e.strerror} (choose another --state)") from e
    engine = make_engine(opts.db_url)
    try:
        migrate(engine)
        service = Service(engine, opts.config)
    except sa.exc.SQLAlchemyError as e:
        first = (str(getattr(e, "orig", None) or e).strip().splitlines() or [type(e).__name__])[0]
        raise DatabaseError(f"database {opts.db_url.split('@')[-1]}: {first}") from e
    return create_app(service, token, opts.max_body, audit_logs=opts.audit_logs), token, created
