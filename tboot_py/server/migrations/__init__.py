"""Alembic migrations of the attestation service's database (run at server start)."""
