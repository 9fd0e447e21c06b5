"""Read-only views of the service's database for people: the dashboard and compliance reports.

Nothing here decides anything: it arranges what the service stored (hosts, results with their
appraisal and evidence, policies, state changes) for display. Event data shown from stored
evidence is untrusted and display-only (DESIGN.md, "What a quote proves"); which events a rule
used is found by digest, and only a digest in a verified log binds anything.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import difflib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from tboot_py.server.schema import STATES, events, hosts, policies, results
from tboot_py.server.service import Service

#: The states an operator filters by, in the order the overview counts them.
SHOWN_STATES = ("passing", "failing", "stale", "pending", "enrolled")
SORT_KEYS = ("name", "state", "last", "policy", "group")


_LABELLED = re.compile(r"^([0-9a-fA-F]{16,128}) \((.{1,200})\)$")


def split_label(v: str | None) -> tuple[str | None, str]:
    """``"<hex> (label)"`` (a policy's expected value with its label) -> (hex, label)."""
    if v is None:
        return None, ""
    m = _LABELLED.match(v)
    return (m.group(1), m.group(2)) if m else (v, "")


def when(t: float | None) -> str:
    """UTC time of a UNIX timestamp, for display."""
    return "-" if t is None else dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class FleetQuery:
    """Filters and order of the fleet overview (all optional)."""

    q: str = ""
    state: str = ""
    group: str = ""
    sort: str = "name"
    desc: bool = False

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> FleetQuery:
        state = params.get("state", "")
        sort = params.get("sort", "name")
        return cls(q=params.get("q", "")[:255], state=state if state in STATES else "",
                   group=params.get("group", "")[:255], sort=sort if sort in SORT_KEYS else "name",
                   desc=params.get("dir") == "desc")


def _policy_label(p: Mapping[str, Any] | None) -> str:
    return "" if p is None else f"{p['scope']}/{p['target']} v{p['version']}"


def fleet(service: Service, query: FleetQuery = FleetQuery()) -> dict[str, Any]:
    """Every host (filtered and sorted) with the counts per state over the whole fleet."""
    all_hosts = service.list_hosts()
    counts = {s: 0 for s in SHOWN_STATES}
    for h in all_hosts:
        counts[h["state"]] = counts.get(h["state"], 0) + 1
    q = query.q.lower()
    shown = [h for h in all_hosts
             if (not q or q in h["name"].lower())
             and (not query.state or h["state"] == query.state)
             and (not query.group or (h["group"] or "") == query.group)]
    keys: dict[str, Any] = {
        "name": lambda h: h["name"],
        "state": lambda h: (SHOWN_STATES.index(h["state"]) if h["state"] in SHOWN_STATES else 99, h["name"]),
        "last": lambda h: (h["last_attested_at"] or 0.0, h["name"]),
        "policy": lambda h: (_policy_label(h["policy"]), h["name"]),
        "group": lambda h: (h["group"] or "", h["name"]),
    }
    shown.sort(key=keys[query.sort], reverse=query.desc)
    reasons_by_id = last_reasons(service, [h["last_result_id"] for h in shown if h["last_result_id"]])
    shown = [{**h, "last_reason": reasons_by_id.get(h["last_result_id"] or -1)} for h in shown]
    groups = sorted({h["group"] for h in all_hosts if h["group"]})
    return {"hosts": shown, "counts": counts, "total": len(all_hosts), "groups": groups}


def last_reasons(service: Service, ids: Sequence[int]) -> dict[int, str]:
    """result id -> its one-line reason."""
    if not ids:
        return {}
    with service.engine.connect() as c:
        rows = c.execute(sa.select(results.c.id, results.c.reason).where(results.c.id.in_(list(ids)))).all()
    return {int(r.id): str(r.reason) for r in rows}


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ReasonView:
    """One finding of a verdict, as stored (``expected`` and ``actual`` are hex digests or text)."""

    rule: str
    check: str
    passed: bool
    message: str
    component: str | None
    bank: str | None
    pcr: int | None
    expected: tuple[str, ...]
    actual: str | None

    @property
    def label(self) -> str:
        return f"{self.rule} ({self.check})"


def reasons(appraisal: Mapping[str, Any]) -> list[ReasonView]:
    """Every reason of a stored appraisal; a verification failure is one reason."""
    verdict = appraisal.get("verdict")
    out: list[ReasonView] = []
    if isinstance(verdict, Mapping):
        for r in verdict.get("reasons") or []:
            if not isinstance(r, Mapping):
                continue
            pcr = r.get("pcr")
            out.append(ReasonView(str(r.get("rule", "?")), str(r.get("check", "?")), bool(r.get("passed")),
                                  str(r.get("message", "")), _opt_str(r.get("component")), _opt_str(r.get("bank")),
                                  pcr if isinstance(pcr, int) else None,
                                  tuple(str(x) for x in r.get("expected") or ()), _opt_str(r.get("actual"))))
    if not out and appraisal.get("reason"):
        out.append(ReasonView("evidence", "verify", False, str(appraisal["reason"]), None, None, None, (), None))
    return out


def _opt_str(v: object) -> str | None:
    return None if v is None else str(v)


def quirks(appraisal: Mapping[str, Any]) -> list[str]:
    found = appraisal.get("quirks")
    if not found and isinstance(appraisal.get("verdict"), Mapping):
        found = appraisal["verdict"].get("quirks")
    return [str(q) for q in found or []]


def verified_pcrs(appraisal: Mapping[str, Any]) -> dict[str, list[tuple[int, str]]]:
    """bank -> [(pcr, hex value)] from the verified quote (empty when verification failed)."""
    raw = appraisal.get("verified_pcrs") or {}
    return {str(b): sorted((int(i), str(v)) for i, v in vals.items()) for b, vals in sorted(raw.items())
            if isinstance(vals, Mapping)}


@dataclass(frozen=True)
class PcrBank:
    """A bank's verified PCRs: the extended ones, and the runs still at a reset value."""

    bank: str
    extended: tuple[tuple[int, str], ...]
    #: (PCR ranges, reset value) for PCRs holding all zeros or all ones (never extended).
    reset: tuple[tuple[str, str], ...]


def _ranges(pcrs: Sequence[int]) -> str:
    out: list[str] = []
    for p in sorted(pcrs):
        if out and out[-1].rsplit("-", 1)[-1] == str(p - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{p}"
        else:
            out.append(str(p))
    return ", ".join(out)


def pcr_banks(appraisal: Mapping[str, Any]) -> list[PcrBank]:
    out = []
    for bank, vals in verified_pcrs(appraisal).items():
        resets: dict[str, list[int]] = {}
        extended = []
        for i, v in vals:
            if v and set(v.lower()) in ({"0"}, {"f"}):
                resets.setdefault(v, []).append(i)
            else:
                extended.append((i, v))
        out.append(PcrBank(bank, tuple(extended), tuple((_ranges(ps), v) for v, ps in resets.items())))
    return out


@dataclass(frozen=True)
class EventRow:
    """One event of a stored log, decoded for display (untrusted: read from evidence)."""

    log: str
    seq: int
    pcr: int
    type_name: str
    digests: tuple[tuple[str, str], ...]
    untrusted_summary: str
    used_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class DecodedLogs:
    rows: tuple[EventRow, ...]
    errors: tuple[str, ...] = ()
    truncated: bool = False


MAX_EVENTS_SHOWN = 2000


def decode_logs(evidence: Mapping[str, Any], rules: Sequence[ReasonView]) -> DecodedLogs:
    """The event logs of stored evidence, each event marked with the rules whose expected or
    actual digest (in the rule's bank) is that event's digest."""
    from tboot_py.errors import ParseError
    from tboot_py.eventlog import parse_log
    from tboot_py.eventlog.decode import TbootPyEventData, decode_event, summary
    from tboot_py.eventlog.model import bank_name

    by_digest: dict[tuple[str | None, str], list[str]] = {}
    for r in rules:
        for v in (*r.expected, *((r.actual,) if r.actual else ())):
            d = (split_label(v)[0] or "").lower()
            if d and r.label not in by_digest.setdefault((r.bank, d), []):
                by_digest[(r.bank, d)].append(r.label)
    rows: list[EventRow] = []
    errors: list[str] = []
    truncated = False
    for blob in evidence.get("event_logs") or []:
        name = str(blob.get("name", "?")) if isinstance(blob, Mapping) else "?"
        try:
            data = base64.b64decode(str(blob.get("log", "")), validate=True) if isinstance(blob, Mapping) else b""
            log = parse_log(data, source=name)
        except (binascii.Error, ValueError, ParseError) as e:
            errors.append(f"{name}: {e}")
            continue
        for ev in log.events:
            if len(rows) >= MAX_EVENTS_SHOWN:
                truncated = True
                break
            digests = tuple((bank_name(a), d.hex()) for a, d in ev.digests)
            used: list[str] = []
            for bank, hexd in digests:
                for key in ((bank, hexd), (None, hexd)):
                    used += [u for u in by_digest.get(key, []) if u not in used]
            # A tboot-py record's digest is the hash of its data, which names the component's
            # digests: the rule used the record whose data carries the digest it compared.
            if isinstance(decode_event(ev), TbootPyEventData):
                text = ev.data.decode("utf-8", "replace").lower()
                for (_bank, d), labels in by_digest.items():
                    if len(d) >= 40 and d in text:
                        used += [u for u in labels if u not in used]
            rows.append(EventRow(name, ev.seq, ev.pcr, ev.event_type_name, digests, summary(ev), tuple(used)))
    return DecodedLogs(tuple(rows), tuple(errors), truncated)


def ear_claims(token: str | None, jwks: Mapping[str, Any]) -> dict[str, Any]:
    """The EAR's claims after checking its signature with the server's published keys."""
    from tboot_py.server.ear import EARError, load_verification_keys, verify_ear

    if not token:
        return {"verified": False, "reason": "no EAR"}
    try:
        ear = verify_ear(token, load_verification_keys(json.dumps(jwks).encode()), check_expiry=False)
    except EARError as e:
        return {"verified": False, "reason": e.diagnostics()}
    exp = ear.claims.get("exp")
    return {"verified": True, "status": ear.status, "expires": when(exp) if isinstance(exp, int | float) else "-",
            "host": ear.host, "issued": when(ear.issued_at),
            "policy": ear.policy_id, "pcr_digest": ear.pcr_digest, "nonce": ear.nonce,
            "claims": json.dumps(dict(ear.claims), indent=2, sort_keys=True)}


# ---------------------------------------------------------------------------- timeline


@dataclass(frozen=True)
class TimelinePoint:
    x: float
    y: float
    allowed: bool
    result_id: int
    label: str


@dataclass(frozen=True)
class Timeline:
    width: int
    height: int
    points: tuple[TimelinePoint, ...]
    start: str
    end: str
    passed: int
    failed: int
    pass_y: float = 30.0
    fail_y: float = 70.0
    ticks: tuple[tuple[float, str], ...] = field(default=())


def timeline(rows: Iterable[Mapping[str, Any]], width: int = 880, height: int = 110) -> Timeline:
    """Pass/fail over time: one mark per result, passing on the upper row, failing on the lower."""
    rs = sorted(rows, key=lambda r: (r["created_at"], r["id"]))
    left, right = 90.0, width - 20.0
    if not rs:
        return Timeline(width, height, (), "-", "-", 0, 0)
    t0, t1 = rs[0]["created_at"], rs[-1]["created_at"]
    span = max(t1 - t0, 1e-9)
    pts = []
    for i, r in enumerate(rs):
        frac = (r["created_at"] - t0) / span if t1 > t0 else (i + 1) / (len(rs) + 1)
        ok = bool(r["allowed"])
        pts.append(TimelinePoint(round(left + frac * (right - left), 1), 30.0 if ok else 70.0, ok, int(r["id"]),
                                 f"result {r['id']} {when(r['created_at'])}: {r['status']} ({r['kind']})"))
    ticks = ((left, when(t0)), (right, when(t1))) if t1 > t0 else ((left, when(t0)),)
    return Timeline(width, height, tuple(pts), when(t0), when(t1), sum(p.allowed for p in pts),
                    sum(not p.allowed for p in pts), ticks=ticks)


# ---------------------------------------------------------------------------- host page


def host_page(service: Service, name: str, limit: int = 200) -> dict[str, Any]:
    """Everything the host page shows: history, the latest appraisal and evidence, the last failure."""
    detail = service.host_detail(name, limit)
    latest = service.result(detail["last_result_id"]) if detail.get("last_result_id") else None
    failure_row = next((r for r in detail["results"] if not r["allowed"]), None)
    failure = None
    if failure_row is not None:
        failure = latest if latest is not None and latest["id"] == failure_row["id"] else \
            service.result(failure_row["id"])
    latest_reasons = reasons(latest["appraisal"]) if latest else []
    return {
        "host": detail,
        "latest": latest,
        "latest_reasons": latest_reasons,
        "pcrs": pcr_banks(latest["appraisal"]) if latest else [],
        "quirks": quirks(latest["appraisal"]) if latest else [],
        "logs": decode_logs(latest["evidence"], latest_reasons) if latest else DecodedLogs(()),
        "failure": failure,
        "failure_reasons": [r for r in reasons(failure["appraisal"]) if not r.passed] if failure else [],
        "timeline": timeline(detail["results"]),
        "ear": ear_claims(latest.get("ear") if latest else None, service.jwks()),
    }


# ---------------------------------------------------------------------------- policies


def policy_users(service: Service) -> dict[int, dict[str, list[str]]]:
    """policy id -> {"current": hosts whose policy it is now, "appraised": hosts with results under it}."""
    out: dict[int, dict[str, list[str]]] = {}
    with service.engine.connect() as c:
        rows = c.execute(sa.select(results.c.policy_id, hosts.c.name).distinct()
                         .join(hosts, hosts.c.id == results.c.host_id)
                         .where(results.c.policy_id.is_not(None)).order_by(hosts.c.name)).all()
        ids = {(r.scope, r.target, r.version): r.id for r in
               c.execute(sa.select(policies.c.id, policies.c.scope, policies.c.target, policies.c.version)).all()}
    for pid, host in rows:
        out.setdefault(int(pid), {"current": [], "appraised": []})["appraised"].append(host)
    for h in service.list_hosts():
        p = h["policy"]
        if p is not None and (pid := ids.get((p["scope"], p["target"], p["version"]))) is not None:
            out.setdefault(pid, {"current": [], "appraised": []})["current"].append(h["name"])
    return out


def policy_sets(service: Service) -> list[dict[str, Any]]:
    """Policies grouped by scope/target, newest version first, with the hosts using each."""
    users = policy_users(service)
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for p in service.list_policies():
        p = {**p, "current": users.get(p["id"], {}).get("current", []),
             "appraised": users.get(p["id"], {}).get("appraised", [])}
        grouped.setdefault((p["scope"], p["target"]), []).append(p)
    return [{"scope": s, "target": t, "versions": sorted(vs, key=lambda v: -v["version"])}
            for (s, t), vs in sorted(grouped.items())]


def policy_text(body: bytes) -> str:
    """The policy as a person reads it: a DSSE envelope's payload, else the body itself
    (JSON pretty-printed, so a diff shows one member per line)."""
    from tboot_py.errors import PolicyError
    from tboot_py.policy.signing import looks_like_envelope, parse_envelope

    text = body.decode("utf-8", "replace")
    try:
        doc = json.loads(body)
        if looks_like_envelope(doc):
            text = parse_envelope(doc).payload.decode("utf-8", "replace")
            doc = json.loads(text)
        if isinstance(doc, dict):
            return json.dumps(doc, indent=2, sort_keys=True) + "\n"
    except (ValueError, PolicyError):
        pass
    return text


@dataclass(frozen=True)
class DiffLine:
    kind: str  # "add", "del", "ctx", "hunk"
    text: str


def policy_diff(service: Service, scope: str, target: str, a: int, b: int) -> list[DiffLine]:
    old = policy_text(service.get_policy(scope, target, a)).splitlines()
    new = policy_text(service.get_policy(scope, target, b)).splitlines()
    out = []
    for line in difflib.unified_diff(old, new, f"v{a}", f"v{b}", lineterm="", n=3):
        if line.startswith(("---", "+++")):
            continue
        kind = {"@": "hunk", "+": "add", "-": "del"}.get(line[:1], "ctx")
        out.append(DiffLine(kind, line))
    return out


# ---------------------------------------------------------------------------- audit trail


def state_changes(service: Service, limit: int = 200) -> list[dict[str, Any]]:
    """The fleet's latest state changes (every process records them in the database)."""
    with service.engine.connect() as c:
        rows = c.execute(sa.select(events, hosts.c.name).join(hosts, hosts.c.id == events.c.host_id)
                         .order_by(events.c.id.desc()).limit(limit)).all()
    return [{"at": r.at, "host": r.name, "old_state": r.old_state, "new_state": r.new_state, "detail": r.detail,
             "server_id": r.server_id} for r in rows]
