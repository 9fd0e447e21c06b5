"""``tboot-py serve``, ``tboot-py fleet ...`` (admin) and ``tboot-py ear verify``.

Nothing heavy is imported at start-up: FastAPI, SQLAlchemy and httpx load inside handlers.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from tboot_py.errors import EXIT_DENIED, EXIT_OK, InputError

_STATE = "/var/lib/tboot-py/server"


def register(sub: Any) -> None:
    s = sub.add_parser("serve", help="run the remote attestation service (HTTP API, SQLite or PostgreSQL)")
    s.add_argument("--state", type=Path, default=Path(_STATE), metavar="DIR",
                   help=f"state directory: SQLite database and admin token (default {_STATE})")
    s.add_argument("--db", metavar="URL", help="database: postgresql://user@host/db (default: SQLite in --state)")
    s.add_argument("--listen", default="127.0.0.1:7478", metavar="HOST:PORT", help="default 127.0.0.1:7478")
    s.add_argument("--ek-roots", type=Path, metavar="DIR", help="PEM certificates trusted as EK certificate roots")
    s.add_argument("--require-approval", action="store_true", help="first enrollments wait for approval too")
    s.add_argument("--trust-key", action="append", default=[], type=Path, metavar="PUB",
                   help="policy signing key (repeatable); then only signed policies are accepted")
    s.add_argument("--tls-cert", type=Path, metavar="F", help="TLS certificate (PEM); required off loopback")
    s.add_argument("--tls-key", type=Path, metavar="F", help="TLS private key (PEM)")
    s.add_argument("--admin-token-file", type=Path, metavar="F",
                   help="admin token file (default STATE/admin-token; generated when missing)")
    s.add_argument("--interval", type=float, default=60.0, metavar="S",
                   help="attestation interval of new hosts in seconds (default 60)")
    s.add_argument("--nonce-ttl", type=float, default=60.0, metavar="S", help="nonce lifetime (default 60 s)")
    s.add_argument("--max-body", type=int, default=4 * 1024 * 1024, metavar="BYTES",
                   help="request body cap (default 4 MiB)")
    s.add_argument("--audit-log", action="append", default=[], type=Path, metavar="FILE",
                   help="a launch audit log the dashboard's audit trail page shows (repeatable)")
    s.set_defaults(func=_serve)

    f = sub.add_parser("fleet", help="administer the attestation service: hosts, approvals, policies")
    fsub = f.add_subparsers(dest="fleet_command", metavar="ACTION")
    fsub.required = True

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--server", required=True, action="append", metavar="URL", help="service URL (repeatable)")
        p.add_argument("--admin-token-file", type=Path, metavar="F",
                       help=f"admin token (default $TBOOT_PY_ADMIN_TOKEN or {_STATE}/admin-token)")
        p.add_argument("--cacert", type=Path, metavar="F", help="CA certificate for the server's TLS certificate")
        p.add_argument("--json", action="store_true", help="machine output")

    p = fsub.add_parser("hosts", help="list hosts with state, last attestation and policy")
    common(p)
    p.set_defaults(func=_hosts)
    p = fsub.add_parser("host", help="one host: its attestations and state changes")
    common(p)
    p.add_argument("name")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=_host)
    p = fsub.add_parser("approve", help="approve a pending enrollment (new host, or changed AK/EK)")
    common(p)
    p.add_argument("name")
    p.set_defaults(func=_approve)
    p = fsub.add_parser("pending", help="enrollments awaiting approval")
    common(p)
    p.set_defaults(func=_pending)
    p = fsub.add_parser("set", help="a host's group and attestation interval")
    common(p)
    p.add_argument("name")
    p.add_argument("--group", help="host group ('' to clear)")
    p.add_argument("--interval", type=float, metavar="S")
    p.set_defaults(func=_set)
    p = fsub.add_parser("reappraise", help="appraise a host's latest evidence again")
    common(p)
    p.add_argument("name")
    p.set_defaults(func=_reappraise)
    p = fsub.add_parser("result", help="one stored result with its appraisal and evidence")
    common(p)
    p.add_argument("id", type=int)
    p.set_defaults(func=_result)
    p = fsub.add_parser("policy", help="set or list policies (per host or host group, versioned)")
    psub = p.add_subparsers(dest="policy_command", metavar="ACTION")
    psub.required = True
    ps = psub.add_parser("set", help="upload a new policy version (signed DSSE envelope or TOML/JSON)")
    common(ps)
    ps.add_argument("scope", choices=["host", "group"])
    ps.add_argument("target", help="host or group name")
    ps.add_argument("file", type=Path)
    ps.set_defaults(func=_policy_set)
    pl = psub.add_parser("list", help="every policy version")
    common(pl)
    pl.set_defaults(func=_policy_list)
    p = fsub.add_parser("webhook", help="state-change webhooks (HMAC-SHA256 signed)")
    wsub = p.add_subparsers(dest="webhook_command", metavar="ACTION")
    wsub.required = True
    wa = wsub.add_parser("add", help="register a webhook URL")
    common(wa)
    wa.add_argument("url")
    wa.add_argument("--secret-file", type=Path, required=True, metavar="F", help="HMAC key (16-128 characters)")
    wa.set_defaults(func=_webhook_add)
    wd = wsub.add_parser("deliveries", help="the delivery log")
    common(wd)
    wd.set_defaults(func=_webhook_deliveries)

    e = sub.add_parser("ear", help="EAT attestation results (EAR JWTs) from the service")
    esub = e.add_subparsers(dest="ear_command", metavar="ACTION")
    esub.required = True
    ev = esub.add_parser("verify", help="check an EAR offline: ES256 signature, profile, nonce, age")
    ev.add_argument("token", metavar="TOKEN", help="the EAR, @FILE, or - for stdin")
    ev.add_argument("--key", required=True, type=Path, metavar="PUB", help="PEM public key or JWKS file")
    ev.add_argument("--nonce", metavar="HEX", help="require this nonce")
    ev.add_argument("--max-age", type=float, metavar="S", help="require an EAR at most S seconds old")
    ev.add_argument("--host", help="require an EAR for this host")
    ev.add_argument("--json", action="store_true", help="machine output")
    ev.set_defaults(func=_ear_verify)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from tboot_py._output import say
    from tboot_py.server.run import ServeOptions, build, check_tls, parse_listen
    from tboot_py.server.service import Config

    host, port = parse_listen(args.listen)
    if args.max_body < 1024:
        raise InputError("--max-body must be at least 1024")
    cfg = Config(ek_roots=args.ek_roots, require_approval=args.require_approval,
                 policy_trust_keys=tuple(args.trust_key), nonce_ttl=args.nonce_ttl, default_interval=args.interval)
    opts = ServeOptions(state=args.state, db=args.db, listen=args.listen, admin_token_file=args.admin_token_file,
                        tls_cert=args.tls_cert, tls_key=args.tls_key, max_body=args.max_body, config=cfg,
                        audit_logs=tuple(args.audit_log))
    tls = check_tls(opts, host)
    if args.ek_roots is not None and not args.ek_roots.exists():
        raise InputError(f"{args.ek_roots}: no such directory")
    app, _token, created = build(opts)
    scheme = "https" if tls else "http"
    shown = f"[{host}]" if ":" in host else host
    say(f"tboot-py serve: listening on {scheme}://{shown}:{port}", stderr=True)
    say(f"admin token: {opts.token_path}" + (" (generated)" if created else ""), stderr=True)
    say(f"database: {opts.db_url.split('@')[-1] if opts.db else opts.db_url}", stderr=True)
    if args.ek_roots is None:
        say("note: no --ek-roots: every enrollment waits for an administrator's approval", stderr=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False,  # type: ignore[arg-type]
                ssl_certfile=str(args.tls_cert) if tls else None, ssl_keyfile=str(args.tls_key) if tls else None)
    return EXIT_OK


def _client(args: argparse.Namespace) -> Any:
    from tboot_py.server.client import Client

    tok = os.environ.get("TBOOT_PY_ADMIN_TOKEN")
    path = args.admin_token_file or (None if tok else Path(_STATE) / "admin-token")
    if path is not None:
        from tboot_py.fileio import read_text

        tok = read_text(path, "admin token", 4096, stdin=True).strip()
    return Client(args.server, token=tok, cacert=args.cacert)


def _call(args: argparse.Namespace, method: str, path: str, **kw: Any) -> Any:
    c = _client(args)
    try:
        return c.request(method, path, **kw)
    finally:
        c.close()


def _when(t: float | None) -> str:
    import datetime as dt

    return "-" if t is None else dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _hosts(args: argparse.Namespace) -> int:
    from tboot_py._output import Column, emit_json, print_table

    out = _call(args, "GET", "/v1/hosts")
    if args.json:
        emit_json(out)
        return EXIT_OK
    rows = []
    for h in out["hosts"]:
        pol = h["policy"]
        rows.append((h["name"], h["state"], h["group"] or "-", _when(h["last_attested_at"]), f"{h['interval_s']:g}s",
                     "-" if pol is None else f"{pol['scope']}/{pol['target']} v{pol['version']}"))
    print_table("Hosts " + " ".join(f"{k}={v}" for k, v in sorted(out["counts"].items())),
                [Column("host"), Column("state"), Column("group"), Column("last attestation (UTC)", digest=True),
                 Column("interval", right=True), Column("policy")], rows)
    return EXIT_OK


def _host(args: argparse.Namespace) -> int:
    from tboot_py._output import Column, emit_json, print_table, say

    out = _call(args, "GET", f"/v1/hosts/{args.name}?limit={args.limit}")
    if args.json:
        emit_json(out)
        return EXIT_OK
    say(f"{out['name']}: {out['state']} (group {out['group'] or '-'}, every {out['interval_s']:g}s), "
        f"AK {out['ak_name'] or '-'}")
    print_table("Attestations", [Column("id", right=True), Column("time (UTC)", digest=True), Column("kind"),
                                 Column("status"), Column("reason")],
                [(str(r["id"]), _when(r["created_at"]), r["kind"], r["status"], r["reason"]) for r in out["results"]])
    print_table("State changes", [Column("time (UTC)", digest=True), Column("from"), Column("to"), Column("detail")],
                [(_when(e["at"]), e["old_state"] or "-", e["new_state"], e["detail"]) for e in out["events"]])
    return EXIT_OK


def _simple(args: argparse.Namespace, out: Any, text: str) -> int:
    from tboot_py._output import emit_json, say

    if args.json:
        emit_json(out)
    else:
        say(text)
    return EXIT_OK


def _approve(args: argparse.Namespace) -> int:
    out = _call(args, "POST", f"/v1/hosts/{args.name}/approve")
    return _simple(args, out, f"approved enrollment {out['approved']} of {args.name}")


def _pending(args: argparse.Namespace) -> int:
    out = _call(args, "GET", "/v1/enrollments")
    lines = [f"{p['host']}: AK {p['ak_name']}, EK chain {' -> '.join(p['ek_chain'])}" for p in out["pending"]]
    return _simple(args, out, "\n".join(lines) or "no enrollment awaits approval")


def _set(args: argparse.Namespace) -> int:
    out = _call(args, "PATCH", f"/v1/hosts/{args.name}", json={"group": args.group, "interval_s": args.interval})
    return _simple(args, out, f"{out['name']}: group {out['group'] or '-'}, every {out['interval_s']:g}s")


def _reappraise(args: argparse.Namespace) -> int:
    out = _call(args, "POST", f"/v1/hosts/{args.name}/reappraise")
    _simple(args, out, f"{args.name}: {out['status']}: {out['reason']}")
    return EXIT_OK if out["allowed"] else EXIT_DENIED


def _result(args: argparse.Namespace) -> int:
    from tboot_py._output import emit_json

    emit_json(_call(args, "GET", f"/v1/results/{args.id}"))
    return EXIT_OK


def _policy_set(args: argparse.Namespace) -> int:
    from tboot_py.policy.io import read_bytes

    out = _call(args, "PUT", f"/v1/policies/{args.scope}/{args.target}", content=read_bytes(args.file))
    lines = [f"policy {out['scope']}/{out['target']} v{out['version']} sha256:{out['digest']}"]
    lines += [f"  re-appraised result {r['result_id']}: {r['status']}" for r in out["reappraised"]]
    return _simple(args, out, "\n".join(lines))


def _policy_list(args: argparse.Namespace) -> int:
    out = _call(args, "GET", "/v1/policies")
    lines = [f"{p['scope']}/{p['target']} v{p['version']} sha256:{p['digest']} "
             f"signed by {', '.join(p['signed_by']) or 'nobody'}" for p in out["policies"]]
    return _simple(args, out, "\n".join(lines) or "no policies")


def _webhook_add(args: argparse.Namespace) -> int:
    from tboot_py.fileio import read_text

    secret = read_text(args.secret_file, "webhook secret", 4096, stdin=True).strip()
    out = _call(args, "POST", "/v1/webhooks", json={"url": args.url, "secret": secret})
    return _simple(args, out, f"webhook {out['id']} added")


def _webhook_deliveries(args: argparse.Namespace) -> int:
    out = _call(args, "GET", "/v1/webhooks/deliveries")
    lines = [f"{d['id']}: event {d['event_id']} {d['status']} after {d['attempts']} attempt(s)"
             + (f" ({d['last_error']})" if d["last_error"] else "") for d in out["deliveries"]]
    return _simple(args, out, "\n".join(lines) or "no deliveries")


def _ear_verify(args: argparse.Namespace) -> int:

    from tboot_py._args import parse_hex
    from tboot_py._output import emit_json, say
    from tboot_py.fileio import SMALL, STDIN, read_input, read_stdin, read_text
    from tboot_py.server.ear import EARError, load_verification_keys, verify_ear

    token = args.token
    if token == STDIN:
        token = read_stdin("the EAR token", 65536).decode("utf-8", "replace")
    if token.startswith("@"):
        token = read_text(token[1:], "EAR token", 65536)
    keys = load_verification_keys(read_input(args.key, "EAR key", SMALL))
    nonce = parse_hex(args.nonce, "--nonce") if args.nonce else None
    try:
        ear = verify_ear(token.strip(), keys, nonce=nonce, max_age=args.max_age, host=args.host)
    except EARError as e:
        if args.json:
            emit_json({"verified": False, "reason": e.diagnostics()})
        else:
            say(f"EAR NOT verified: {e.diagnostics()}")
        return EXIT_DENIED
    if args.json:
        emit_json({"verified": True, "status": ear.status, "host": ear.host, "nonce": ear.nonce,
                   "iat": ear.issued_at, "policy": ear.policy_id, "pcr_digest": ear.pcr_digest,
                   "claims": dict(ear.claims)})
    else:
        say(f"EAR verified: host {ear.host}, status {ear.status}, issued {_when(ear.issued_at)} UTC, "
                        f"policy {ear.policy_id or '-'}, PCR digest {ear.pcr_digest or '-'}")
    return EXIT_OK if ear.affirming else EXIT_DENIED
