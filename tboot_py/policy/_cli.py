"""``tboot-py policy ...``: create, show, sign, verify, derive and convert policies."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tboot_py.errors import EXIT_OK

MODES = ("halt", "continue", "nonfatal")
COMPONENTS = ("hypervisor", "kernel", "initrd", "cmdline", "hypervisor-cmdline")


def register(sub: Any) -> None:
    p = sub.add_parser("policy", help="launch policies: create, show, sign, verify, predict, tboot VLP")
    ps = p.add_subparsers(dest="policy_command", metavar="SUBCOMMAND", parser_class=type(p))
    ps.required = True

    s = ps.add_parser("init", help="write a new, empty policy (add rules with 'policy add')")
    s.add_argument("policy", type=Path, metavar="POLICY")
    s.add_argument("--mode", choices=MODES, default="halt",
                   help="halt (default): deny at the first mismatch; continue: check everything, deny; "
                        "nonfatal: audit only, allow")
    s.add_argument("--name", default=None)
    s.add_argument("--force", action="store_true", help="overwrite an existing file")
    s.add_argument("--json", action="store_true", help="print what was written as JSON")
    s.set_defaults(func=_init)

    s = ps.add_parser("add", help="measure a file and add it as an allowed reference value (like tb_polgen --add)")
    s.add_argument("policy", type=Path, metavar="POLICY")
    s.add_argument("--component", required=True, choices=COMPONENTS)
    s.add_argument("--file", type=Path, default=None, metavar="F")
    s.add_argument("--kind", choices=("auto", "file", "pe", "tboot-module"), default="auto")
    s.add_argument("--cmdline", default=None, metavar="S", help="module command line (tboot-module), or the "
                   "literal command line for --component cmdline")
    s.add_argument("--label", default=None, metavar="L")
    s.add_argument("--version", dest="value_version", default=None, metavar="V")
    s.add_argument("--expires", default=None, metavar="DATE", help="YYYY-MM-DD; the value stops matching after it")
    s.add_argument("--banks", default=None, metavar="LIST", help="comma-separated (default: sha1,sha256,sha384)")
    s.add_argument("--json", action="store_true", help="print what was written as JSON")
    s.set_defaults(func=_add)

    s = ps.add_parser("show", help="print a policy")
    s.add_argument("policy", type=Path, metavar="POLICY")
    s.add_argument("--trust-key", action="append", type=Path, default=None, metavar="PUB")
    s.add_argument("--json", action="store_true", help="print the policy document as JSON")
    s.set_defaults(func=_show)

    s = ps.add_parser("from-log", help="derive a policy from a golden event log")
    s.add_argument("log", type=Path, metavar="LOG")
    s.add_argument("-o", "--output", type=Path, default=None, metavar="POLICY",
                   help="write here (.json: JSON, else TOML); default: print TOML")
    s.add_argument("--pcrs", default=None, metavar="LIST", help="PCRs to expect (default: all the log extends)")
    s.add_argument("--banks", default=None, metavar="LIST", help="banks to expect (default: all of the log's)")
    s.add_argument("--mode", choices=MODES, default="halt")
    s.add_argument("--no-boot-state", action="store_true", help="no Secure Boot / db / authority rules")
    s.add_argument("--no-references", action="store_true", help="no reference values from tboot-py events")
    s.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    s.set_defaults(func=_from_log)

    s = ps.add_parser("predict", help="predict PCR values after replacing the hypervisor, kernel or initrd")
    s.add_argument("--log", type=Path, required=True, metavar="GOLDEN")
    s.add_argument("--hypervisor", type=Path, default=None, metavar="F")
    s.add_argument("--kernel", type=Path, default=None, metavar="F")
    s.add_argument("--initrd", type=Path, default=None, metavar="F")
    s.add_argument("--cmdline", default=None, metavar="S", help="new kernel command line")
    s.add_argument("-o", "--output", type=Path, default=None, metavar="POLICY",
                   help="also write a policy expecting the predicted PCRs")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_predict)

    s = ps.add_parser("keygen", help="generate a policy signing key (KEY and KEY.pub, PEM)")
    s.add_argument("--type", choices=("ed25519", "ecdsa-p256"), default="ed25519")
    s.add_argument("-o", "--output", type=Path, required=True, metavar="KEY")
    s.add_argument("--json", action="store_true", help="print what was written as JSON")
    s.set_defaults(func=_keygen)

    s = ps.add_parser("sign", help="sign a policy (DSSE envelope)")
    s.add_argument("policy", type=Path, metavar="POLICY")
    s.add_argument("--key", action="append", type=Path, required=True, metavar="KEY")
    s.add_argument("-o", "--output", type=Path, required=True, metavar="SIGNED")
    s.add_argument("--json", action="store_true", help="print what was written as JSON")
    s.set_defaults(func=_sign)

    s = ps.add_parser("verify", help="check a signed policy against trusted keys (exit 1 if it does not verify)")
    s.add_argument("signed", type=Path, metavar="SIGNED")
    s.add_argument("--trust-key", action="append", type=Path, required=True, metavar="PUB")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_verify)

    s = ps.add_parser("import-vlp", help="convert a tboot Verified Launch policy (tb_polgen) to a tboot-py policy")
    s.add_argument("vlp", type=Path, metavar="VLP", help="the VLP file (tb_polgen output); - for standard input")
    s.add_argument("-o", "--output", type=Path, required=True, metavar="POLICY")
    s.add_argument("--allow-permissive", action="store_true",
                   help="import a VLP that verifies nothing (nonfatal type, no entries, or only any-hash entries); "
                        "the policy is then named UNSAFE and carries warnings")
    s.add_argument("--json", action="store_true", help="print what was written as JSON")
    s.set_defaults(func=_import_vlp)

    s = ps.add_parser("export-vlp", help="write a tboot Verified Launch policy file that tb_polgen reads")
    s.add_argument("policy", type=Path, metavar="POLICY")
    s.add_argument("-o", "--output", type=Path, required=True, metavar="VLP")
    s.add_argument("--alg", default=None, choices=("sha1", "sha256", "sha384", "sha512"),
                   help="hash algorithm of the VLP (default: the policy's)")
    s.add_argument("--json", action="store_true", help="print what was written as JSON")
    s.set_defaults(func=_export_vlp)


# ---------------------------------------------------------------- handlers

def _done(args: argparse.Namespace, text: str, doc: dict[str, Any]) -> None:
    """What a writing command did: one line for people, or ``doc`` with --json."""
    if args.json:
        from tboot_py._output import emit_json

        emit_json(doc)
    else:
        print(text)


def _init(args: argparse.Namespace) -> int:
    from tboot_py.errors import InputError
    from tboot_py.fileio import write_atomic
    from tboot_py.policy.io import dumps_policy, format_for
    from tboot_py.policy.model import Mode, Policy

    if args.policy.exists() and not args.force:
        raise InputError(f"{args.policy} exists (use --force to overwrite)")
    pol = Policy(rules=(), mode=Mode(args.mode), name=args.name)
    write_atomic(args.policy, dumps_policy(pol, format_for(args.policy)).encode())
    _done(args, f"wrote {args.policy} (mode {args.mode}); add rules with 'tboot-py policy add'",
          {"wrote": str(args.policy), "mode": args.mode})
    return EXIT_OK


def _add(args: argparse.Namespace) -> int:
    import dataclasses

    from tboot_py import algorithms
    from tboot_py._output import say
    from tboot_py.errors import InputError
    from tboot_py.policy import _serialize
    from tboot_py.policy.io import load_policy, save_policy
    from tboot_py.policy.model import Component, DigestKind, ReferenceRule, ReferenceValue, Rule

    pol = load_policy(args.policy, allow_empty=True)
    comp = Component(args.component)
    expires = _serialize._date(args.expires, "--expires") if args.expires else None
    if comp.is_cmdline:
        if args.cmdline is None or args.file is not None:
            raise InputError(f"--component {comp.value} takes --cmdline S and no --file")
        value = ReferenceValue(label=args.label or comp.value, digests=(), kind=DigestKind.FILE,
                               version=args.value_version, expires=expires, cmdline=args.cmdline)
    else:
        if args.file is None:
            raise InputError(f"--component {comp.value} needs --file")
        from tboot_py.measure import measure

        banks = algorithms.parse_banks(args.banks) if args.banks else algorithms.DEFAULT_BANKS
        m = measure(args.file, kind=args.kind, banks=banks, cmdline=args.cmdline)
        value = ReferenceValue(label=args.label or args.value_version or args.file.name,
                               digests=tuple(m.digests.as_dict().items()), kind=DigestKind(m.kind.value),
                               version=args.value_version, expires=expires, cmdline=m.cmdline)
    rules: list[Rule] = list(pol.rules)
    for i, r in enumerate(rules):
        if isinstance(r, ReferenceRule) and r.component is comp:
            if value in r.values:
                raise InputError(f"{comp.value} already has this reference value")
            rules[i] = dataclasses.replace(r, values=(*r.values, value))
            break
    else:
        rules.append(ReferenceRule(component=comp, values=(value,), id=f"reference-{comp.value}"))
    save_policy(dataclasses.replace(pol, rules=tuple(rules)), args.policy)
    digest = ", ".join(f"{b}:{d.hex()[:16]}…" for b, d in value.digests) or repr(value.cmdline)
    if args.json:
        _done(args, "", {"policy": str(args.policy), "component": comp.value, "label": value.label,
                         "kind": value.kind.value, "digests": {b: d.hex() for b, d in value.digests},
                         "cmdline": value.cmdline})
    else:
        say(f"added {comp.value} {value.label!r} ({value.kind.value}) {digest} to {args.policy}")
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    from tboot_py._output import Column, emit_json, is_terminal, print_table, say
    from tboot_py.policy._serialize import policy_to_dict
    from tboot_py.policy.io import load_policy

    pol = load_policy(args.policy, trust_keys=args.trust_key, allow_empty=args.trust_key is None)
    if args.json:
        emit_json({"policy": policy_to_dict(pol), "signed_by": list(pol.signed_by)})
        return EXIT_OK
    signed = f", signed by {', '.join(k[:16] for k in pol.signed_by)}" if pol.signed_by else ""
    say(f"policy {pol.name or args.policy}: mode {pol.mode.value}, {len(pol.rules)} top-level rule(s){signed}",
        stderr=not is_terminal())
    print_table("", (Column("rule"), Column("type"), Column("what"), Column("value", digest=True)), _rules_table(pol))
    return EXIT_OK


def _rules_table(pol: Any) -> list[tuple[str, str, str, str]]:
    """Rows of (rule, type, what, value); a value is one digest, so a table never breaks it."""
    from tboot_py.policy.model import (
        AllOf,
        AnyOf,
        EventRule,
        PcrRule,
        ReferenceRule,
        SecureBootRule,
        SignatureDbRule,
        TbootVlpRule,
    )

    rows: list[tuple[str, str, str, str]] = []

    def add(*row: str) -> None:
        rows.append((row[0], row[1], row[2], row[3]))

    def walk(rules: Any, path: str) -> None:
        for i, r in enumerate(rules):
            p = r.id or f"{path}[{i}]"
            if isinstance(r, AllOf | AnyOf):
                add(p, r.type_name, f"{len(r.rules)} rule(s)", "")
                walk(r.rules, f"{p}.rules")
            elif isinstance(r, ReferenceRule):
                for v in r.values:
                    extra = f" expires {v.expires}" if v.expires else ""
                    what = f"{r.component.value} {v.label!r} ({v.kind.value}){extra}"
                    if not v.digests:
                        add(p, "reference", what, f"cmdline {v.cmdline!r}")
                    for b, d in v.digests:
                        add(p, "reference", what, f"{b}:{d.hex()}")
            elif isinstance(r, PcrRule):
                for bank, regs in r.expected:
                    for idx, pval in regs:
                        add(p, "pcrs", f"PCR {idx} {bank}", pval.hex())
            elif isinstance(r, SecureBootRule):
                add(p, "secure-boot", "Secure Boot", "enabled" if r.enabled else "disabled")
            elif isinstance(r, SignatureDbRule):
                for k in ("db_allow", "db_forbid", "dbx_require", "authorities_allow", "authorities_forbid"):
                    for e in getattr(r, k):
                        add(p, "uefi-db", k, e)
            elif isinstance(r, EventRule):
                from tboot_py.policy.engine import _matcher_text

                for m in r.require:
                    add(p, "events", "require", m.description or _matcher_text(m))
                for m in r.forbid:
                    add(p, "events", "forbid", m.description or _matcher_text(m))
            elif isinstance(r, TbootVlpRule):
                for e in r.entries:
                    mod = {129: "any", 130: "nv", 131: "nv_raw"}.get(e.mod_num, str(e.mod_num))
                    pcr = "none" if e.pcr == 255 else str(e.pcr)
                    for h in ["any"] if e.hash_any else [h.hex() for h in e.hashes] or ["(none)"]:
                        add(p, "tboot-vlp", f"module {mod} pcr {pcr} ({r.bank})", h)

    walk(pol.rules, "rules")
    return rows


def _from_log(args: argparse.Namespace) -> int:
    from tboot_py import algorithms
    from tboot_py.eventlog import read_log
    from tboot_py.policy.derive import policy_from_log
    from tboot_py.policy.io import dumps_policy, save_policy
    from tboot_py.policy.model import Mode
    from tboot_py.tpm import parse_pcr_list

    log = read_log(args.log)
    pcrs = parse_pcr_list(args.pcrs) if args.pcrs else None
    banks = [b.name for b in algorithms.parse_banks(args.banks)] if args.banks else None
    pol = policy_from_log(log, pcrs=pcrs, banks=banks, boot_state=not args.no_boot_state,
                          references=not args.no_references, mode=Mode(args.mode))
    if args.output is not None:
        save_policy(pol, args.output)
        print(f"wrote {args.output}: {len(pol.rules)} rule(s)")
    else:
        print(dumps_policy(pol, "json" if args.json else "toml"), end="")
    return EXIT_OK


def _predict(args: argparse.Namespace) -> int:
    import dataclasses

    from tboot_py import algorithms
    from tboot_py._output import emit_json
    from tboot_py.errors import InputError
    from tboot_py.eventlog import read_log
    from tboot_py.measure import measure
    from tboot_py.policy.derive import policy_from_log, predict, tboot_py_events
    from tboot_py.policy.io import save_policy
    from tboot_py.policy.model import Component, DigestKind, PcrRule

    log = read_log(args.log)
    banks = [a for a in (algorithms.by_id(i) for i in log.algorithms) if a is not None and a.available]
    if not banks:
        raise InputError(f"{args.log}: no bank this tboot-py can compute")
    events = {t.component: t for t in tboot_py_events(log)}
    new: dict[Component, Any] = {}
    files = {Component.HYPERVISOR: args.hypervisor, Component.KERNEL: args.kernel, Component.INITRD: args.initrd}
    for comp, f in files.items():
        ev = events.get(comp)
        if f is None:
            if (args.cmdline is not None and comp is Component.KERNEL and ev is not None
                    and ev.kind is DigestKind.TBOOT_MODULE):
                raise InputError("the kernel is a tboot module: its hash covers the command line; "
                                 "a new --cmdline needs --kernel too")
            continue
        if ev is None:
            raise InputError(f"the golden log has no tboot-py event for the {comp.value}")
        cmd = None
        if ev.kind is DigestKind.TBOOT_MODULE:
            cmd = args.cmdline if (args.cmdline is not None and comp is Component.KERNEL) else (ev.info.cmdline or "")
        new[comp] = measure(f, kind=ev.kind.value, banks=banks, cmdline=cmd)
    cmdlines: dict[Component, str] = {}
    if args.cmdline is not None:
        if Component.CMDLINE in events:
            cmdlines[Component.CMDLINE] = args.cmdline
        elif Component.KERNEL in events and events[Component.KERNEL].info.version >= 2:
            cmdlines[Component.KERNEL] = args.cmdline
    if not new and not cmdlines:
        raise InputError("nothing to predict: give --hypervisor, --kernel, --initrd or --cmdline")
    pred = predict(log, new, cmdlines)
    changed = pred.changed()
    if args.output is not None:
        base = policy_from_log(log, boot_state=False, references=False)
        rule = PcrRule(expected=tuple((b, tuple(sorted(regs.items()))) for b, regs in pred.after.items()),
                       id="predicted-pcrs")
        save_policy(dataclasses.replace(base, rules=(rule,), name=f"predicted from {args.log}"), args.output)
    if args.json:
        emit_json({
            "replaced": [dataclasses.asdict(r) for r in pred.replaced],
            "pcrs": {b: {str(i): v.hex() for i, v in sorted(regs.items())} for b, regs in pred.after.items()},
            "changed": {b: {str(i): {"before": o.hex() if o else None, "after": n.hex()}
                            for i, (o, n) in sorted(regs.items())} for b, regs in changed.items()},
        })
        return EXIT_OK
    from tboot_py._output import Column, is_terminal, print_table, say

    for r in pred.replaced:
        say(f"event {r.seq} (PCR {r.pcr}, {r.component}): {r.why} replaced", stderr=not is_terminal())
    print_table(f"Predicted PCRs from {args.log}",
                (Column("bank"), Column("PCR", right=True), Column("predicted", digest=True), Column("changed")),
                [(b, str(i), regs[i].hex(), "yes" if i in changed.get(b, {}) else "no")
                 for b, regs in pred.after.items() for i in sorted(regs)])
    return EXIT_OK


def _keygen(args: argparse.Namespace) -> int:
    from tboot_py.errors import InputError
    from tboot_py.policy.signing import generate_key, keyid, write_keypair

    if args.output.exists():
        raise InputError(f"{args.output} exists; refusing to overwrite a key")
    key = generate_key(args.type)
    pub = write_keypair(key, args.output)
    kid = keyid(key.public_key())
    _done(args, f"wrote {args.output} and {pub} ({args.type}, keyid {kid})",
          {"wrote": [str(args.output), str(pub)], "type": args.type, "keyid": kid})
    return EXIT_OK


def _sign(args: argparse.Namespace) -> int:
    from tboot_py.fileio import write_atomic
    from tboot_py.policy.io import load_policy, sign_policy
    from tboot_py.policy.signing import load_private_key

    pol = load_policy(args.policy)
    env = sign_policy(pol, [load_private_key(k) for k in args.key])
    write_atomic(args.output, env.to_json().encode())
    _done(args, f"wrote {args.output}: signed by {', '.join(s.keyid[:16] for s in env.signatures)}",
          {"wrote": str(args.output), "signed_by": [s.keyid for s in env.signatures]})
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from tboot_py._output import emit_json
    from tboot_py.policy.io import load_policy

    pol = load_policy(args.signed, trust_keys=args.trust_key)
    if args.json:
        emit_json({"verified": True, "signed_by": list(pol.signed_by), "name": pol.name, "mode": pol.mode.value})
    else:
        print(f"OK: {args.signed} is signed by trusted key(s) {', '.join(k[:16] for k in pol.signed_by)}")
    return EXIT_OK


def _import_vlp(args: argparse.Namespace) -> int:
    import sys

    from tboot_py.fileio import STDIN, read_input
    from tboot_py.policy.io import save_policy
    from tboot_py.policy.vlp import MAX_FILE as MAX_VLP
    from tboot_py.policy.vlp import parse_vlp, vlp_to_policy

    data = read_input(args.vlp, "VLP file", MAX_VLP)
    source = "standard input" if str(args.vlp) == STDIN else args.vlp.name
    vlp = parse_vlp(data, source=str(args.vlp))
    policy = vlp_to_policy(vlp, name=f"imported from {source}", allow_permissive=args.allow_permissive)
    save_policy(policy, args.output)
    _done(args, f"wrote {args.output}: {len(vlp.entries)} tboot policy entr{'y' if len(vlp.entries) == 1 else 'ies'}",
          {"wrote": str(args.output), "entries": len(vlp.entries), "warnings": list(policy.warnings)})
    for w in policy.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return EXIT_OK


def _export_vlp(args: argparse.Namespace) -> int:
    from tboot_py.fileio import write_atomic
    from tboot_py.policy.io import load_policy
    from tboot_py.policy.vlp import policy_to_vlp, serialize_vlp

    vlp = policy_to_vlp(load_policy(args.policy), bank=args.alg)
    write_atomic(args.output, serialize_vlp(vlp))
    _done(args, f"wrote {args.output}: {len(vlp.entries)} entr{'y' if len(vlp.entries) == 1 else 'ies'}, {vlp.bank}",
          {"wrote": str(args.output), "entries": len(vlp.entries), "bank": vlp.bank})
    return EXIT_OK
