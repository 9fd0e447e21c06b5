"""``tboot-py agent``: enroll with the attestation service, then attest (push, outbound only)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tboot_py.errors import EXIT_DENIED, EXIT_OK, InputError

_STATE = "/var/lib/tboot-py/agent"


def register(sub: Any) -> None:
    from tboot_py.tpm._cli import add_tpm_arg

    a = sub.add_parser("agent", help="attestation agent: enroll with the service and attest on an interval")
    a.add_argument("--server", required=True, action="append", metavar="URL",
                   help="service URL (repeatable: the next one is used when a server is away)")
    add_tpm_arg(a)
    a.add_argument("--state", type=Path, default=Path(_STATE), metavar="DIR",
                   help=f"agent state: AK and token (default {_STATE})")
    a.add_argument("--name", help="host name to enroll as (default: this host's name)")
    a.add_argument("--event-log", action="append", default=[], metavar="NAME=PATH",
                   help="event log to send (repeatable); default: the firmware log and the IMA list when present")
    a.add_argument("--interval", type=float, metavar="S",
                   help="attestation interval (default: the server's); SIGUSR1 attests at once")
    a.add_argument("--once", action="store_true",
                   help="enroll if needed, attest once, print the EAR; exit 0 when the host passes, 1 when not")
    a.add_argument("--ak-handle", default="0x81010002", metavar="HANDLE", help="persistent AK handle")
    a.add_argument("--cacert", type=Path, metavar="F", help="CA certificate for the server's TLS certificate")
    a.add_argument("--json", action="store_true", help="machine output (with --once)")
    a.set_defaults(func=_agent)


def _agent(args: argparse.Namespace) -> int:
    import sys

    from tboot_py._args import parse_handle
    from tboot_py._output import emit_json, say
    from tboot_py.agent.agent import Agent, AgentConfig, Attestation, default_logs

    logs = []
    for spec in args.event_log:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--event-log wants NAME=PATH, got {spec!r}")
        logs.append((name, Path(path)))
    cfg = AgentConfig(servers=tuple(args.server), tcti=args.tpm, state=args.state,
                      event_logs=tuple(logs) if logs else default_logs(), cacert=args.cacert,
                      ak_handle=parse_handle(args.ak_handle),
                      **({"name": args.name} if args.name else {}))
    agent = Agent(cfg)
    try:
        if args.once:
            a = agent.attest()
            if args.json:
                emit_json({"allowed": a.allowed, "status": a.status, "reason": a.reason, "result_id": a.result_id,
                           "ear": a.ear})
            else:
                say(f"{cfg.name}: {a.status}: {a.reason}", stderr=True)
                print(a.ear)
            return EXIT_OK if a.allowed else EXIT_DENIED
        def ok(a: Attestation) -> None:
            say(f"{cfg.name}: {a.status}: {a.reason} (result {a.result_id})", stderr=True)
            sys.stderr.flush()

        def bad(e: Exception) -> None:
            say(f"{cfg.name}: {e}", stderr=True)

        import signal
        import threading

        wake = threading.Event()
        signal.signal(signal.SIGUSR1, lambda *_: wake.set())  # attest now, on demand
        agent.run(args.interval, ok, bad, wake=wake)
        return EXIT_OK
    finally:
        agent.close()
