"""``tboot-py log ...``: show, replay, verify, diff and check TCG event logs."""

from __future__ import annotations

import argparse
from typing import Any

from tboot_py.errors import EXIT_DENIED, EXIT_OK

DEFAULT_LOG = "/sys/kernel/security/tpm0/binary_bios_measurements"


def register(sub: Any) -> None:
    log = sub.add_parser("log", help="TCG event logs: show, replay, verify, diff, check, state")
    lsub = log.add_subparsers(dest="log_command", metavar="ACTION")
    lsub.required = True

    def add_log(p: argparse.ArgumentParser) -> None:
        p.add_argument("log", nargs="?", default=DEFAULT_LOG, metavar="LOG",
                       help=f"event log (default: {DEFAULT_LOG}): TCG binary, CEL-JSON, or a Linux IMA list "
                            "(ASCII or binary), told apart by content; - for standard input")

    p = lsub.add_parser("show", help="list the events of a log")
    add_log(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="machine output with decoded event data")
    g.add_argument("--cel", action="store_true", help="TCG Canonical Event Log (CEL-JSON) output")
    p.set_defaults(func=_show)

    p = lsub.add_parser("replay", help="compute the PCR values the log leads to")
    add_log(p)
    p.add_argument("--banks", help="comma-separated banks (default: every bank of the log)")
    p.add_argument("--pcrs", metavar="FILE",
                   help="PCR values JSON; for a TCG log, apply known quirks only where they match it; for an IMA "
                        "list, PCR 10 must match it (exit 1 if not)")
    p.add_argument("--firmware-log", metavar="LOG",
                   help="IMA list only: check its boot_aggregate against this firmware log's PCRs 0-9 (exit 1 if not)")
    p.add_argument("--json", action="store_true", help="machine output")
    p.set_defaults(func=_replay)

    p = lsub.add_parser("verify", help="check the log replays to given PCR values (exit 1 if not)")
    add_log(p)
    p.add_argument("--pcrs", metavar="FILE", required=True, help='PCR values JSON: {"sha256": {"0": "hex"}}')
    p.add_argument("--no-quirks", action="store_true", help="do not try the firmware quirk registry")
    p.add_argument("--json", action="store_true", help="machine output")
    p.set_defaults(func=_verify)

    p = lsub.add_parser("diff", help="name the first event where two logs diverge (exit 1 if they differ)")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("--json", action="store_true", help="machine output")
    p.set_defaults(func=_diff)

    p = lsub.add_parser("check", help="flag events whose digest does not match their data (exit 1 if any)")
    add_log(p)
    p.add_argument("--json", action="store_true", help="machine output")
    p.set_defaults(func=_check)

    p = lsub.add_parser("state", help="boot state extracted for policy (Secure Boot, db, images, cmdlines)")
    add_log(p)
    p.add_argument("--json", action="store_true", help="machine output")
    p.set_defaults(func=_state)


def _read(path: str) -> bytes:
    from tboot_py.eventlog.parse import read_log_bytes

    return read_log_bytes(path)


def _load_any(path: str) -> Any:
    """A TCG log (binary or CEL-JSON) or an IMA list, told apart by content."""
    from tboot_py.eventlog import parse_log
    from tboot_py.eventlog.sniff import looks_like_ima

    data = _read(path)
    source = "<stdin>" if path == "-" else path
    if data.lstrip()[:1] in (b"[", b"{"):
        from tboot_py.eventlog.cel import from_cel

        return from_cel(data, source=source)
    if looks_like_ima(data):
        from tboot_py.eventlog.ima import parse_ima

        return parse_ima(data, source=source)
    return parse_log(data, source=source)


def _is_ima(log: Any) -> bool:
    """Whether :func:`_load_any` gave an IMA list (else a TCG EventLog); the IMA module is
    imported only for an IMA list."""
    from tboot_py.eventlog.model import EventLog

    return not isinstance(log, EventLog)


def _load(path: str) -> Any:
    """A TCG event log; an IMA list is an input error for the commands that take only these."""
    from tboot_py.errors import InputError

    log = _load_any(path)
    if _is_ima(log):
        raise InputError(f"{path} is an IMA measurement list; this command reads TCG event logs "
                         "(IMA lists: log show, log replay)")
    return log


