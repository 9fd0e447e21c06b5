"""``tboot-py audit verify|show``: check and read the hash-chained audit log."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tboot_py.errors import EXIT_OK


def register(sub: Any) -> None:
    p = sub.add_parser("audit", help="check or show the hash-chained audit log of launch decisions")
    asub = p.add_subparsers(dest="audit_command", metavar="ACTION")
    asub.required = True
    v = asub.add_parser("verify", help="check every record's hash and link (exit 1 if broken)")
    v.add_argument("log", type=Path, metavar="AUDIT_LOG")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=_verify)
    s = asub.add_parser("show", help="list the decisions in an audit log (after checking its chain)")
    s.add_argument("log", type=Path, metavar="AUDIT_LOG")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_show)
    r = asub.add_parser("report", help="write a compliance report: from an intact audit log, or from the "
                                       "attestation service's database for one host or the fleet")
    r.add_argument("log", type=Path, metavar="AUDIT_LOG", nargs="?", default=None,
                   help="a launch audit log (or use --db with --host or --fleet)")
    r.add_argument("--db", metavar="URL", help="the service database: postgresql://... or a SQLite file")
    r.add_argument("--host", metavar="NAME", help="report on this host's stored attestations (with --db)")
    r.add_argument("--result", type=int, metavar="ID", help="only this stored result (with --host)")
    r.add_argument("--limit", type=int, default=50, metavar="N", help="the host's latest N results (default 50)")
    r.add_argument("--fleet", action="store_true", help="report on every host (with --db)")
    r.add_argument("--trust-key", action="append", default=[], type=Path, metavar="PUB",
                   help="policy signing key: the recomputation also checks the stored policies' signatures")
    r.add_argument("--format", choices=["html", "print", "json", "md"], default=None,
                   help="html, print (print-ready HTML), json, or md (audit logs only); "
                        "default: md for an OUTPUT ending in .md, json for .json, else html")
    r.add_argument("-o", "--output", type=Path, default=None, metavar="FILE", help="default: standard output")
    r.set_defaults(func=_report)
    k = asub.add_parser("recheck", help="recompute every stored verdict of the service from its archived "
                                        "evidence; exit 1 when any differs from what is stored")
    k.add_argument("--db", metavar="URL", required=True,
                   help="the service database: postgresql://... or a SQLite file")
    k.add_argument("--host", metavar="NAME", help="only this host's results")
    k.add_argument("--result", type=int, action="append", default=[], metavar="ID", help="only this result "
                   "(repeatable)")
    k.add_argument("--trust-key", action="append", default=[], type=Path, metavar="PUB",
                   help="policy signing key: also check every stored policy's signature")
    k.add_argument("--json", action="store_true")
    k.set_defaults(func=_recheck)


def _verify(args: argparse.Namespace) -> int:
    from tboot_py._output import emit_json, say
    from tboot_py.audit.records import verify_chain

    n = verify_chain(args.log)
    if args.json:
        emit_json({"ok": True, "records": n})
    else:
        say(f"audit log {args.log}: chain intact, {n} record(s)")
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    import json

    from tboot_py._output import Column, emit_json, print_table
    from tboot_py.audit.records import verify_chain

    verify_chain(args.log)
    records = [json.loads(line) for line in args.log.read_text().splitlines()]
    if args.json:
        emit_json({"records": records})
        return EXIT_OK
    rows = []
    for r in records:
        colour = "green" if r.get("decision") == "allow" else "red"
        rows.append((str(r.get("time")), f"[{colour}]{r.get('decision')}[/]", str(r.get("exit_code")),
                     "\n".join(str(x) for x in r.get("reasons", []))))
    print_table(f"Launch decisions in {args.log}",
                (Column("time"), Column("decision"), Column("exit"), Column("reasons")), rows)
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    import sys

    from tboot_py.errors import InputError

    suffix = args.output.suffix.lower() if args.output is not None else ""
    fmt = args.format or {".md": "md", ".json": "json"}.get(suffix, "html")
    if args.db is not None:
        from tboot_py.server.compliance import fleet_report, host_report, render

        if args.log is not None or args.fleet == (args.host is not None):
            raise InputError("with --db, give --host NAME or --fleet (and no audit log)")
        if fmt == "md":
            raise InputError("reports from the database are html, print or json")
        if args.result is not None and args.host is None:
            raise InputError("--result needs --host")
        data = (fleet_report(args.db, args.trust_key) if args.fleet else
                host_report(args.db, args.host, args.result, args.limit, args.trust_key))
        text = render(data, fmt)
    else:
        from tboot_py.audit.report import render_report

        if args.log is None:
            raise InputError("give an audit log, or --db with --host or --fleet")
        if args.host or args.fleet or args.result is not None:
            raise InputError("--host, --fleet and --result read the service database: add --db")
        text = render_report(args.log, fmt)
    if args.output is None:
        sys.stdout.write(text)
        return EXIT_OK
    try:
        args.output.write_text(text)
    except OSError as e:
        raise InputError(f"cannot write {args.output}: {e.strerror}") from e
    return EXIT_OK


def _recheck(args: argparse.Namespace) -> int:
    from tboot_py._output import emit_json, say
    from tboot_py.errors import EXIT_DENIED
    from tboot_py.server.compliance import load_trust_keys, open_database
    from tboot_py.server.recheck import recheck

    engine = open_database(args.db)
    keys = load_trust_keys(args.trust_key)
    done = list(recheck(engine, host=args.host, result_ids=args.result, trust_keys=keys))
    differ = [r for r in done if not r.same]
    if args.json:
        emit_json({"checked": len(done), "differ": len(differ), "results": [r.as_json() for r in done]})
    else:
        for r in differ:
            say(f"result {r.result_id} ({r.host}): DIFFERS: " + "; ".join(r.differences))
        say(f"{len(done)} stored verdict(s) recomputed from their evidence: "
            + (f"{len(differ)} differ" if differ else "all the same"))
    return EXIT_DENIED if differ else EXIT_OK
