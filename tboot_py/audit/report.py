"""Compliance reports from the audit log, for people (HTML) or documents (Markdown).

A report is produced only from an intact hash chain (:func:`verify_chain`), and it states
the last record's hash, so the report can be re-verified later against the log.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from tboot_py.audit.records import load_chain
from tboot_py.errors import InputError

FORMATS = ("html", "md", "json", "print")


def _version() -> str:
    try:
        return metadata.version("tboot-py")
    except metadata.PackageNotFoundError:
        return "unknown"


def render_report(audit_log: Path, fmt: str = "html") -> str:
    """Render the report; raises AuditChainError for a broken chain, InputError for bad input."""
    import jinja2

    if fmt not in FORMATS:
        raise InputError(f"unknown report format {fmt!r} ({', '.join(FORMATS)})")
    records: list[Mapping[str, Any]] = list(load_chain(audit_log).parsed)
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("tboot_py.audit", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
    )
    times = [str(r.get("time")) for r in records if r.get("time")]
    context = dict(
        source=str(audit_log),
        generated=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        version=_version(),
        records=[_normalise(r) for r in records],
        head=records[-1]["hash"] if records else "0" * 64,
        first_time=min(times) if times else None,
        last_time=max(times) if times else None,
        # A dry run decides but launches nothing: it is never counted as a launch.
        allowed=sum(1 for r in records if r.get("decision") == "allow" and not r.get("dry_run")),
        dry_runs=sum(1 for r in records if r.get("dry_run")),
        denied=sum(1 for r in records if r.get("decision") != "allow"),
        policies=sorted({str(r["policy_sha256"]) for r in records if r.get("policy_sha256")}),
    )
    if fmt == "json":
        # The machine form: what it covers, the chain head and how to re-check it.
        return json.dumps({"format": "tboot-py-audit-report/1", "kind": "audit-log", **context,
                           "recheck": f"tboot-py audit verify {audit_log} --expect-head {context['head']}"},
                          indent=2, sort_keys=True, default=str) + "\n"
    template = env.get_template("report.md.j2" if fmt == "md" else "report.html.j2")
    return template.render(print_layout=fmt == "print", **context)


def _normalise(r: Mapping[str, Any]) -> dict[str, Any]:
    """Fill the fields a template reads, so an older or partial record still renders."""
    ms = [m for m in r.get("measurements") or [] if isinstance(m, dict)]
    return {
        "time": r.get("time", "-"),
        "decision": "allow" if r.get("decision") == "allow" else "deny",
        "dry_run": bool(r.get("dry_run")),
        "exit_code": r.get("exit_code", "-"),
        "reasons": [str(x) for x in r.get("reasons") or []],
        "measurements": [{"file": m.get("file", "?"), "kind": m.get("kind", "?"),
                          "digests": m.get("digests") or {"-": "-"}} for m in ms],
    }
