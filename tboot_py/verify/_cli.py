"""``tboot-py verify`` (evidence bundles) and ``tboot-py quote verify`` (tpm2-tools files)."""

from __future__ import annotations

import argparse
from typing import Any

from tboot_py.errors import EXIT_DENIED, EXIT_OK


def register(sub: Any) -> None:
    v = sub.add_parser("verify", help="verify an evidence bundle: quote, nonce, PCRs, event logs")
    v.add_argument("evidence", metavar="EVIDENCE",
                   help="evidence bundle (JSON) from `tboot-py attest quote`; - for standard input")
    v.add_argument("--ak", required=True, help="trusted AK: ak.json/state dir, PEM, TPMT_PUBLIC or TPM2B_PUBLIC")
    v.add_argument("--nonce", required=True, metavar="HEX", help="the nonce the verifier issued")
    v.add_argument("--pcrs", metavar="SELECTION",
                   help="PCRs the quote must cover, e.g. sha256:0-7 (it may cover more, unless --exact)")
    v.add_argument("--exact", action="store_true", help="the quote must cover exactly the --pcrs selection")
    v.add_argument("--ek-ca", metavar="DIR", help="require an EK certificate in the evidence chaining to DIR")
    v.add_argument("--policy", metavar="P", help="also appraise the verified boot against this policy")
    v.add_argument("--trust-key", action="append", default=[], metavar="K",
                   help="trusted policy signing key (repeatable); then only a signed policy is accepted")
    v.add_argument("--json", action="store_true", help="machine output")
    v.set_defaults(func=_verify)

    q = sub.add_parser("quote", help="quote tools on tpm2-tools files")
    qsub = q.add_subparsers(dest="quote_command", metavar="ACTION")
    qsub.required = True
    qv = qsub.add_parser("verify", help="verify a tpm2_quote output (like tpm2_checkquote)")
    qv.add_argument("--ak", required=True, help="AK: PEM, TPM2B_PUBLIC, TPMT_PUBLIC or ak.json")
    qv.add_argument("--message", "-m", required=True, metavar="FILE", help="TPMS_ATTEST (tpm2_quote -m); - for stdin")
    qv.add_argument("--signature", "-s", required=True, metavar="FILE", help="TPMT_SIGNATURE (tpm2_quote -s)")
    qv.add_argument("--nonce", "-q", required=True, metavar="HEX", help="qualifying data given to tpm2_quote")
    qv.add_argument("--pcrs", "-f", required=True, metavar="FILE",
                    help='PCR values: tpm2_quote -o output, or JSON {"sha256": {"0": "<hex>"}}; '
                         "a quote proves nothing without the values it covers")
    qv.add_argument("--json", action="store_true", help="machine output")
    qv.set_defaults(func=_quote_verify)


def _read(path: str, what: str) -> bytes:
    from pathlib import Path

    from tboot_py._args import STDIN, read_stdin
    from tboot_py.errors import InputError

    if path == STDIN:
        return read_stdin(what)
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise InputError(f"{what} {path}: {e}") from e


def _report(args: argparse.Namespace, ok: bool, reason: str, verified: Any, extra: dict[str, Any]) -> int:
    from tboot_py._output import Column, emit_json, pcrs_json, print_pcrs, print_table, say

    if args.json:
        out: dict[str, Any] = {"verified": ok, "reason": reason}
        if verified is not None:
            out.update({
                "pcrs": pcrs_json(verified.pcrs), "selection": str(verified.selection),
                "ak_name": verified.ak_name.hex(), "signer_checked": verified.signer_checked,
                "sign_hash": verified.sign_hash,
                "clock": {"clock": verified.clock_info.clock, "reset_count": verified.clock_info.reset_count,
                          "restart_count": verified.clock_info.restart_count},
            })
        out.update(extra)
        emit_json(out)
    elif ok:
        print_pcrs(verified.pcrs, title="Verified PCRs")
        rows = [("signature", "ok", f"{verified.sign_hash}, AK {verified.ak_name.hex()}"),
                ("selection", "ok", str(verified.selection)),
                ("qualified signer", "ok" if verified.signer_checked else "not checked",
                 "" if verified.signer_checked else "the AK's qualified name is unknown")]
        if "events_verified" in extra:
            replayed = "; ".join(f"{b} {_ranges(p)}" for b, p in extra.get("replayed", {}).items() if p)
            rows.append(("event logs", "ok", f"{extra['events_verified']} event(s) replayed"
                         + (f" into {replayed}" if replayed else "")))
        if extra.get("ek_chain"):
            rows.append(("EK certificate", "ok", " -> ".join(extra["ek_chain"])))
        print_table("Checks", (Column("check"), Column("result"), Column("detail")), rows)
        say("verified")
    else:
        say(f"NOT verified: {reason}")
    return EXIT_OK if ok else EXIT_DENIED


