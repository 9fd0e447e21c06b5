"""Database engines: SQLite (WAL, one writer at a time) by default, PostgreSQL for fleets.

SQLite: every transaction that may write starts with ``BEGIN IMMEDIATE``, so a
read-modify-write (a nonce consumed, a lease taken) holds the single writer lock from its
first read; that is SQLite's equivalent of PostgreSQL's row locks. Read-only connections
(``tboot_readonly``) start a deferred transaction and read a WAL snapshot. PostgreSQL: work is claimed with
``SELECT ... FOR UPDATE SKIP LOCKED``. Migrations (Alembic, shipped in the package) run at
start-up under a lock, so several processes may start together.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tboot_py.errors import InputError

_MIGRATION_LOCK = 0x7B007  # pg_advisory_lock key for migrations


def normalize_url(url: str) -> str:
    """``postgresql://`` uses psycopg 3; a bare path means a SQLite file."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if "://" not in url:
        return f"sqlite:///{Path(url).resolve()}"
    if url.startswith(("sqlite:///", "postgresql+psycopg://")):
        return url
    raise InputError(f"unsupported database URL {url.split('://')[0]}://... (sqlite:/// or postgresql://)")


def is_sqlite(engine: sa.Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str, pool_size: int = 8) -> sa.Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                                  pool_size=pool_size, max_overflow=4)

        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None  # let the "begin" hook below issue BEGIN
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            readonly = conn.get_execution_options().get("tboot_readonly", False)
            conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

        return engine
    engine = sa.create_engine(url, pool_size=pool_size, max_overflow=4)
    _ping_when_idle(engine)
    return engine


#: A pooled connection idle longer than this is pinged before use (the database may have
#: restarted meanwhile); a busy pool skips the round trip on every checkout.
IDLE_PING_S = 5.0


def _ping_when_idle(engine: sa.Engine) -> None:
    """SQLAlchemy's pessimistic disconnect handling, but only for connections that sat idle:
    a failed ping raises DisconnectionError, and the pool retries with a fresh connection."""

    @sa.event.listens_for(engine, "checkin")
    def _checkin(_dbapi_conn: Any, rec: Any) -> None:
        rec.info["tboot_idle_since"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, rec: Any, _proxy: Any) -> None:
        since = rec.info.get("tboot_idle_since")
        if since is None or time.monotonic() - since < IDLE_PING_S:
            return
        try:
            with dbapi_conn.cursor() as cur:
                cur.execute("SELECT 1")
            dbapi_conn.rollback()
        except Exception as e:
            raise sa.exc.DisconnectionError(str(e)) from e


def migrate(engine: sa.Engine) -> None:
    """Bring the schema to the newest revision (idempotent; serialized across processes)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).resolve().parent / "migrations"))
    with engine.begin() as conn:
        if not is_sqlite(engine):
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
