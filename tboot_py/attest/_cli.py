"""``tboot-py attest ek|ak|activate|quote``: keys and evidence on a TPM."""

from __future__ import annotations

import argparse
from typing import Any

from tboot_py._args import parse_handle, parse_hex
from tboot_py.errors import EXIT_DENIED, EXIT_OK, InputError


def _add_ak_args(p: argparse.ArgumentParser) -> None:
    from tboot_py.tpm._cli import add_tpm_arg

    add_tpm_arg(p)
    p.add_argument("--state", required=True, metavar="DIR", help="AK state directory (ak.json, ak.pub, ak.pem)")
    p.add_argument("--alg", default=None, choices=["rsa", "rsapss", "ecc", "ecc384"],
                   help="AK type (default: the one recorded in --state, else rsa)")
    p.add_argument("--handle", default="0x81010002", help="persistent AK handle (default 0x81010002)")


def register(sub: Any) -> None:
    from tboot_py.tpm._cli import add_tpm_arg

    p = sub.add_parser("attest", help="EK, AK, credential activation and quotes on a TPM")
    asub = p.add_subparsers(dest="attest_command", metavar="ACTION")
    asub.required = True

    ek = asub.add_parser("ek", help="derive the EK from its TCG template, read and check its certificate")
    add_tpm_arg(ek)
    ek.add_argument("--type", default="rsa", choices=["rsa", "ecc", "ecc384"], help="EK template (default rsa)")
    ek.add_argument("--ek-ca", metavar="DIR", help="CA certificates the EK certificate must chain to")
    ek.add_argument("--out", metavar="DIR", help="write ek.pub (TPMT_PUBLIC), ek.pem and ek.crt (DER) here")
    ek.add_argument("--json", action="store_true", help="machine output")
    ek.set_defaults(func=_ek)

    ak = asub.add_parser("ak", help="create or load the persistent AK (state kept in --state)")
    _add_ak_args(ak)
    ak.add_argument("--json", action="store_true", help="machine output")
    ak.set_defaults(func=_ak)

    q = asub.add_parser("quote", help="quote PCRs with the AK and write an evidence bundle")
    _add_ak_args(q)
    q.add_argument("--pcrs", default="sha256:0-7", help="selection, e.g. sha1:0-7+sha256:0-7,17-19")
    q.add_argument("--nonce", required=True, metavar="HEX", help="verifier nonce")
    q.add_argument("--event-log", action="append", default=[], metavar="NAME=PATH",
                   help="binary event log to include (repeatable), e.g. firmware=/sys/.../binary_bios_measurements")
    q.add_argument("--ek-cert", action="store_true", help="include the RSA EK certificate")
    q.add_argument("--out", required=True, metavar="FILE", help="evidence bundle (JSON); - for stdout")
    q.add_argument("--json", action="store_true", help="print the summary as JSON (on stderr with --out -)")
    q.add_argument("--export-tpm2-tools", metavar="DIR",
                   help="also write quote.msg, quote.sig, quote.pcrs and ak.pem for tpm2_checkquote")
    q.set_defaults(func=_quote)

    a = asub.add_parser("activate", help="prove the AK and EK share a TPM (MakeCredential + ActivateCredential)")
    add_tpm_arg(a)
    a.add_argument("--state", required=True, metavar="DIR", help="AK state directory")
    a.add_argument("--alg", default=None, choices=["rsa", "rsapss", "ecc", "ecc384"],
                   help="AK type (default: the one recorded in --state, else rsa)")
    a.add_argument("--handle", default="0x81010002", help="persistent AK handle")
    a.add_argument("--ek-type", default="rsa", choices=["rsa", "ecc"], help="EK to encrypt the credential to")
    a.add_argument("--ek-ca", metavar="DIR", help="check the EK certificate chain first")
    a.add_argument("--json", action="store_true", help="machine output")
    a.set_defaults(func=_activate)


