"""Recompute stored verdicts from their archived evidence (``tboot-py audit recheck``).

Every result the service stored keeps the evidence exactly as received, the nonce it was
issued for and the policy version it was appraised under (DESIGN.md: "Every stored verdict
keeps its evidence, so it can be recomputed offline later"). Here each one goes through the
same appraisal call the server makes, with the AK that was bound to the host when the
result was stored (from the issued enrollments), and the outcome is compared with what is
stored: the decision, its status and reason, the quoted PCR digest, the failed checks with
their expected and actual digests, the policy digest, and the signed EAR's claims. Any
difference means the database was edited, or the appraisal changed since.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tboot_py.server.schema import enrollments, hosts, policies, results, signing_keys


@dataclass(frozen=True)
class Recheck:
    """One stored result recomputed. ``differences`` is empty when it stands."""

    result_id: int
    host: str
    created_at: float
    stored_allowed: bool
    recomputed_allowed: bool
    stored_reason: str
    recomputed_reason: str
    evidence_sha256: str
    policy_digest: str | None
    differences: tuple[str, ...]

    @property
    def same(self) -> bool:
        return not self.differences

    def as_json(self) -> dict[str, Any]:
        return {"result_id": self.result_id, "host": self.host, "created_at": self.created_at,
                "stored_allowed": self.stored_allowed, "recomputed_allowed": self.recomputed_allowed,
                "stored_reason": self.stored_reason, "recomputed_reason": self.recomputed_reason,
                "evidence_sha256": self.evidence_sha256, "policy_digest": self.policy_digest,
                "same": self.same, "differences": list(self.differences)}


def _failed(details: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """The failed checks of an appraisal, as comparable tuples."""
    verdict = details.get("verdict")
    out = []
    if isinstance(verdict, Mapping):
        for r in verdict.get("reasons") or []:
            if isinstance(r, Mapping) and not r.get("passed", True):
                out.append((r.get("rule"), r.get("check"), r.get("component"), r.get("bank"), r.get("pcr"),
                            tuple(r.get("expected") or ()), r.get("actual")))
    return sorted(out, key=repr)


def _keys(c: sa.Connection) -> dict[str, Any]:
    from cryptography.hazmat.primitives import serialization

    from tboot_py.server import ear as ears

    out: dict[str, Any] = {}
    for pem in c.execute(sa.select(signing_keys.c.private_pem)).scalars():
        pub = serialization.load_pem_private_key(pem, None).public_key()
        out[ears.key_id(pub)] = pub  # type: ignore[arg-type]
    return out


def _ear_differences(token: str | None, row: Any, host: str, keys: Mapping[str, Any]) -> list[str]:
    from tboot_py.server.ear import EARError, verify_ear

    if not token:
        return ["no EAR stored"]
    try:
        ear = verify_ear(token, keys, check_expiry=False)
    except EARError as e:
        return [f"EAR: {e.diagnostics()}"]
    sub = ear.claims.get("submods", {}).get("tboot-py", {}) if isinstance(ear.claims.get("submods"), dict) else {}
    want = {"status": row.status, "host": host, "nonce": row.nonce, "result id": row.id,
            "policy": None if row.policy_digest is None else f"sha256:{row.policy_digest}",
            "PCR digest": row.pcr_digest}
    got = {"status": ear.status, "host": ear.host, "nonce": ear.nonce,
           "result id": sub.get("tboot-py.result-id") if isinstance(sub, dict) else None,
           "policy": ear.policy_id, "PCR digest": ear.pcr_digest}
    return [f"EAR {k}: signed {got[k]!r}, stored {want[k]!r}" for k in want if got[k] != want[k]]


def _bound_keys(c: sa.Connection, host_row: Any, at: float) -> tuple[bytes, bytes | None]:
    """The AK (and EK) bound to the host when a result was stored."""
    e = c.execute(sa.select(enrollments.c.ak_public, enrollments.c.ek_public)
                  .where(enrollments.c.host_name == host_row.name, enrollments.c.status == "issued",
                         enrollments.c.created_at <= at)
                  .order_by(enrollments.c.created_at.desc()).limit(1)).first()
    if e is not None:
        return bytes(e.ak_public), bytes(e.ek_public)
    return bytes(host_row.ak_public or b""), None if host_row.ek_public is None else bytes(host_row.ek_public)


def recheck(engine: sa.Engine, *, host: str | None = None, result_ids: Sequence[int] = (),
            trust_keys: Sequence[Any] | None = None) -> Iterator[Recheck]:
    """Recompute the stored results (all, one host's, or the given ids), oldest first.
    ``trust_keys``: policy signing keys; then every stored policy's signature is checked too."""
    from tboot_py.errors import Error
    from tboot_py.policy import loads_policy
    from tboot_py.server.appraisal import Outcome, appraise_evidence, policy_digest
    from tboot_py.server.ear import AFFIRMING, CONTRAINDICATED
    from tboot_py.tpm.evidence import parse_evidence

    q = sa.select(results.c.id).order_by(results.c.id)
    if host is not None:
        q = q.join(hosts, hosts.c.id == results.c.host_id).where(hosts.c.name == host)
    if result_ids:
        q = q.where(results.c.id.in_(list(result_ids)))
    with engine.connect() as c:
        ids = [int(i) for i in c.execute(q).scalars()]
        keys = _keys(c)
    cache: dict[int, Any] = {}
    for rid in ids:
        with engine.connect() as c:
            row = c.execute(sa.select(results).where(results.c.id == rid)).one()
            hrow = c.execute(sa.select(hosts).where(hosts.c.id == row.host_id)).one()
            prow = None if row.policy_id is None else c.execute(
                sa.select(policies).where(policies.c.id == row.policy_id)).first()
            ak, ek = _bound_keys(c, hrow, row.created_at)
        diffs: list[str] = []
        if prow is not None:
            body = bytes(prow.body)
            if policy_digest(body) != prow.digest:
                diffs.append(f"policy v{prow.version} body does not hash to its stored digest")
            if row.policy_digest != policy_digest(body):
                diffs.append(f"policy digest: stored {row.policy_digest}, the policy's {policy_digest(body)}")
        elif row.policy_digest is not None:
            diffs.append("the result names a policy digest but no stored policy")
        try:
            policy = None
            if prow is not None:
                if prow.id not in cache:
                    cache[prow.id] = loads_policy(bytes(prow.body), trust_keys,
                                                  source=f"policy {prow.scope}/{prow.target} v{prow.version}")
                policy = cache[prow.id]
            evidence = parse_evidence(row.evidence.encode(), source=f"result {rid} evidence")
            out = appraise_evidence(evidence, bytes.fromhex(row.nonce), ak, ek, policy)
        except Error as e:
            out = Outcome(False, e.diagnostics(), {"reason": e.diagnostics()}, (), None)
        except ValueError as e:
            out = Outcome(False, f"stored data unusable: {e}", {}, (), None)
        try:
            stored = json.loads(row.appraisal)
        except ValueError:
            stored = {}
        if bool(row.allowed) != out.allowed:
            diffs.append(f"decision: stored {'allowed' if row.allowed else 'denied'}, "
                         f"recomputed {'allowed' if out.allowed else 'denied'}")
        if row.status != (AFFIRMING if out.allowed else CONTRAINDICATED):
            diffs.append(f"status: stored {row.status}")
        if row.reason != out.reason[:2000]:
            diffs.append(f"reason: stored {row.reason!r}, recomputed {out.reason!r}")
        if row.pcr_digest != out.pcr_digest:
            diffs.append(f"PCR digest: stored {row.pcr_digest}, recomputed {out.pcr_digest}")
        if _failed(stored) != _failed(out.details):
            diffs.append("the failed checks (expected/actual digests) differ from the stored appraisal")
        diffs += _ear_differences(row.ear, row, hrow.name, keys)
        yield Recheck(rid, hrow.name, row.created_at, bool(row.allowed), out.allowed, row.reason, out.reason,
                      hashlib.sha256(row.evidence.encode()).hexdigest(), row.policy_digest, tuple(diffs))
