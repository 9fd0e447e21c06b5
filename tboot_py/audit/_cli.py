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
    r = asub.add_parser("report", help="write a compliance report (HTML or Markdown) from an intact audit log")
    r.add_argument("log", type=Path, metavar="AUDIT_LOG")
    r.add_argument("--format", choices=["html", "md"], default=None,
                   help="default: md for an OUTPUT ending in .md, else html")
    r.add_argument("-o", "--output", type=Path, default=None, metavar="FILE", help="default: standard output")
    r.set_defaults(func=_report)


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

    from tboot_py.audit.report import render_report
    from tboot_py.errors import InputError

    fmt = args.format or ("md" if args.output is not None and args.output.suffix.lower() == ".md" else "html")
    text = render_report(args.log, fmt)
    if args.output is None:
        sys.stdout.write(text)
        return EXIT_OK
    try:
        args.output.write_text(text)
    except OSError as e:
        raise InputError(f"cannot write {args.output}: {e.strerror}") from e
    return EXIT_OK