def _ranges(pcrs: Any) -> str:
    """``[0, 1, 2, 4]`` as ``0-2,4`` (the selection syntax)."""
    runs: list[list[int]] = []
    for p in sorted(pcrs):
        if runs and p == runs[-1][-1] + 1:
            runs[-1].append(p)
        else:
            runs.append([p])
    return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def _verify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tboot_py._args import parse_hex
    from tboot_py.tpm.evidence import parse_evidence
    from tboot_py.tpm.wire import PCRSelection
    from tboot_py.verify.evidence import check_evidence
    from tboot_py.verify.quote import load_trusted_ak

    policy = None
    if args.policy:  # loaded first: a bad policy is an input error whatever the evidence
        from tboot_py.policy import load_policy

        policy = load_policy(args.policy, args.trust_key or None)
    elif args.trust_key:
        from tboot_py.errors import InputError

        raise InputError("--trust-key needs --policy")
    ev = parse_evidence(_read(args.evidence, "evidence"), source=args.evidence)
    ak = load_trusted_ak(args.ak)
    nonce = parse_hex(args.nonce, "--nonce")
    sel = PCRSelection.parse_spec(args.pcrs) if args.pcrs else None
    if args.exact and sel is None:
        from tboot_py.errors import InputError

        raise InputError("--exact needs --pcrs")
    r = check_evidence(ev, ak, nonce, sel, ek_ca=Path(args.ek_ca) if args.ek_ca else None,
                       exact_selection=args.exact)
    if policy is None or r.verified is None:
        return _report(args, r.ok, r.reason, r.verified_pcrs, r.summary())
    from tboot_py.verify.appraise import appraise

    verdict = appraise(r.verified, [(b.name, b.data) for b in ev.event_logs], policy).verdict
    extra = {**r.summary(), "allowed": verdict.allowed, "verdict": verdict.as_json()}
    if not args.json:
        _print_verdict(verdict)
    _report(args, True, "", r.verified_pcrs, {} if not args.json else extra)
    if not args.json:
        from tboot_py._output import say

        say("policy: " + ("allowed" if verdict.allowed else "DENIED: " + "; ".join(
            x.message for x in verdict.failures)))
    return EXIT_OK if verdict.allowed else EXIT_DENIED


def _print_verdict(verdict: Any) -> None:
    from tboot_py._output import Column, print_table

    print_table("Policy appraisal", (Column("rule"), Column("result"), Column("detail")),
                [(r.rule, "pass" if r.passed else "FAIL", r.message) for r in verdict.reasons])


def _quote_verify(args: argparse.Namespace) -> int:
    from tboot_py._args import parse_hex
    from tboot_py.tpm.evidence import Evidence
    from tboot_py.verify.quote import check_quote, load_trusted_ak
    from tboot_py.verify.tpm2_tools import read_pcrs_file

    ak = load_trusted_ak(args.ak)
    msg = _read(args.message, "message")
    sig = _read(args.signature, "signature")
    nonce = parse_hex(args.nonce, "--nonce")
    pcrs = read_pcrs_file(_read(args.pcrs, "PCR file"), args.pcrs)
    # tpm2_quote -m writes TPMS_ATTEST without the TPM2B size; accept both.
    from tboot_py.tpm.wire import TPM_GENERATED_VALUE

    if len(msg) >= 6 and int.from_bytes(msg[:2], "big") == len(msg) - 2 and \
            int.from_bytes(msg[2:6], "big") == TPM_GENERATED_VALUE:
        msg = msg[2:]
    ev = Evidence(msg, sig, pcrs)
    r = check_quote(ev, ak, nonce)
    return _report(args, r.ok, r.reason, r.verified, {})
