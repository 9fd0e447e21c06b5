"""Database tables of the attestation service (SQLAlchemy Core; migrations in ``migrations/``).

All state lives here (DESIGN.md, "The attestation service"): hosts and their bound keys,
enrollment challenges, nonces, every attestation result with its evidence, policies,
state-change events and webhook deliveries. Times are UNIX seconds (float) so SQLite and
PostgreSQL compare them alike. Rows that scheduled work picks up carry a lease
(``lease_owner``, ``lease_until``) so several server processes share the work.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

#: Host states. ``pending``: enrolled key awaits approval; ``enrolled``: no attestation yet.
STATES = ("pending", "enrolled", "passing", "failing", "stale")

hosts = sa.Table(
    "hosts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("host_group", sa.String(255), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("ek_certificate", sa.LargeBinary, nullable=True),
    sa.Column("ek_public", sa.LargeBinary, nullable=True),  # TPMT_PUBLIC derived from the certificate
    sa.Column("ak_public", sa.LargeBinary, nullable=True),  # TPMT_PUBLIC, bound after ActivateCredential
    sa.Column("ak_name", sa.String(130), nullable=True),
    sa.Column("token_hash", sa.String(64), nullable=True, unique=True),
    sa.Column("interval_s", sa.Float, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("last_attested_at", sa.Float, nullable=True),
    sa.Column("last_result_id", sa.Integer, nullable=True),
    sa.Column("state_changed_at", sa.Float, nullable=False),
)

enrollments = sa.Table(
    "enrollments", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("host_name", sa.String(255), nullable=False, index=True),
    sa.Column("ek_certificate", sa.LargeBinary, nullable=False),
    sa.Column("ek_public", sa.LargeBinary, nullable=False),
    sa.Column("ak_public", sa.LargeBinary, nullable=False),
    sa.Column("ak_name", sa.String(130), nullable=False),
    sa.Column("ek_chain", sa.Text, nullable=False),  # JSON list of subjects, or the reason it failed
    sa.Column("chain_ok", sa.Boolean, nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    # challenged -> activated -> (awaiting_approval ->) approved -> issued | rejected
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

nonces = sa.Table(
    "nonces", metadata,
    sa.Column("nonce", sa.String(128), primary_key=True),
    sa.Column("host_id", sa.Integer, sa.ForeignKey("hosts.id"), nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("used_at", sa.Float, nullable=True),
)

policies = sa.Table(
    "policies", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("scope", sa.String(8), nullable=False),  # "host" or "group"
    sa.Column("target", sa.String(255), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),  # exactly the bytes uploaded (DSSE envelope or text)
    sa.Column("digest", sa.String(64), nullable=False),  # sha256 of body
    sa.Column("signed_by", sa.Text, nullable=False),  # JSON list of key ids
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("scope", "target", "version", name="uq_policy_version"),
)

results = sa.Table(
    "results", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("host_id", sa.Integer, sa.ForeignKey("hosts.id"), nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # "attest" or "reappraise"
    sa.Column("allowed", sa.Boolean, nullable=False),
    sa.Column("status", sa.String(24), nullable=False),  # EAR status
    sa.Column("reason", sa.Text, nullable=False),  # one line
    sa.Column("appraisal", sa.Text, nullable=False),  # JSON: reasons (expected/actual), quirks, verified PCRs
    sa.Column("evidence", sa.Text, nullable=False),  # the evidence bundle (JSON) exactly as received
    sa.Column("nonce", sa.String(128), nullable=False),
    sa.Column("policy_id", sa.Integer, sa.ForeignKey("policies.id"), nullable=True),
    sa.Column("policy_digest", sa.String(64), nullable=True),
    sa.Column("pcr_digest", sa.String(128), nullable=True),
    sa.Column("ear", sa.Text, nullable=True),
    sa.Column("server_id", sa.String(64), nullable=False),
)

events = sa.Table(
    "events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("host_id", sa.Integer, sa.ForeignKey("hosts.id"), nullable=False, index=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("old_state", sa.String(16), nullable=True),
    sa.Column("new_state", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("server_id", sa.String(64), nullable=False),
)

webhooks = sa.Table(
    "webhooks", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("secret", sa.String(128), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

deliveries = sa.Table(
    "deliveries", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("webhook_id", sa.Integer, sa.ForeignKey("webhooks.id"), nullable=False),
    sa.Column("event_id", sa.Integer, sa.ForeignKey("events.id"), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending, delivered, failed
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", sa.Float, nullable=False, index=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("delivered_at", sa.Float, nullable=True),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_until", sa.Float, nullable=True),
)

signing_keys = sa.Table(
    "signing_keys", metadata,
    sa.Column("kid", sa.String(64), primary_key=True),
    sa.Column("private_pem", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
