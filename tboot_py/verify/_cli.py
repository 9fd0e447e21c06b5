"""``tboot-py verify`` (evidence bundles) and ``tboot-py quote verify`` (tpm2-tools files)."""

from __future__ import annotations

import argparse
from typing import Any

from tboot_py.errors import EXIT_DENIED, EXIT_OK


def register(sub: Any) -> None:
    v = sub.add_parser("verify", help="verify an evidence bundle: quote, nonce, PCRs, event logs")
    v.add_argument("evidence", metavar="EVIDENCE",
                   help="evidence bundle (JSON) from `tboot-py attest quote`; - for standard input")
    v.add_argument("--ak", required=True,
                   help="trusted AK: ak.json/state dir, PEM, TPMT_PUBLIC or TPM2B_PUBLIC; - for standard input")
    v.add_argument("--nonce", metavar="HEX", help="the nonce the verifier issued (at least 8 bytes)")
    v.add_argument("--legacy-nonce", action="store_true",
                   help="accept a nonce shorter than 8 bytes (legacy quotes); an empty one never verifies")
    v.add_argument("--no-freshness", action="store_true",
                   help="re-check archived evidence whose quote carries no nonce: proves PCR values, not when")
    v.add_argument("--require-banks", metavar="LIST",
                   help="banks the quote must cover and replay (default: the policy's banks, else sha256)")
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
    qv.add_argument("--ak", required=True, help="AK: PEM, TPM2B_PUBLIC, TPMT_PUBLIC or ak.json; - for stdin")
    qv.add_argument("--message", "-m", required=True, metavar="FILE", help="TPMS_ATTEST (tpm2_quote -m); - for stdin")
    qv.add_argument("--signature", "-s", required=True, metavar="FILE", help="TPMT_SIGNATURE (tpm2_quote -s)")
    qv.add_argument("--nonce", "-q", required=True, metavar="HEX", help="qualifying data given to tpm2_quote")
    qv.add_argument("--pcrs", "-f", required=True, metavar="FILE",
                    help='PCR values: tpm2_quote -o output, or JSON {"sha256": {"0": "<hex>"}}; '
                         "a quote proves nothing without the values it covers")
    qv.add_argument("--json", action="store_true", help="machine output")
    qv.set_defaults(func=_quote_verify)


def _read(path: str, what: str, limit: int = 2**20) -> bytes:
    from tboot_py.fileio import read_input

    return read_input(path, what, limit)


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
    from tboot_py._args import parse_hex
    from tboot_py.algorithms import parse_banks
    from tboot_py.appraise import Appraiser, TrustConfig
    from tboot_py.errors import InputError
    from tboot_py.tpm.evidence import MAX_EVIDENCE_BYTES, parse_evidence
    from tboot_py.tpm.wire import PCRSelection
    from tboot_py.verify.quote import load_trusted_ak

    policy = None
    if args.policy:  # loaded first: a bad policy is an input error whatever the evidence
        from tboot_py.policy import load_policy

        policy = load_policy(args.policy, args.trust_key or None)
    elif args.trust_key:
        raise InputError("--trust-key needs --policy")
    if args.no_freshness:
        if args.nonce:
            raise InputError("--no-freshness checks evidence without a nonce; do not give --nonce")
        nonce = b""
    elif args.nonce is None:
        raise InputError("--nonce is required (or --no-freshness for archived evidence without one)")
    else:
        nonce = parse_hex(args.nonce, "--nonce")
    ev = parse_evidence(_read(args.evidence, "evidence", MAX_EVIDENCE_BYTES), source=args.evidence)
    sel = PCRSelection.parse_spec(args.pcrs) if args.pcrs else None
    if args.exact and sel is None:
        raise InputError("--exact needs --pcrs")
    ek_roots = None
    if args.ek_ca:  # an unreadable CA is an input error (exit 2), not evidence that fails
        from pathlib import Path

        from tboot_py.verify.ekcert import load_ca_dir

        ek_roots = Path(args.ek_ca)
        load_ca_dir(ek_roots)
    trust = TrustConfig(
        ak=load_trusted_ak(args.ak), policy=policy, ek_roots=ek_roots,
        required_banks=tuple(b.name for b in parse_banks(args.require_banks)) if args.require_banks else None,
        min_nonce_bytes=1 if args.legacy_nonce else 8, fresh=not args.no_freshness,
        selection=sel, exact_selection=args.exact)
    appraiser = Appraiser(trust)
    if policy is None:  # verification only: nothing is allowed or denied
        boot, error = appraiser.check(ev, nonce)
        return _report(args, boot is not None, error.diagnostics() if error else "",
                       boot.pcrs if boot is not None else None, _summary(boot))
    result = appraiser.appraise(ev, nonce)
    verified = result.verified
    extra = _summary(verified)
    if verified is None:
        return _report(args, False, result.error.diagnostics() if result.error else "", None, {})
    verdict = result.verdict
    extra.update({"allowed": result.allowed, "verdict": verdict.as_json()})
    if not args.json:
        _print_verdict(verdict)
    _report(args, True, "", result.pcrs, {} if not args.json else extra)
    if not args.json:
        from tboot_py._output import say

        say("policy: " + ("allowed" if result.allowed else "DENIED: " + "; ".join(
            x.message for x in verdict.failures)))
    return EXIT_OK if result.allowed else EXIT_DENIED


def _summary(boot: Any) -> dict[str, Any]:
    if boot is None:
        return {}
    return {"events_verified": len(boot.events), "replayed": {b: list(p) for b, p in boot.replayed.items()},
            "ek_chain": list(boot.ek_chain), "quirks": list(boot.quirks), "fresh": boot.fresh}


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
