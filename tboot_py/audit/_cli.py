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
    v.add_argument("log", type=Path, metavar="AUDIT_LOG", help="the audit log; - for standard input")
    v.add_argument("--expect-head", metavar="HASH", default=None,
                   help="the chain must end at this record hash (a head kept elsewhere, e.g. in a report)")
    v.add_argument("--tpm", metavar="TCTI", default=None,
                   help="also check the records of the current TPM boot against their anchor PCR")
    v.add_argument("--audit-pcr", type=int, default=None, metavar="N",
                   help="the anchor PCR the gate extends (default 15)")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=_verify)
    s = asub.add_parser("show", help="list the decisions in an audit log (after checking its chain)")
    s.add_argument("log", type=Path, metavar="AUDIT_LOG", help="the audit log; - for standard input")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_show)
    r = asub.add_parser("report", help="write a compliance report: from an intact audit log, or from the "
                                       "attestation service's database for one host or the fleet")
    r.add_argument("log", type=Path, metavar="AUDIT_LOG", nargs="?", default=None,
                   help="a launch audit log, - for standard input (or use --db with --host or --fleet)")
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
    from tboot_py.audit.records import DEFAULT_ANCHOR_PCR, load_chain, verify_tpm_anchor
    from tboot_py.errors import InputError

    head = _check_head(args.expect_head)
    if args.tpm is None:
        if args.audit_pcr is not None:
            raise InputError("--audit-pcr needs --tpm")
        n = load_chain(args.log, head).records
        anchored = None
    else:
        from tboot_py.tpm import open_tpm

        pcr = DEFAULT_ANCHOR_PCR if args.audit_pcr is None else args.audit_pcr
        tpm = open_tpm(args.tpm)
        try:
            report, check = verify_tpm_anchor(args.log, tpm, pcr, head)
        finally:
            tpm.close()
        n, anchored = report.records, check.anchored
    if args.json:
        out: dict[str, Any] = {"ok": True, "records": n}
        if anchored is not None:
            out["anchored"] = anchored
        emit_json(out)
    else:
        extra = "" if anchored is None else f", {anchored} anchored in this TPM boot match the PCR"
        say(f"audit log {args.log}: chain intact, {n} record(s){extra}")
    return EXIT_OK


def _check_head(text: str | None) -> str | None:
    import re

    from tboot_py.errors import InputError

    if text is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raise InputError(f"--expect-head wants a 64-digit hex SHA-256, got {text!r}")
    return text


def _show(args: argparse.Namespace) -> int:

    from tboot_py._output import Column, emit_json, print_table
    from tboot_py.audit.records import load_chain

    records = list(load_chain(args.log).parsed)
    if args.json:
        emit_json({"records": records})
        return EXIT_OK
    rows = []
    for r in records:
        colour = "green" if r.get("decision") == "allow" else "red"
        dry = " (dry run)" if r.get("dry_run") else ""
        rows.append((str(r.get("time")), f"[{colour}]{r.get('decision')}{dry}[/]", str(r.get("exit_code")),
                     "\n".join(str(x) for x in r.get("reasons", []))))
    print_table(f"Launch decisions in {args.log}",
                (Column("time"), Column("decision"), Column("exit"), Column("reasons")), rows)
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    import sys

    from tboot_py.errors import InputError
    from tboot_py.fileio import write_atomic

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
    write_atomic(args.output, text.encode(), what="report")
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
