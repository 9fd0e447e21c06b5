"""The attestation service's operations, over the database (no HTTP here).

Enrollment (TPM 2.0 Part 1, 24 "Credential Protection"): the agent sends its EK certificate
and AK public area; the EK certificate must chain to a trusted root; the server derives the
EK public area from the certificate (EK Credential Profile 2.3, B.3), makes a credential
for the AK's Name to that EK, and binds the AK to the host only when the agent returns the
credential (ActivateCredential succeeds only in the TPM that holds both keys). A changed AK
or EK waits for an administrator. The agent then holds a bearer token bound to that AK:
evidence is appraised only against the bound AK under the bound EK.

Attestation: a nonce is issued per host, stored, single-use and short-lived; it is consumed
in one transaction before the evidence is appraised, so it can never be accepted twice,
whichever server process receives it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tboot_py.server import ear as ears
from tboot_py.server.appraisal import Outcome, appraise_evidence, policy_digest
from tboot_py.server.db import is_sqlite
from tboot_py.server.schema import deliveries, enrollments, events, hosts, nonces, policies, results, signing_keys
from tboot_py.server.schema import webhooks as webhooks_t
from tboot_py.tpm import wire as st

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
NONCE_RE = re.compile(r"[0-9a-fA-F]{16,128}")
WEBHOOK_MAX_ATTEMPTS = 8

# The statements of the attestation path, built once: SQLAlchemy then reuses their cache keys
# and compiled SQL instead of rebuilding them for every request.
_HOST_BY_TOKEN = sa.select(hosts).where(hosts.c.token_hash == sa.bindparam("p_token_hash"))
_NONCE_INSERT = nonces.insert()
#: Consume a nonce in one statement: it matches only an unused, unexpired nonce of this host,
#: under the row lock (PostgreSQL) or the writer lock (SQLite, BEGIN IMMEDIATE).
_NONCE_CONSUME = (nonces.update()
                  .where(nonces.c.nonce == sa.bindparam("p_nonce"), nonces.c.host_id == sa.bindparam("p_host_id"),
                         nonces.c.used_at.is_(None), nonces.c.expires_at >= sa.bindparam("p_now"))
                  .values(used_at=sa.bindparam("p_now")))
_NONCE_BY_VALUE = sa.select(nonces).where(nonces.c.nonce == sa.bindparam("p_nonce"))
#: The host's newest policy version, else its group's, in one query.
_POLICY_FOR = (sa.select(policies)
               .where(sa.or_(sa.and_(policies.c.scope == "host", policies.c.target == sa.bindparam("p_host")),
                             sa.and_(policies.c.scope == "group", policies.c.target == sa.bindparam("p_group"))))
               .order_by(sa.case((policies.c.scope == "host", 0), else_=1), policies.c.version.desc()).limit(1))
_RESULT_INSERT = results.insert().returning(results.c.id)
_RESULT_SET_EAR = results.update().where(results.c.id == sa.bindparam("p_id")).values(ear=sa.bindparam("p_ear"))
#: Both return the host's state: the UPDATE holds the host's row lock (PostgreSQL) or the
#: writer lock (SQLite), so that state is current until the transaction ends.
_HOST_ATTESTED = (hosts.update().where(hosts.c.id == sa.bindparam("p_id"))
                  .values(last_result_id=sa.bindparam("p_rid"), last_attested_at=sa.bindparam("p_at"))
                  .returning(hosts.c.state))
_HOST_REAPPRAISED = (hosts.update().where(hosts.c.id == sa.bindparam("p_id"))
                     .values(last_result_id=sa.bindparam("p_rid")).returning(hosts.c.state))


class ServiceError(Exception):
    """A refused request: ``code`` is stable and machine-readable, ``status`` the HTTP status."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


@dataclass(frozen=True)
class Config:
    ek_roots: Path | None = None
    require_approval: bool = False
    policy_trust_keys: tuple[Path, ...] = ()
    nonce_ttl: float = 60.0
    enrollment_ttl: float = 300.0
    default_interval: float = 60.0
    #: A host is stale when nothing arrived for interval * stale_factor seconds.
    stale_factor: float = 1.5
    ear_ttl: int = 3600


@dataclass(frozen=True)
class Host:
    id: int
    name: str
    state: str
    ak_public: bytes | None
    ek_public: bytes | None
    host_group: str | None
    interval_s: float


