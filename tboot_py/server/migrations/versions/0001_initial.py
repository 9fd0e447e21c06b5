"""The initial schema: hosts, enrollments, nonces, policies, results, events, webhooks, keys.

Later schema changes go in new revisions with explicit ``op`` calls; this first one creates
the tables as ``tboot_py.server.schema`` defined them when it was written.
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    from tboot_py.server.schema import metadata

    metadata.create_all(op.get_bind())


def downgrade() -> None:
    from tboot_py.server.schema import metadata

    metadata.drop_all(op.get_bind())
