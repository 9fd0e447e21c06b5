"""Compliance reports from the attestation service's database: one host, or the whole fleet.

A report says what it covers (host, results, time span, or every host), names the policy
versions by SHA-256, gives each covered result's evidence digest (SHA-256 of the evidence
exactly as stored) and nonce, and recomputes each covered verdict from that evidence through
the appraisal core (:mod:`tboot_py.server.recheck`) when it is written, so it states whether
the stored verdicts still stand. It ends with the commands that re-check it later.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tboot_py.errors import InputError

REPORT_FORMAT = "tboot-py-compliance-report/1"
FORMATS = ("html", "print", "json")
#: A host report covers this many of the latest results unless one result is named.
DEFAULT_RESULTS = 50


def open_database(db: str) -> sa.Engine:
    """An existing service database (never created or migrated here)."""
    from tboot_py.server.db import make_engine, normalize_url

    url = normalize_url(db)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise InputError(f"{db}: no such database")
    engine = make_engine(url, pool_size=2)
    try:
        names = set(sa.inspect(engine).get_table_names())
    except sa.exc.SQLAlchemyError as e:
        raise InputError(f"cannot open the database: {str(e).splitlines()[0]}") from e
    if not {"hosts", "results", "policies", "signing_keys"} <= names:
        raise InputError(f"{shown_db(db)} is not a tboot-py attestation service database")
    return engine


def shown_db(db: str) -> str:
    """The database named without a password."""
    if "@" in db and "://" in db:
        scheme, rest = db.split("://", 1)
        return f"{scheme}://{rest.split('@', 1)[1]}"
    return db


def _version() -> str:
    from tboot_py import __version__

    return str(__version__)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _service(engine: sa.Engine) -> Any:
    from tboot_py.server.service import Config, Service

    return Service(engine, Config())


def _recheck_args(db: str, host: str | None, trust_keys: Sequence[Path]) -> str:
    keys = "".join(f" --trust-key {k}" for k in trust_keys)
    return f"tboot-py audit recheck --db {shown_db(db)}" + (f" --host {host}" if host else "") + keys


def host_report(db: str, name: str, result_id: int | None = None, limit: int = DEFAULT_RESULTS,
                trust_keys: Sequence[Path] = ()) -> dict[str, Any]:
    """The report of one host: its latest ``limit`` results, or the one named."""
    from tboot_py.server import views
    from tboot_py.server.recheck import recheck
    from tboot_py.server.schema import hosts
    from tboot_py.server.service import ServiceError

    engine = open_database(db)
    svc = _service(engine)
    try:
        detail = svc.host_detail(name, limit)
    except ServiceError as e:
        raise InputError(e.detail) from e
    rows = detail["results"]
    if result_id is not None:
        rows = [r for r in svc.host_detail(name, 100000)["results"] if r["id"] == result_id]
        if not rows:
            raise InputError(f"host {name!r} has no result {result_id}")
    with engine.connect() as c:
        ek = c.execute(sa.select(hosts.c.ek_certificate).where(hosts.c.name == name)).scalar()
    keys = load_trust_keys(trust_keys)
    checks = {r.result_id: r for r in recheck(engine, host=name, result_ids=[r["id"] for r in rows] or [-1],
                                              trust_keys=keys)}
    covered = []
    for r in rows:
        full = svc.result(r["id"])
        chk = checks[r["id"]]
        covered.append({
            "id": r["id"], "time": views.when(r["created_at"]), "kind": r["kind"], "allowed": bool(r["allowed"]),
            "status": r["status"], "reason": r["reason"], "nonce": full["nonce"],
            "policy_digest": r["policy_digest"], "pcr_digest": r["pcr_digest"],
            "evidence_sha256": chk.evidence_sha256,
            "ear_sha256": hashlib.sha256(full["ear"].encode()).hexdigest() if full.get("ear") else None,
            "quirks": views.quirks(full["appraisal"]),
            "failed": [_reason_json(x) for x in views.reasons(full["appraisal"]) if not x.passed],
            "recheck": {"same": chk.same, "differences": list(chk.differences)},
        })
    times = [r["created_at"] for r in rows]
    used = {r["policy_digest"] for r in rows if r["policy_digest"]}
    out = {
        "format": REPORT_FORMAT, "kind": "host", "generated": _now(), "tool_version": _version(),
        "database": shown_db(db),
        "covers": {"host": name, "results": [r["id"] for r in rows],
                   "from": views.when(min(times)) if times else None, "to": views.when(max(times)) if times else None},
        "host": {"name": name, "state": detail["state"], "group": detail["group"], "ak_name": detail["ak_name"],
                 "ek_certificate_sha256": hashlib.sha256(ek).hexdigest() if ek else None,
                 "interval_s": detail["interval_s"], "last_attested": views.when(detail["last_attested_at"]),
                 "policy": detail["policy"]},
        "policies": [p for p in _policies(svc) if p["digest"] in used],
        "results": covered,
        "summary": {"results": len(covered), "allowed": sum(r["allowed"] for r in covered),
                    "denied": sum(not r["allowed"] for r in covered),
                    "recomputed_same": sum(r["recheck"]["same"] for r in covered),
                    "recomputed_differ": sum(not r["recheck"]["same"] for r in covered)},
        "recheck": {"policy_signatures_checked": bool(trust_keys),
                    "commands": [_recheck_args(db, name, trust_keys),
                                 *(f"tboot-py fleet result {r['id']} --server URL > result-{r['id']}.json"
                                   for r in covered[:1])]},
    }
    return out


def fleet_report(db: str, trust_keys: Sequence[Path] = ()) -> dict[str, Any]:
    """The report of every host: state, policy, and its latest result recomputed."""
    from tboot_py.server import views
    from tboot_py.server.recheck import recheck

    engine = open_database(db)
    svc = _service(engine)
    fleet = views.fleet(svc)
    last_ids = [h["last_result_id"] for h in fleet["hosts"] if h["last_result_id"]]
    keys = load_trust_keys(trust_keys)
    checks = {r.result_id: r for r in recheck(engine, result_ids=last_ids or [-1], trust_keys=keys)}
    listed = []
    for h in fleet["hosts"]:
        chk = checks.get(h["last_result_id"] or -1)
        listed.append({
            "name": h["name"], "state": h["state"], "group": h["group"],
            "last_attested": views.when(h["last_attested_at"]), "policy": h["policy"],
            "last_result": None if chk is None else {
                "id": chk.result_id, "allowed": chk.stored_allowed, "reason": chk.stored_reason,
                "evidence_sha256": chk.evidence_sha256, "policy_digest": chk.policy_digest,
                "recheck": {"same": chk.same, "differences": list(chk.differences)}},
        })
    return {
        "format": REPORT_FORMAT, "kind": "fleet", "generated": _now(), "tool_version": _version(),
        "database": shown_db(db),
        "covers": {"hosts": len(listed), "results": sorted(checks), "note": "every host and its latest result"},
        "counts": fleet["counts"], "hosts": listed, "policies": _policies(svc),
        "summary": {"hosts": len(listed), "recomputed_same": sum(c.same for c in checks.values()),
                    "recomputed_differ": sum(not c.same for c in checks.values())},
        "recheck": {"policy_signatures_checked": bool(trust_keys),
                    "commands": [_recheck_args(db, None, trust_keys)]},
    }


def load_trust_keys(paths: Sequence[Path]) -> list[Any] | None:
    if not paths:
        return None
    from tboot_py.policy.signing import load_public_key

    return [load_public_key(p) for p in paths]


def _reason_json(r: Any) -> dict[str, Any]:
    return {"rule": r.rule, "check": r.check, "message": r.message, "component": r.component, "bank": r.bank,
            "pcr": r.pcr, "expected": list(r.expected), "actual": r.actual}


def _policies(svc: Any) -> list[dict[str, Any]]:
    from tboot_py.server import views

    return [{"scope": p["scope"], "target": p["target"], "version": p["version"], "digest": p["digest"],
             "signed_by": p["signed_by"], "uploaded": views.when(p["created_at"])} for p in svc.list_policies()]


def render(report: dict[str, Any], fmt: str) -> str:
    """JSON, HTML for the screen, or HTML laid out for print (A4, no colour needed)."""
    import jinja2

    if fmt not in FORMATS:
        raise InputError(f"unknown report format {fmt!r} ({', '.join(FORMATS)})")
    if fmt == "json":
        return json.dumps(report, indent=2, sort_keys=True) + "\n"
    from tboot_py.server.views import split_label

    env = jinja2.Environment(loader=jinja2.PackageLoader("tboot_py.server", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["split_label"] = split_label
    return str(env.get_template("compliance.html.j2").render(r=report, print_layout=fmt == "print"))