@dataclass(frozen=True)
class EnrollChallenge:
    enrollment_id: str
    id_object: bytes
    encrypted_secret: bytes
    expires_at: float


@dataclass(frozen=True)
class EnrollOutcome:
    status: str  # "enrolled" or "pending"
    host: str
    token: str | None


@dataclass(frozen=True)
class AttestOutcome:
    result_id: int
    allowed: bool
    status: str
    reason: str
    ear: str
    state: str


def _now() -> float:
    return time.time()


def _insert_id(c: sa.Connection, stmt: Any) -> int:
    pk = c.execute(stmt).inserted_primary_key
    assert pk is not None
    return int(pk[0])


def _sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _rsa_ek_public(cert_der: bytes) -> st.Public:
    """The RSA EK public area (TCG default template L-1) for the certificate's key: the EK the
    agent's AK lives under and the one ActivateCredential uses."""
    from tboot_py.tpm.ek import EK_KINDS
    from tboot_py.verify.ekcert import ek_publics_for_certificate

    t = EK_KINDS["rsa"].template
    for p in ek_publics_for_certificate(cert_der):
        if (p.type, p.attributes, p.auth_policy, p.rsa_bits) == (t.type, t.attributes, t.auth_policy, t.rsa_bits):
            return p
    raise ServiceError(400, "ek_unsupported", "the EK certificate does not hold an RSA 2048 EK key")


def _check_ak(ak: st.Public) -> None:
    """An AK is a restricted signing key that cannot leave its TPM (Part 1, 25.2)."""
    need = st.OA_FIXED_TPM | st.OA_FIXED_PARENT | st.OA_SENSITIVE_DATA_ORIGIN | st.OA_RESTRICTED | st.OA_SIGN
    if ak.attributes & need != need or ak.attributes & st.OA_DECRYPT:
        raise ServiceError(400, "ak_not_restricted", "the AK is not a restricted, fixedTPM signing key")


