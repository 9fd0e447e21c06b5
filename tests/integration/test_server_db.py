"""The PostgreSQL pool pings only connections that sat idle, and so survives the database
dropping them (a real cluster; pg_terminate_backend, as a restart would)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tboot_py.server import db
from tboot_py.server._harness import Postgres, postgres

pytestmark = pytest.mark.integration


def _restart(pg: Postgres) -> None:
    """Terminate every other backend: pooled connections are then dead, as after a restart."""
    import psycopg

    with psycopg.connect(f"host=127.0.0.1 port={pg.port} user=postgres dbname=postgres", autocommit=True) as c:
        c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                  "WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'")


def test_idle_connections_are_pinged_after_a_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    with postgres() as pg:
        engine = db.make_engine(pg.url, pool_size=2)
        with engine.connect() as c:
            assert c.execute(sa.text("SELECT 1")).scalar() == 1
        _restart(pg)
        monkeypatch.setattr(db, "IDLE_PING_S", 0.0)
        with engine.connect() as c:  # the stale pooled connection fails its ping and is replaced
            assert c.execute(sa.text("SELECT 1")).scalar() == 1
        engine.dispose()


def test_busy_connections_are_not_pinged(monkeypatch: pytest.MonkeyPatch) -> None:
    with postgres() as pg:
        engine = db.make_engine(pg.url, pool_size=2)
        with engine.connect() as c:
            c.execute(sa.text("SELECT 1"))
        _restart(pg)
        monkeypatch.setattr(db, "IDLE_PING_S", 3600.0)
        # Without the ping the stale connection is used and fails: the ping is what saves it.
        with pytest.raises(sa.exc.OperationalError), engine.connect() as c:
            c.execute(sa.text("SELECT 1"))
        engine.dispose()