def _load_pcrs(path: str) -> dict[str, dict[int, bytes]]:
    from tboot_py.eventlog.quirks import load_pcr_values
    from tboot_py.fileio import SMALL, read_input
    from tboot_py.jsonin import loads_strict

    data = read_input(path, "PCR file", SMALL)
    obj = loads_strict(data, f"PCR file {path}")
    return load_pcr_values(obj)


def jsonable(obj: Any) -> Any:
    """Dataclasses, bytes, UUIDs, enums and tuples to JSON values (bytes as hex)."""
    import dataclasses
    import enum
    import uuid

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {"kind": type(obj).__name__}
        for f in dataclasses.fields(obj):
            if f.name == "der":
                continue
            out[f.name] = jsonable(getattr(obj, f.name))
        return out
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, uuid.UUID):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, tuple | list):
        return [jsonable(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    return obj


def _event_json(e: Any) -> dict[str, Any]:
    from tboot_py.eventlog import decode as d
    from tboot_py.eventlog.model import bank_name

    return {
        "seq": e.seq,
        "offset": e.offset,
        "pcr": e.pcr,
        "type": e.event_type,
        "type_name": e.event_type_name,
        "digests": {bank_name(a): d.hex() for a, d in e.digests},
        "data": e.data.hex(),
        "decoded": jsonable(d.decode_event(e)),
    }


def _summary(e: Any) -> str:
    from tboot_py.eventlog.decode import summary

    return summary(e)


def _show(args: argparse.Namespace) -> int:
    from tboot_py._output import Column, emit_json, print_table
    from tboot_py.eventlog.cel import to_cel

    log = _load_any(args.log)
    if _is_ima(log):
        return _show_ima(args, log)
    if args.cel:
        emit_json(to_cel(log))
        return EXIT_OK
    if args.json:
        emit_json({
            "format": log.format.value,
            "banks": list(log.bank_names),
            "spec_id": jsonable(log.spec_id),
            "events": [_event_json(e) for e in log.events],
        })
        return EXIT_OK
    # The first bank's digest, abbreviated to 16 hex digits (all of them in full: --json).
    rows = []
    for e in log.events:
        first = e.digests[0][1].hex()[:16] if e.digests else ""
        pcr = "-" if e.pcr == 0xFFFFFFFF else str(e.pcr)
        rows.append((str(e.seq), pcr, e.event_type_name, first, _summary(e)))
    print_table(f"{args.log}: {log.format.value} log, banks {', '.join(log.bank_names)}, {len(log.events)} events",
                (Column("#", right=True), Column("PCR", right=True), Column("type"),
                 Column("digest (first bank)", digest=True), Column("data")), rows)
    return EXIT_OK


def _ima_event_json(e: Any) -> dict[str, Any]:
    from tboot_py.eventlog.ima import template_hash_ok

    return {"seq": e.seq, "offset": e.offset, "pcr": e.pcr, "template_hash": e.template_hash.hex(),
            "template_name": e.template_name, "file_hash_alg": e.file_hash_alg,
            "file_hash": e.file_hash.hex() if e.file_hash is not None else None, "file_name": e.file_name,
            "signature": e.signature.hex() if e.signature is not None else None,
            "template_hash_ok": template_hash_ok(e)}


def _show_ima(args: argparse.Namespace, log: Any) -> int:
    from tboot_py._output import Column, emit_json, print_table
    from tboot_py.errors import InputError

    fmt = "ima-ascii" if log.ascii else "ima-binary"
    if args.cel:
        raise InputError("--cel: an IMA list is shown as --json or a table")
    if args.json:
        emit_json({"format": fmt, "events": [_ima_event_json(e) for e in log.events]})
        return EXIT_OK
    # The template digest abbreviated to 16 hex digits (in full: --json); the file hash whole.
    rows = [(str(e.seq), str(e.pcr), e.template_name, e.template_hash.hex()[:16],
             f"{e.file_hash_alg}:{e.file_hash.hex()}" if e.file_hash is not None else "-", e.file_name or "-")
            for e in log.events]
    print_table(f"{args.log}: {fmt} list, {len(log.events)} events",
                (Column("#", right=True), Column("PCR", right=True), Column("template"),
                 Column("template digest", digest=True), Column("file hash", digest=True), Column("file")), rows)
    return EXIT_OK


def _emit_json(obj: Any) -> None:
    """JSON on stdout without importing rich (keeps ``log replay --json`` start-up short)."""
    import json
    import sys

    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _pcrs_json(values: dict[str, dict[int, bytes]]) -> dict[str, dict[str, str]]:
    return {bank: {str(i): regs[i].hex() for i in sorted(regs)} for bank, regs in values.items()}


def _replay(args: argparse.Namespace) -> int:
    import sys

    from tboot_py import algorithms
    from tboot_py.eventlog import replay

    log = _load_any(args.log)
    if _is_ima(log):
        return _replay_ima(args, log)
    if args.firmware_log:
        from tboot_py.errors import InputError

        raise InputError("--firmware-log checks an IMA list's boot_aggregate; this log is not an IMA list")
    banks = [b.name for b in algorithms.parse_banks(args.banks)] if args.banks else None
    values = replay(log, banks)
    quirks: list[str] = []
    if args.pcrs:
        from tboot_py.eventlog.quirks import replay_against

        report = replay_against(log, _load_pcr_values_for(args.pcrs, banks))
        quirks = list(report.quirks_applied)
        for bank, regs in report.values().items():
            if bank in values:
                values[bank].update(regs)
    if args.json:
        out: dict[str, Any] = {"pcrs": _pcrs_json(values)}
        if args.pcrs:
            out["quirks"] = quirks
        _emit_json(out)
    else:
        from tboot_py._output import print_pcrs

        print_pcrs(values, title=f"PCR values replayed from {args.log}")
        if args.pcrs:
            print(f"quirks applied: {', '.join(quirks) if quirks else 'none'}", file=sys.stderr)
    return EXIT_OK


def _replay_ima(args: argparse.Namespace, log: Any) -> int:
    """Replay an IMA list into PCR 10; check it against --pcrs and the boot_aggregate against
    the firmware log's PCRs 0-9 (--firmware-log). Exit 1 when either check fails."""
    import sys

    from tboot_py import algorithms
    from tboot_py.eventlog import replay
    from tboot_py.eventlog.ima import IMA_PCR, check_boot_aggregate, replay_ima

    banks = [b.name for b in algorithms.parse_banks(args.banks)] if args.banks else ["sha1", "sha256"]
    values = replay_ima(log, banks)
    out: dict[str, Any] = {"pcrs": _pcrs_json(values)}
    ok = True
    notes: list[str] = []
    if args.pcrs:
        expected = _load_pcrs(args.pcrs)
        compared = []
        for bank, regs in values.items():
            want = expected.get(bank, {}).get(IMA_PCR)
            got = regs.get(IMA_PCR)
            if want is None or got is None:
                continue
            compared.append({"bank": bank, "pcr": IMA_PCR, "expected": want.hex(), "replayed": got.hex(),
                             "ok": want == got})
        if not compared:
            compared_ok = False
            notes.append(f"PCR {IMA_PCR}: no bank of the replay is in {args.pcrs}")
        else:
            compared_ok = all(c["ok"] for c in compared)
            for c in compared:
                notes.append(f"PCR {IMA_PCR} {c['bank']}: " + ("matches" if c["ok"] else
                             f"MISMATCH: expected {c['expected']}, replayed {c['replayed']}"))
        ok = ok and compared_ok
        out["pcr10"] = {"ok": compared_ok, "compared": compared}
    if args.firmware_log:
        fw = _load(args.firmware_log)
        check = check_boot_aggregate(log, replay(fw))
        ok = ok and check.ok
        notes.append(check.reason if check.ok else "MISMATCH: " + check.reason)
        out["boot_aggregate"] = {"ok": check.ok, "bank": check.bank, "reason": check.reason,
                                 "listed": check.listed.hex() if check.listed is not None else None,
                                 "computed": check.computed.hex() if check.computed is not None else None}
    if args.pcrs or args.firmware_log:
        out["ok"] = ok
    if args.json:
        _emit_json(out)
    else:
        from tboot_py._output import print_pcrs

        print_pcrs(values, title=f"PCR values replayed from the IMA list {args.log}")
        for n in notes:
            print(n, file=sys.stderr)
    return EXIT_OK if ok else EXIT_DENIED


def _load_pcr_values_for(path: str, banks: list[str] | None) -> dict[str, dict[int, bytes]]:
    vals = _load_pcrs(path)
    return vals if banks is None else {b: v for b, v in vals.items() if b in banks}


def _verify(args: argparse.Namespace) -> int:
    from tboot_py._output import emit_json, say
    from tboot_py.eventlog.quirks import replay_against

    log = _load(args.log)
    expected = _load_pcrs(args.pcrs)
    report = replay_against(log, expected, quirks=() if args.no_quirks else None)
    compared = [r for r in report.results if r.expected is not None]
    if args.json:
        emit_json({
            "ok": report.ok,
            "compared": len(compared),
            "quirks": list(report.quirks_applied),
            "banks_not_compared": list(report.banks_not_compared),
            "unexplained": [{"bank": b, "pcr": p} for b, p in report.unexplained],
            "mismatches": [
                {
                    "bank": r.bank,
                    "pcr": r.pcr,
                    "expected": r.expected.hex() if r.expected else None,
                    "replayed": r.replayed.hex() if r.replayed else None,
                    "events": [{"seq": e.seq, "type": e.event_type_name, "digest": (e.digest(r.bank) or b"").hex()}
                               for e in r.events],
                }
                for r in report.mismatches
            ],
        })
        return EXIT_OK if report.ok else EXIT_DENIED
    if report.ok:
        say(f"OK: {len(compared)} PCR values match"
                + (f" (quirks applied: {', '.join(report.quirks_applied)})" if report.quirks_applied else ""))
        return EXIT_OK
    if not compared:
        say("MISMATCH: no PCR of the log could be compared "
                f"(banks not compared: {', '.join(report.banks_not_compared) or 'none'})")
        return EXIT_DENIED
    for r in report.mismatches:
        say(f"MISMATCH: PCR {r.pcr} bank {r.bank}: expected {r.expected.hex() if r.expected else '?'}, "
                f"replayed {r.replayed.hex() if r.replayed else '(a record lacks this bank)'}")
        for e in r.events:
            d = e.digest(r.bank)
            say(f"  extended by event {e.seq} ({e.event_type_name}) {d.hex() if d else '(no digest)'}")
    return EXIT_DENIED


def _diff(args: argparse.Namespace) -> int:
    from tboot_py._output import emit_json, say
    from tboot_py.eventlog.checks import diff

    d = diff(_load(args.a), _load(args.b))
    if args.json:
        emit_json({"equal": d.equal, "index": d.index, "reason": d.reason,
                   "a": _event_json(d.a) if d.a else None, "b": _event_json(d.b) if d.b else None})
    elif d.equal:
        say("logs are equal")
    else:
        say(f"first difference at record {d.index}: {d.reason}")
        for side, e in (("A", d.a), ("B", d.b)):
            if e is not None:
                say(f"  {side}: event {e.seq} PCR {e.pcr} {e.event_type_name} {_summary(e)}")
    return EXIT_OK if d.equal else EXIT_DENIED


def _check(args: argparse.Namespace) -> int:
    from tboot_py._output import emit_json, say
    from tboot_py.eventlog.checks import DigestStatus, check_digests

    checks = check_digests(_load(args.log))
    bad = [c for c in checks if c.status is DigestStatus.MISMATCH]
    if args.json:
        emit_json({"mismatches": [jsonable(c) for c in bad],
                   "checked": sum(c.status is DigestStatus.OK for c in checks) + len(bad)})
    else:
        for c in bad:
            say(f"event {c.seq} PCR {c.pcr} {c.event_type}: {c.detail}")
        say(f"{len(bad)} event(s) whose digest does not match their data")
    return EXIT_DENIED if bad else EXIT_OK


def _state(args: argparse.Namespace) -> int:
    from tboot_py._output import emit_json, say
    from tboot_py.eventlog.state import boot_state

    st = boot_state(_load(args.log))
    obj = jsonable(st)
    obj["after_separator"] = {str(p): [e.seq for e in evs] for p, evs in st.after_separator}
    if args.json:
        emit_json(obj)
        return EXIT_OK
    say(f"Secure Boot: {'unknown (not measured)' if st.secure_boot is None else 'on' if st.secure_boot else 'off'}")
    for name, db in (("PK", st.pk), ("KEK", st.kek), ("db", st.db), ("dbx", st.dbx)):
        if db is not None:
            say(f"{name}: {len(db.certificates)} certificates, {len(db.hashes)} hashes")
            for cert in db.certificates:
                say(f"  {cert.subject}")
    for img in st.loaded_images:
        say(f"image (PCR {img.pcr}) {img.device_path or ''} sha256={img.digest('sha256') or '-'}")
    for cmd in st.kernel_cmdlines:
        say(f"cmdline: {cmd}")
    return EXIT_OK