class Service:
    """All operations of the attestation service; safe to share among threads and processes."""

    def __init__(self, engine: sa.Engine, config: Config, server_id: str | None = None) -> None:
        self.engine = engine
        self.config = config
        self.server_id = server_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._ek_cas: list[Any] | None = None
        self._trust_keys: list[Any] | None = None
        if config.ek_roots is not None:
            from tboot_py.verify.ekcert import load_ca_dir

            self._ek_cas = load_ca_dir(config.ek_roots)
        if config.policy_trust_keys:
            from tboot_py.policy.signing import load_public_key

            self._trust_keys = [load_public_key(p) for p in config.policy_trust_keys]
        self._key = self._signing_key()
        self._policies: dict[tuple[int, str], Any] = {}

    # ------------------------------------------------------------------ keys

    def _signing_key(self) -> ec.EllipticCurvePrivateKey:
        """The EAR signing key shared by every server process: the oldest key in the database,
        created by whichever process starts first."""
        with self.engine.begin() as c:
            row = c.execute(sa.select(signing_keys.c.private_pem).order_by(signing_keys.c.created_at,
                                                                           signing_keys.c.kid).limit(1)).first()
            if row is None:
                key = ears.new_key()
                pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
                c.execute(signing_keys.insert().values(kid=ears.key_id(key.public_key()), private_pem=pem,
                                                       created_at=_now()))
        with self._read() as c:
            pem = c.execute(sa.select(signing_keys.c.private_pem).order_by(signing_keys.c.created_at,
                                                                           signing_keys.c.kid).limit(1)).scalar_one()
        k = serialization.load_pem_private_key(pem, None)
        assert isinstance(k, ec.EllipticCurvePrivateKey)
        return k

    def jwks(self) -> dict[str, Any]:
        with self._read() as c:
            pems = c.execute(sa.select(signing_keys.c.private_pem)).scalars().all()
        keys = []
        for pem in pems:
            k = serialization.load_pem_private_key(pem, None)
            assert isinstance(k, ec.EllipticCurvePrivateKey)
            keys.append(ears.jwk(k.public_key()))
        return {"keys": keys}

    # ------------------------------------------------------------------ hosts

    @staticmethod
    def _host(row: Any) -> Host:
        return Host(row.id, row.name, row.state, row.ak_public, row.ek_public, row.host_group, row.interval_s)

    def host_for_token(self, token: str) -> Host:
        with self._read() as c:
            row = c.execute(_HOST_BY_TOKEN, {"p_token_hash": _sha256(token.encode())}).first()
        if row is None:
            raise ServiceError(401, "bad_token", "unknown or revoked agent token")
        return self._host(row)

    def host_by_name(self, name: str) -> Host:
        with self._read() as c:
            row = c.execute(sa.select(hosts).where(hosts.c.name == name)).first()
        if row is None:
            raise ServiceError(404, "no_such_host", f"no host named {name!r}")
        return self._host(row)

    def _set_state(self, c: sa.Connection, host_id: int, old: str | None, new: str, detail: str, now: float) -> None:
        """Record a state change and queue it for every webhook (same transaction)."""
        if old == new:
            return
        c.execute(hosts.update().where(hosts.c.id == host_id).values(state=new, state_changed_at=now))
        ev_id = _insert_id(c, events.insert().values(host_id=host_id, at=now, old_state=old, new_state=new,
                                                 detail=detail[:2000], server_id=self.server_id))
        for (wh_id,) in c.execute(sa.select(webhooks_t.c.id)).all():
            c.execute(deliveries.insert().values(webhook_id=wh_id, event_id=ev_id, status="pending", attempts=0,
                                                 next_attempt_at=now))

    # ------------------------------------------------------------------ enrollment

    def enroll_start(self, name: str, ek_certificate: bytes, ak_public: bytes) -> EnrollChallenge:
        from tboot_py.attest.credential import make_credential
        from tboot_py.errors import Error
        from tboot_py.verify.ekcert import check_ek_chain, load_certificate

        if not NAME_RE.match(name):
            raise ServiceError(400, "bad_name", "host names are 1-255 of A-Z a-z 0-9 . _ - (not starting with . _ -)")
        try:
            load_certificate(ek_certificate)
            ek = _rsa_ek_public(ek_certificate)
            ak = st.parse_public(ak_public, source="AK public")
        except ServiceError:
            raise
        except Error as e:
            raise ServiceError(400, "bad_key", e.diagnostics()) from e
        _check_ak(ak)
        if self._ek_cas is None:
            chain_ok, chain = False, ["no --ek-roots configured: an administrator must approve"]
        else:
            r = check_ek_chain(ek_certificate, self._ek_cas)
            if not r.ok:
                raise ServiceError(403, "ek_chain_invalid", f"EK certificate rejected: {r.reason}")
            chain_ok, chain = True, list(r.chain)
        secret = secrets.token_bytes(32)
        try:
            id_object, enc_secret = make_credential(ek, ak.name, secret)
        except Error as e:
            raise ServiceError(400, "bad_key", e.diagnostics()) from e
        eid, now = secrets.token_hex(16), _now()
        with self.engine.begin() as c:
            c.execute(enrollments.insert().values(
                id=eid, host_name=name, ek_certificate=ek_certificate, ek_public=ek.marshal(), ak_public=ak.raw,
                ak_name=ak.name.hex(), ek_chain=json.dumps(chain), chain_ok=chain_ok,
                secret_hash=_sha256(secret), status="challenged", created_at=now,
                expires_at=now + self.config.enrollment_ttl))
        return EnrollChallenge(eid, id_object, enc_secret, now + self.config.enrollment_ttl)

    def enroll_finish(self, enrollment_id: str, secret: bytes) -> EnrollOutcome:
        """The agent returns the activated credential. Binds the AK, or queues for approval."""
        now = _now()
        with self.engine.begin() as c:
            e = c.execute(self._for_update(sa.select(enrollments).where(enrollments.c.id == enrollment_id))).first()
            if e is None:
                raise ServiceError(404, "no_such_enrollment", "unknown enrollment")
            if not hmac.compare_digest(_sha256(secret), e.secret_hash):
                if e.status == "challenged":
                    c.execute(enrollments.update().where(enrollments.c.id == e.id).values(status="failed"))
                raise ServiceError(403, "activation_failed",
                                   "the credential does not match: the AK is not in the TPM of the certified EK")
            if e.status in ("failed", "rejected"):
                raise ServiceError(403, "enrollment_refused", f"enrollment is {e.status}")
            if e.status == "issued":
                raise ServiceError(409, "already_issued", "this enrollment's token was already issued")
            if e.status == "challenged" and e.expires_at < now:
                raise ServiceError(403, "enrollment_expired", "the enrollment challenge expired; enroll again")
            host = c.execute(self._for_update(sa.select(hosts).where(hosts.c.name == e.host_name))).first()
            same_keys = host is not None and host.ak_public == e.ak_public and host.ek_public == e.ek_public
            first_keys = host is None or host.ak_public is None  # new, or still awaiting its first approval
            needs_approval = e.status != "approved" and (
                (first_keys and (self.config.require_approval or not e.chain_ok)) or (not first_keys and not same_keys))
            if needs_approval:
                c.execute(enrollments.update().where(enrollments.c.id == e.id).values(status="awaiting_approval"))
                if host is None:
                    hid = _insert_id(c, hosts.insert().values(
                        name=e.host_name, state="pending", interval_s=self.config.default_interval, created_at=now,
                        state_changed_at=now))
                    c.execute(events.insert().values(host_id=hid, at=now, old_state=None, new_state="pending",
                                                     detail="enrollment awaits approval", server_id=self.server_id))
                return EnrollOutcome("pending", e.host_name, None)
            token = "tpa_" + secrets.token_urlsafe(32)
            vals = {"ek_certificate": e.ek_certificate, "ek_public": e.ek_public, "ak_public": e.ak_public,
                    "ak_name": e.ak_name, "token_hash": _sha256(token.encode())}
            if host is None:
                hid = _insert_id(c, hosts.insert().values(
                    name=e.host_name, state="enrolled", interval_s=self.config.default_interval, created_at=now,
                    state_changed_at=now, **vals))
                c.execute(events.insert().values(host_id=hid, at=now, old_state=None, new_state="enrolled",
                                                 detail="enrolled", server_id=self.server_id))
            else:
                c.execute(hosts.update().where(hosts.c.id == host.id).values(**vals))
                if not same_keys or host.state == "pending":
                    self._set_state(c, host.id, host.state, "enrolled", "enrolled after approval" if first_keys
                                    else "re-enrolled with new keys", now)
            c.execute(enrollments.update().where(enrollments.c.id == e.id).values(status="issued"))
        return EnrollOutcome("enrolled", e.host_name, token)

    def approve(self, name: str) -> str:
        """Approve the newest enrollment of ``name`` that awaits approval; returns its id."""
        with self.engine.begin() as c:
            e = c.execute(self._for_update(
                sa.select(enrollments)
                .where(enrollments.c.host_name == name, enrollments.c.status == "awaiting_approval")
                .order_by(enrollments.c.created_at.desc()).limit(1))).first()
            if e is None:
                raise ServiceError(404, "nothing_to_approve", f"no enrollment of {name!r} awaits approval")
            c.execute(enrollments.update().where(enrollments.c.host_name == name,
                                                 enrollments.c.status == "awaiting_approval",
                                                 enrollments.c.id != e.id).values(status="rejected"))
            c.execute(enrollments.update().where(enrollments.c.id == e.id).values(status="approved"))
        return str(e.id)

    def pending_enrollments(self) -> list[dict[str, Any]]:
        with self._read() as c:
            rows = c.execute(sa.select(enrollments).where(enrollments.c.status == "awaiting_approval")
                             .order_by(enrollments.c.created_at)).all()
        return [{"id": r.id, "host": r.host_name, "ak_name": r.ak_name, "ek_chain": json.loads(r.ek_chain),
                 "chain_ok": r.chain_ok, "created_at": r.created_at} for r in rows]

    # ------------------------------------------------------------------ attestation

    def _read(self) -> Any:
        """A connection for reads only (on SQLite a deferred transaction, not the writer lock)."""
        return self.engine.connect().execution_options(tboot_readonly=True)

    def _for_update(self, q: Any) -> Any:
        return q if is_sqlite(self.engine) else q.with_for_update()

    def issue_nonce(self, host: Host) -> tuple[str, float]:
        if host.ak_public is None:
            raise ServiceError(403, "not_enrolled", "the host has no bound AK yet")
        nonce, now = secrets.token_hex(32), _now()
        with self.engine.begin() as c:
            c.execute(_NONCE_INSERT, {"nonce": nonce, "host_id": host.id, "created_at": now,
                                      "expires_at": now + self.config.nonce_ttl})
        return nonce, now + self.config.nonce_ttl

    def _consume_nonce(self, c: sa.Connection, host: Host, nonce: str, now: float) -> None:
        """Mark the nonce used within the transaction ``c``, or refuse with the reason. Two
        transactions cannot both consume it: the UPDATE matches only while ``used_at`` is NULL,
        under the row lock (PostgreSQL) or the writer lock (SQLite)."""
        n = nonce.lower()
        if c.execute(_NONCE_CONSUME, {"p_nonce": n, "p_host_id": host.id, "p_now": now}).rowcount == 1:
            return
        row = c.execute(_NONCE_BY_VALUE, {"p_nonce": n}).first()
        if row is None:
            raise ServiceError(403, "nonce_unknown", "the server never issued this nonce")
        if row.host_id != host.id:
            raise ServiceError(403, "nonce_other_host", "this nonce was issued to another host")
        if row.used_at is not None:
            raise ServiceError(409, "nonce_reused", "this nonce was already used")
        if row.expires_at < now:
            raise ServiceError(403, "nonce_expired", "this nonce has expired; ask for a new one")
        raise ServiceError(409, "nonce_reused", "this nonce was already used")

    def policy_for(self, c: sa.Connection, host: Host) -> Any:
        """The newest policy version for the host, else for its group; None when there is none."""
        return c.execute(_POLICY_FOR, {"p_host": host.name, "p_group": host.host_group}).first()

    def _load_policy(self, row: Any) -> Any:
        """The policy of a stored version, checked and parsed once per process (rows never change)."""
        from tboot_py.policy import loads_policy

        if row is None:
            return None
        key = (row.id, row.digest)
        pol = self._policies.get(key)
        if pol is None:
            pol = loads_policy(bytes(row.body), self._trust_keys, source=f"policy {row.scope}/{row.target} "
                               f"v{row.version}")
            if len(self._policies) > 1000:
                self._policies.clear()
            self._policies[key] = pol
        return pol

    def attest(self, host: Host, nonce: str, evidence_json: bytes) -> AttestOutcome:
        """Appraise the evidence, then in ONE transaction consume the nonce and store the
        result: a nonce is accepted at most once, and a crash in between leaves neither (the
        agent asks again). Bad evidence still spends the nonce."""
        from tboot_py.errors import ParseError
        from tboot_py.tpm.evidence import parse_evidence

        if host.ak_public is None:
            raise ServiceError(403, "not_enrolled", "the host has no bound AK yet")
        if not NONCE_RE.fullmatch(nonce):
            raise ServiceError(400, "bad_nonce", "the nonce must be 8-64 bytes of hex")
        try:
            evidence = parse_evidence(evidence_json, source="evidence")
        except ParseError as e:
            with self.engine.begin() as c:
                self._consume_nonce(c, host, nonce, _now())
            raise ServiceError(400, "bad_evidence", e.diagnostics()) from e
        with self._read() as c:
            prow = self.policy_for(c, host)
        outcome = self._appraise(host, evidence, nonce, prow)
        with self.engine.begin() as c:
            now = _now()
            self._consume_nonce(c, host, nonce, now)
            return self._store(c, host, outcome, evidence_json.decode(), nonce, prow, "attest", now)

    def _appraise(self, host: Host, evidence: Any, nonce: str, prow: Any) -> Outcome:
        from tboot_py.errors import Error

        try:
            policy = self._load_policy(prow)
            return appraise_evidence(evidence, bytes.fromhex(nonce), host.ak_public or b"", host.ek_public, policy)
        except Error as e:  # an unusable stored policy denies
            return Outcome(False, e.diagnostics(), {"reason": e.diagnostics()}, (), None)

    def _store(self, c: sa.Connection, host: Host, outcome: Outcome, evidence_text: str, nonce: str, prow: Any,
               kind: str, now: float) -> AttestOutcome:
        """Store the result, sign its EAR and update the host, within the transaction ``c``."""
        pdigest = None if prow is None else prow.digest
        status = ears.AFFIRMING if outcome.allowed else ears.CONTRAINDICATED
        rid = int(c.execute(_RESULT_INSERT, {
            "host_id": host.id, "created_at": now, "kind": kind, "allowed": outcome.allowed, "status": status,
            "reason": outcome.reason[:2000], "appraisal": outcome.details_json(), "evidence": evidence_text,
            "nonce": nonce, "policy_id": None if prow is None else prow.id, "policy_digest": pdigest,
            "pcr_digest": outcome.pcr_digest, "ear": None, "server_id": self.server_id}).scalar_one())
        token = ears.sign_ear(self._key, allowed=outcome.allowed, nonce=bytes.fromhex(nonce), host=host.name,
                              policy_digest=pdigest, pcr_digest=outcome.pcr_digest, result_id=rid,
                              ttl=self.config.ear_ttl, now=now)
        c.execute(_RESULT_SET_EAR, {"p_id": rid, "p_ear": token})
        if kind == "attest":
            cur = c.execute(_HOST_ATTESTED, {"p_id": host.id, "p_rid": rid, "p_at": now}).scalar_one()
        else:
            cur = c.execute(_HOST_REAPPRAISED, {"p_id": host.id, "p_rid": rid}).scalar_one()
        new = "passing" if outcome.allowed else "failing"
        if cur != "pending":
            self._set_state(c, host.id, cur, new, outcome.reason if kind == "attest" else
                            f"re-appraised: {outcome.reason}", now)
        return AttestOutcome(rid, outcome.allowed, status, outcome.reason, token, new)

    # ------------------------------------------------------------------ policies

    def put_policy(self, scope: str, target: str, body: bytes) -> dict[str, Any]:
        """Store a new policy version (signed when trust keys are configured), then
        re-appraise the latest evidence of every host it applies to."""
        from tboot_py.errors import Error
        from tboot_py.policy import loads_policy

        if scope not in ("host", "group"):
            raise ServiceError(400, "bad_scope", "scope is host or group")
        if not NAME_RE.match(target):
            raise ServiceError(400, "bad_name", "bad host or group name")
        try:
            pol = loads_policy(body, self._trust_keys, source="uploaded policy")
        except Error as e:
            raise ServiceError(400 if e.exit_code == 2 else 403, "bad_policy", e.diagnostics()) from e
        for _ in range(5):
            try:
                with self.engine.begin() as c:
                    cur = c.execute(sa.select(sa.func.max(policies.c.version)).where(
                        policies.c.scope == scope, policies.c.target == target)).scalar()
                    version = int(cur or 0) + 1
                    c.execute(policies.insert().values(scope=scope, target=target, version=version, body=body,
                                                       digest=policy_digest(body),
                                                       signed_by=json.dumps(list(pol.signed_by)), created_at=_now()))
                break
            except sa.exc.IntegrityError:
                continue
        else:
            raise ServiceError(409, "policy_conflict", "concurrent policy uploads; retry")
        with self._read() as c:
            q = sa.select(hosts.c.name).where(hosts.c.ak_public.is_not(None))
            q = q.where(hosts.c.name == target) if scope == "host" else q.where(hosts.c.host_group == target)
            names = c.execute(q).scalars().all()
        redone = [r for n in names if (r := self.reappraise(n)) is not None]
        return {"scope": scope, "target": target, "version": version, "digest": policy_digest(body),
                "signed_by": list(pol.signed_by), "reappraised": [dataclasses.asdict(r) for r in redone]}

    def reappraise(self, name: str) -> AttestOutcome | None:
        """Appraise the host's latest attested evidence again, under its current policy."""
        from tboot_py.tpm.evidence import parse_evidence

        host = self.host_by_name(name)
        with self._read() as c:
            last = c.execute(sa.select(results.c.evidence, results.c.nonce)
                             .where(results.c.host_id == host.id, results.c.kind == "attest")
                             .order_by(results.c.id.desc()).limit(1)).first()
            prow = self.policy_for(c, host)
        if last is None:
            return None
        outcome = self._appraise(host, parse_evidence(last.evidence), last.nonce, prow)
        with self.engine.begin() as c:
            return self._store(c, host, outcome, last.evidence, last.nonce, prow, "reappraise", _now())

    def list_policies(self) -> list[dict[str, Any]]:
        with self._read() as c:
            rows = c.execute(sa.select(policies.c.id, policies.c.scope, policies.c.target, policies.c.version,
                                       policies.c.digest, policies.c.signed_by, policies.c.created_at)
                             .order_by(policies.c.scope, policies.c.target, policies.c.version)).all()
        return [{"id": r.id, "scope": r.scope, "target": r.target, "version": r.version, "digest": r.digest,
                 "signed_by": json.loads(r.signed_by), "created_at": r.created_at} for r in rows]

    def get_policy(self, scope: str, target: str, version: int | None) -> bytes:
        with self._read() as c:
            q = sa.select(policies.c.body).where(policies.c.scope == scope, policies.c.target == target)
            q = q.where(policies.c.version == version) if version else q.order_by(policies.c.version.desc()).limit(1)
            body = c.execute(q).scalar()
        if body is None:
            which = f"{scope}/{target}" + (f" v{version}" if version else "")
            raise ServiceError(404, "no_such_policy", f"no policy {which}")
        return bytes(body)

    # ------------------------------------------------------------------ admin views

    def update_host(self, name: str, group: str | None, interval_s: float | None) -> Host:
        host = self.host_by_name(name)
        vals: dict[str, Any] = {}
        if group is not None:
            if group and not NAME_RE.match(group):
                raise ServiceError(400, "bad_name", "bad group name")
            vals["host_group"] = group or None
        if interval_s is not None:
            if not 1 <= interval_s <= 86400:
                raise ServiceError(400, "bad_interval", "the interval is 1..86400 seconds")
            vals["interval_s"] = interval_s
        if vals:
            with self.engine.begin() as c:
                c.execute(hosts.update().where(hosts.c.id == host.id).values(**vals))
        return self.host_by_name(name)

    def list_hosts(self) -> list[dict[str, Any]]:
        with self._read() as c:
            rows = c.execute(sa.select(hosts).order_by(hosts.c.name)).all()
            out = []
            for r in rows:
                prow = self.policy_for(c, self._host(r))
                out.append(self._host_json(r, prow))
        return out

    @staticmethod
    def _host_json(r: Any, prow: Any) -> dict[str, Any]:
        return {"name": r.name, "state": r.state, "group": r.host_group, "interval_s": r.interval_s,
                "ak_name": r.ak_name, "last_attested_at": r.last_attested_at, "last_result_id": r.last_result_id,
                "state_changed_at": r.state_changed_at, "created_at": r.created_at,
                "policy": None if prow is None else {"scope": prow.scope, "target": prow.target,
                                                     "version": prow.version, "digest": prow.digest}}

    def host_detail(self, name: str, limit: int = 50) -> dict[str, Any]:
        host = self.host_by_name(name)
        with self._read() as c:
            r = c.execute(sa.select(hosts).where(hosts.c.id == host.id)).one()
            out = self._host_json(r, self.policy_for(c, host))
            res = c.execute(sa.select(results.c.id, results.c.created_at, results.c.kind, results.c.allowed,
                                      results.c.status, results.c.reason, results.c.policy_digest,
                                      results.c.pcr_digest, results.c.server_id)
                            .where(results.c.host_id == host.id).order_by(results.c.id.desc()).limit(limit)).all()
            evs = c.execute(sa.select(events).where(events.c.host_id == host.id).order_by(events.c.id.desc())
                            .limit(limit)).all()
        out["results"] = [dict(x._mapping) for x in res]
        out["events"] = [{"at": e.at, "old_state": e.old_state, "new_state": e.new_state, "detail": e.detail,
                          "server_id": e.server_id} for e in evs]
        return out

    def result(self, result_id: int) -> dict[str, Any]:
        with self._read() as c:
            r = c.execute(sa.select(results, hosts.c.name).join(hosts, hosts.c.id == results.c.host_id)
                          .where(results.c.id == result_id)).first()
        if r is None:
            raise ServiceError(404, "no_such_result", f"no result {result_id}")
        d = dict(r._mapping)
        d["host"] = d.pop("name")
        d["appraisal"] = json.loads(d["appraisal"])
        d["evidence"] = json.loads(d["evidence"])
        return d

    def latest_ear(self, name: str) -> dict[str, Any]:
        host = self.host_by_name(name)
        with self._read() as c:
            r = c.execute(sa.select(results.c.id, results.c.ear, results.c.status, results.c.created_at)
                          .where(results.c.host_id == host.id, results.c.kind == "attest")
                          .order_by(results.c.id.desc()).limit(1)).first()
        if r is None or r.ear is None:
            raise ServiceError(404, "no_result", f"host {name!r} has no attestation yet")
        return {"host": name, "result_id": r.id, "status": r.status, "created_at": r.created_at, "ear": r.ear}

    # ------------------------------------------------------------------ liveness and webhooks

    def sweep_stale(self, now: float | None = None) -> list[str]:
        """Mark stale every host whose last attestation is older than its interval allows.
        Any server process may run it; each host changes state once (row lock / writer lock)."""
        now = _now() if now is None else now
        last = sa.func.coalesce(hosts.c.last_attested_at, hosts.c.state_changed_at)
        due = (sa.select(hosts.c.id, hosts.c.name, hosts.c.state)
               .where(hosts.c.state.in_(("enrolled", "passing", "failing")),
                      last + hosts.c.interval_s * self.config.stale_factor < now).limit(100))
        if not is_sqlite(self.engine):
            due = due.with_for_update(skip_locked=True)
        out: list[str] = []
        with self.engine.begin() as c:
            for r in c.execute(due).all():
                self._set_state(c, r.id, r.state, "stale", "no attestation within the interval", now)
                out.append(r.name)
        return out

    def add_webhook(self, url: str, secret: str) -> int:
        if not url.startswith(("http://", "https://")) or len(url) > 2000:
            raise ServiceError(400, "bad_url", "webhook URLs are http:// or https://")
        if not 16 <= len(secret) <= 128:
            raise ServiceError(400, "bad_secret", "the HMAC secret is 16..128 characters")
        with self.engine.begin() as c:
            return _insert_id(c, webhooks_t.insert().values(url=url, secret=secret, created_at=_now()))

    def list_deliveries(self, limit: int = 200) -> list[dict[str, Any]]:
        with self._read() as c:
            rows = c.execute(sa.select(deliveries).order_by(deliveries.c.id.desc()).limit(limit)).all()
        return [{k: v for k, v in r._mapping.items() if k not in ("lease_owner", "lease_until")} for r in rows]

    def claim_deliveries(self, limit: int = 20, lease_s: float = 30.0) -> list[int]:
        """Lease due webhook deliveries to this process (SKIP LOCKED on PostgreSQL)."""
        now = _now()
        q = (sa.select(deliveries.c.id).where(
            deliveries.c.status == "pending", deliveries.c.next_attempt_at <= now,
            sa.or_(deliveries.c.lease_until.is_(None), deliveries.c.lease_until < now))
            .order_by(deliveries.c.next_attempt_at).limit(limit))
        if not is_sqlite(self.engine):
            q = q.with_for_update(skip_locked=True)
        with self.engine.begin() as c:
            ids = [int(i) for i in c.execute(q).scalars().all()]
            if ids:
                c.execute(deliveries.update().where(deliveries.c.id.in_(ids))
                          .values(lease_owner=self.server_id, lease_until=now + lease_s))
        return ids

    def deliver(self, delivery_id: int, post: Any) -> bool:
        """Send one leased delivery with ``post(url, body, headers) -> HTTP status``; retry
        with exponential backoff on failure, up to WEBHOOK_MAX_ATTEMPTS."""
        with self._read() as c:
            r = c.execute(sa.select(deliveries, webhooks_t.c.url, webhooks_t.c.secret, events.c.at,
                                    events.c.old_state, events.c.new_state, events.c.detail, hosts.c.name)
                          .join(webhooks_t, webhooks_t.c.id == deliveries.c.webhook_id)
                          .join(events, events.c.id == deliveries.c.event_id)
                          .join(hosts, hosts.c.id == events.c.host_id)
                          .where(deliveries.c.id == delivery_id)).first()
        if r is None or r.lease_owner != self.server_id:
            return False
        body = json.dumps({"event_id": r.event_id, "host": r.name, "old_state": r.old_state,
                           "new_state": r.new_state, "detail": r.detail, "at": r.at}, sort_keys=True).encode()
        sig = hmac.new(r.secret.encode(), body, hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/json", "X-Tboot-Signature": f"sha256={sig}",
                   "X-Tboot-Delivery": str(r.id)}
        error = None
        try:
            status = post(r.url, body, headers)
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except Exception as e:  # any transport failure is retried
            error = f"{type(e).__name__}: {e}"
        now = _now()
        attempts = r.attempts + 1
        if error is None:
            vals: dict[str, Any] = {"status": "delivered", "delivered_at": now, "last_error": None}
        elif attempts >= WEBHOOK_MAX_ATTEMPTS:
            vals = {"status": "failed", "last_error": error}
        else:
            vals = {"next_attempt_at": now + min(2.0 ** attempts, 300.0), "last_error": error}
        with self.engine.begin() as c:
            c.execute(deliveries.update().where(deliveries.c.id == r.id, deliveries.c.lease_owner == self.server_id)
                      .values(attempts=attempts, lease_owner=None, lease_until=None, **vals))
        return error is None

    def state_counts(self) -> dict[str, int]:
        with self._read() as c:
            rows = c.execute(sa.select(hosts.c.state, sa.func.count()).group_by(hosts.c.state)).all()
        return {str(s): int(n) for s, n in rows}

