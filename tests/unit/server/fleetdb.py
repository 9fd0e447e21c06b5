"""A small fleet in a SQLite database, written through the service's schema: hosts in every
state, passing and failing results with appraisal details and evidence (a real TCG log), and
two policy versions. For the dashboard and report tests that need no TPM."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from tboot_py.algorithms import SHA256
from tboot_py.eventlog.write import NewEvent, encode_log
from tboot_py.server.db import make_engine, migrate
from tboot_py.server.schema import events, hosts, policies, results
from tboot_py.server.service import Config, Service

KERNEL_GOOD = hashlib.sha256(b"good kernel").hexdigest()
KERNEL_EVIL = hashlib.sha256(b"evil kernel").hexdigest()
POLICY_V1 = b'{"version": 1, "rules": [{"component": "kernel", "sha256": "%s"}]}' % KERNEL_GOOD.encode()
POLICY_V2 = b'{"version": 1, "rules": [{"component": "kernel", "sha256": "%s"}], "name": "v2"}' % KERNEL_GOOD.encode()


@dataclass(frozen=True)
class Fleet:
    service: Service
    token: str
    failing_result: int
    passing_result: int


def _evidence(kernel_digest: str) -> str:
    data = json.dumps({"tboot-py": 1, "component": "kernel", "kind": "file", "file": "/boot/vmlinuz"}).encode()
    log = encode_log([NewEvent(8, 0x0D, {"sha256": bytes.fromhex(kernel_digest)}, data)], [SHA256])
    return json.dumps({"format": "tboot-py-evidence/1", "attest": "", "signature": "", "ak_public": None,
                       "pcrs": {}, "event_logs": [{"name": "tboot-py", "log": base64.b64encode(log).decode()}],
                       "ek_certificate": None})


def _appraisal(allowed: bool, actual: str) -> str:
    reason = {"rule": "rules[0]", "check": "component", "passed": allowed, "component": "kernel", "bank": "sha256",
              "pcr": 8, "expected": [KERNEL_GOOD], "actual": actual, "fatal": False,
              "message": "kernel matches" if allowed else "kernel digest not in the policy"}
    return json.dumps({"verified": True, "reason": "", "quirks": ["example-quirk"] if not allowed else [],
                       "verified_pcrs": {"sha256": {"8": hashlib.sha256(actual.encode()).hexdigest()}},
                       "verdict": {"allowed": allowed, "mode": "halt", "policy": None, "quirks": [],
                                   "reasons": [reason]}})


def make_fleet(tmp: Path) -> Fleet:
    engine = make_engine(f"sqlite:///{tmp / 'fleet.sqlite'}")
    migrate(engine)
    svc = Service(engine, Config(default_interval=60))
    now = time.time()
    ids: dict[str, int] = {}
    with engine.begin() as c:
        for i, (name, state) in enumerate([("alpha", "passing"), ("bravo", "failing"), ("charlie", "stale"),
                                           ("delta", "pending"), ("echo", "enrolled")]):
            ids[name] = int(c.execute(hosts.insert().values(
                name=name, state=state, host_group="lab" if i < 3 else None, interval_s=60, created_at=now - 600,
                state_changed_at=now - 60, ak_public=b"ak" if state != "pending" else None,
                ak_name="000b" + "ab" * 32)).inserted_primary_key[0])
        for v, body in ((1, POLICY_V1), (2, POLICY_V2)):
            c.execute(policies.insert().values(scope="group", target="lab", version=v, body=body,
                                               digest=hashlib.sha256(body).hexdigest(), signed_by="[]",
                                               created_at=now - 500 + v))
        pid = c.execute(sa.select(policies.c.id).where(policies.c.version == 2)).scalar_one()
        rid: dict[str, int] = {}
        runs = (("alpha", True, KERNEL_GOOD, now - 30), ("bravo", True, KERNEL_GOOD, now - 90),
                ("bravo", False, KERNEL_EVIL, now - 20))
        for name, allowed, digest, at in runs:
            r = c.execute(results.insert().values(
                host_id=ids[name], created_at=at, kind="attest", allowed=allowed,
                status="affirming" if allowed else "contraindicated",
                reason="allowed" if allowed else "kernel digest not in the policy",
                appraisal=_appraisal(allowed, digest), evidence=_evidence(digest), nonce="00" * 16, policy_id=pid,
                policy_digest=hashlib.sha256(POLICY_V2).hexdigest(), pcr_digest="cd" * 32, ear=None,
                server_id="test"))
            rid[name] = int(r.inserted_primary_key[0])
            c.execute(hosts.update().where(hosts.c.id == ids[name]).values(last_result_id=rid[name],
                                                                            last_attested_at=at))
        c.execute(events.insert().values(host_id=ids["bravo"], at=now - 20, old_state="passing",
                                         new_state="failing", detail="kernel digest not in the policy",
                                         server_id="test"))
    return Fleet(svc, "tpadm_" + "x" * 32, rid["bravo"], rid["alpha"])