def _ek(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tboot_py._output import emit_json, say
    from tboot_py.attest import keys
    from tboot_py.attest.keys import open_esapi as open_tpm
    from tboot_py.verify import ekcert

    tpm = open_tpm(args.tpm)
    try:
        ek = keys.create_ek(tpm, args.type)
    finally:
        tpm.close()
    chain: tuple[str, ...] = ()
    reason = ""
    ok = True
    if args.ek_ca:
        if ek.certificate is None:
            ok, reason = False, "no EK certificate is provisioned in NV"
        else:
            r = ekcert.check_ek_chain(ek.certificate, ekcert.load_ca_dir(Path(args.ek_ca)))
            ok, chain, reason = r.ok, r.chain, r.reason
    if args.out:
        _write_ek(Path(args.out), ek)
    if args.json:
        emit_json({"type": ek.kind, "name": ek.public.name.hex(), "certificate": ek.certificate is not None,
                   "chain_ok": ok if args.ek_ca else None, "chain": list(chain), "reason": reason})
    else:
        say(f"EK ({ek.kind}) name {ek.public.name.hex()}")
        say(f"certificate: {'present' if ek.certificate else 'absent'}")
        if args.ek_ca:
            say(f"chain: {' -> '.join(chain)}: {'valid' if ok else 'REJECTED: ' + reason}")
    return EXIT_OK if ok else EXIT_DENIED


def _write_ek(out: Any, ek: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    from tboot_py.fileio import write_atomic

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create {out}: {e.strerror}") from e
    write_atomic(out / "ek.pub", ek.public.raw, what="EK")
    write_atomic(out / "ek.pem", ek.public.crypto_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), what="EK")
    if ek.certificate is not None:
        write_atomic(out / "ek.crt", ek.certificate, what="EK certificate")


def _ak(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tboot_py._output import emit_json, say
    from tboot_py.attest import keys
    from tboot_py.attest.keys import open_esapi as open_tpm

    tpm = open_tpm(args.tpm)
    try:
        ak = keys.load_or_create_ak(tpm, Path(args.state), args.alg, parse_handle(args.handle))
    finally:
        tpm.close()
    if args.json:
        emit_json({"handle": f"0x{ak.handle:08x}", "alg": ak.alg, "name": ak.name.hex(),
                   "qualified_name": ak.qualified_name.hex(), "state": str(Path(args.state).resolve())})
    else:
        say(f"AK ({ak.alg}) at 0x{ak.handle:08x}, name {ak.name.hex()}; state in {args.state}")
    return EXIT_OK


def _quote(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    from tboot_py.attest import keys
    from tboot_py.attest.keys import open_esapi as open_tpm
    from tboot_py.attest.quote import collect_evidence
    from tboot_py.tpm.evidence import EventLogBlob
    from tboot_py.tpm.wire import PCRSelection

    sel = PCRSelection.parse_spec(args.pcrs)
    nonce = parse_hex(args.nonce, "--nonce")
    logs = []
    for spec in args.event_log:
        name, sep, path = spec.partition("=")
        if not sep or not name:
            raise InputError(f"--event-log wants NAME=PATH, got {spec!r}")
        from tboot_py.eventlog.parse import read_log_bytes

        # "-" is standard input; a file is read without blocking, regular files only.
        logs.append(EventLogBlob(name, read_log_bytes(path)))
    tpm = open_tpm(args.tpm)
    try:
        ak = keys.load_or_create_ak(tpm, Path(args.state), args.alg, parse_handle(args.handle))
        cert = keys.read_ek_certificate(tpm, "rsa") if args.ek_cert else None
        ev = collect_evidence(tpm, ak, sel, nonce, logs, cert)
    finally:
        tpm.close()
    if args.export_tpm2_tools:
        from tboot_py.verify.tpm2_tools import export_quote

        export_quote(ev, sel, Path(args.export_tpm2_tools))
    if args.out == "-":
        sys.stdout.write(ev.dumps())
    else:
        from tboot_py.fileio import write_atomic

        write_atomic(Path(args.out), ev.dumps().encode(), what="evidence")
    # What was quoted, like tpm2_quote's summary; on stderr when the bundle itself goes to stdout.
    summary = {"out": args.out, "ak": {"alg": ak.alg, "handle": f"0x{ak.handle:08x}", "name": ak.name.hex()},
               "selection": str(sel), "nonce": nonce.hex(), "event_logs": [b.name for b in logs],
               "ek_certificate": cert is not None}
    stream = sys.stderr if args.out == "-" else sys.stdout
    if args.json:
        json.dump(summary, stream, indent=2)
        stream.write("\n")
    else:
        print(f"quoted {sel} with the {ak.alg} AK at 0x{ak.handle:08x} (name {ak.name.hex()}), nonce {nonce.hex()}; "
              f"{len(logs)} event log(s){', EK certificate' if cert is not None else ''}; evidence in {args.out}",
              file=stream)
    return EXIT_OK


def _activate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tboot_py._output import emit_json, say
    from tboot_py.attest import credential, keys
    from tboot_py.attest.keys import open_esapi as open_tpm
    from tboot_py.verify import ekcert

    tpm = open_tpm(args.tpm)
    try:
        ak = keys.load_or_create_ak(tpm, Path(args.state), args.alg, parse_handle(args.handle))
        ek = keys.create_ek(tpm, args.ek_type)
        if args.ek_ca:
            if ek.certificate is None:
                raise ekcert.EKCertificateError(f"no {args.ek_type} EK certificate is provisioned")
            ekcert.verify_ek_chain(ek.certificate, Path(args.ek_ca))
        ok = credential.challenge(tpm, ak, ek)
    finally:
        tpm.close()
    if args.json:
        emit_json({"activated": ok, "ak_name": ak.name.hex(), "ek_type": ek.kind})
    else:
        say(f"credential activation {'succeeded' if ok else 'FAILED'}: AK {ak.name.hex()} "
                        f"is {'' if ok else 'NOT '}in the TPM of the {ek.kind} EK")
    return EXIT_OK if ok else EXIT_DENIED
