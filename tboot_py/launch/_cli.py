"""``tboot-py extend`` (the measured domain builder) and ``tboot-py launch`` (the gate)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tboot_py.errors import EXIT_OK
from tboot_py.tpm._cli import add_tpm_arg


def _add_artifact_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hypervisor", type=Path, metavar="F", help="hypervisor image (xen.efi, xen.gz, xen ELF)")
    p.add_argument("--kernel", type=Path, metavar="F", help="kernel image (bzImage / EFI stub / UKI)")
    p.add_argument("--initrd", type=Path, metavar="F", help="initrd / initramfs")
    p.add_argument("--cmdline", default=None, metavar="S", help="kernel command line")
    p.add_argument("--hypervisor-cmdline", default=None, metavar="S",
                   help="hypervisor command line (bound into its tboot module hash with --pcr-map tboot)")
    p.add_argument("--pcr", type=int, default=None, metavar="N", help="PCR for every measurement (default 9)")
    p.add_argument("--pcr-map", default="default", choices=["default", "tboot"],
                   help="tboot: hypervisor into PCR 18, the other modules into PCR 19, as tboot module hashes")


def register(sub: Any) -> None:
    p = sub.add_parser("extend", help="measure artifacts, extend them into the TPM and append to the event log")
    add_tpm_arg(p)
    p.add_argument("--log", type=Path, required=True, metavar="LOG", help="TCG event log to create or append to")
    _add_artifact_args(p)
    p.add_argument("--json", action="store_true", help="machine output")
    p.set_defaults(func=_extend)
    register_launch(sub)
    register_hooks(sub)


_GATE_CONFIG = ("Settings (policy, trust keys, TPM, state directory, PCR map) come from /etc/tboot-py/gate.toml "
                "or $TBOOT_PY_GATE_CONFIG.")


def register_hooks(sub: Any) -> None:
    h = sub.add_parser("hook", help="run a launch hook (xl-create, libvirt-qemu) through the gate",
                       description="Front ends of the launch gate for hypervisor tools. " + _GATE_CONFIG)
    hsub = h.add_subparsers(dest="name", metavar="HOOK")
    hsub.required = True
    x = hsub.add_parser("xl-create", help="measured `xl create`: gate the domain's kernel, ramdisk and cmdline",
                        description="Reads the xl domain config once, refuses keys that load unmeasured code "
                                    "(bootloader, firmware, pvshim, device_model_*, acpi/smbios_firmware, ...), "
                                    "measures kernel, ramdisk and cmdline (or root + extra), and only when the "
                                    "policy allows execs `xl create` on a sealed copy of the checked config that "
                                    "names the sealed, measured copies. " + _GATE_CONFIG)
    x.add_argument("hook_args", nargs=argparse.REMAINDER, metavar="CONFIG [VAR=VALUE ...]",
                   help="xl domain config, then extra settings as `xl create` takes them")
    x.set_defaults(func=_hook)
    lv = hsub.add_parser("libvirt-qemu", help="libvirt qemu hook: gate a direct-kernel-boot domain on prepare begin",
                         description="Install as /etc/libvirt/hooks/qemu. On `prepare begin` it reads the domain XML "
                                     "on standard input, refuses elements that load code or pass boot data the gate "
                                     "does not measure (qemu:commandline, loader, nvram, dtb, acpi, sysinfo, rom "
                                     "file, ...) unless the policy's allow_launch names them, and runs the gate as a "
                                     "dry run on its <kernel>, <initrd> and <cmdline>; a non-zero exit makes libvirt "
                                     "refuse to start the domain. Other events exit 0. " + _GATE_CONFIG)
    lv.add_argument("hook_args", nargs=argparse.REMAINDER, metavar="GUEST OPERATION SUBOPERATION [EXTRA]",
                    help="what libvirt passes to its qemu hook")
    lv.set_defaults(func=_hook)


def artifacts_from_args(args: argparse.Namespace) -> list[Any]:
    """The artifacts named on the command line, in launch order (hypervisor, kernel, initrd, cmdline)."""
    from tboot_py.errors import InputError
    from tboot_py.launch.builder import Artifact

    tboot = args.pcr_map == "tboot"
    if tboot and args.pcr is not None:
        raise InputError("--pcr and --pcr-map tboot exclude each other")
    out: list[Artifact] = []
    if args.hypervisor is not None:
        out.append(Artifact("hypervisor", args.hypervisor, args.hypervisor.name,
                            cmdline=args.hypervisor_cmdline if tboot else None))
    elif args.hypervisor_cmdline is not None:
        raise InputError("--hypervisor-cmdline needs --hypervisor")
    if args.kernel is not None:
        out.append(Artifact("kernel", args.kernel, args.kernel.name, cmdline=args.cmdline if tboot else None))
    elif args.cmdline is not None and tboot:
        raise InputError("--cmdline with --pcr-map tboot is part of the kernel's module hash: give --kernel too")
    if args.initrd is not None:
        out.append(Artifact("initrd", args.initrd, args.initrd.name))
    if args.cmdline is not None and not tboot:
        out.append(Artifact("cmdline", None, "cmdline", cmdline=args.cmdline))
    if args.hypervisor_cmdline is not None and not tboot:
        out.append(Artifact("hypervisor-cmdline", None, "hypervisor-cmdline", cmdline=args.hypervisor_cmdline))
    if not out:
        raise InputError("nothing to measure: give --hypervisor, --kernel, --initrd or --cmdline")
    return out


def logged_json(logged: Any) -> list[dict[str, Any]]:
    return [{"component": lm.component, "pcr": lm.pcr, **lm.measurement.to_json()} for lm in logged]


def _extend(args: argparse.Namespace) -> int:
    from tboot_py._output import Column, emit_json, hash_progress, print_table
    from tboot_py.launch.builder import extend_and_log
    from tboot_py.tpm import open_tpm

    artifacts = artifacts_from_args(args)
    tpm = open_tpm(args.tpm)
    try:
        with hash_progress(enabled=not args.json) as track:
            logged = extend_and_log(tpm, args.log, artifacts, mapping=args.pcr_map, pcr=args.pcr, track=track)
    finally:
        tpm.close()
    if args.json:
        emit_json({"log": str(args.log), "extended": logged_json(logged)})
        return EXIT_OK
    # In a pipe every line is a whole record: component, PCR, file and kind are repeated per bank.
    from tboot_py._output import is_terminal

    tty = is_terminal()
    rows = []
    for lm in logged:
        for i, (bank, hexd) in enumerate(lm.measurement.digests.hex().items()):
            first = i == 0 or not tty
            rows.append((lm.component if first else "", str(lm.pcr) if first else "",
                         lm.measurement.name if first else "", lm.measurement.kind.value if first else "", bank, hexd))
    print_table(f"Extended and logged to {args.log}",
                (Column("component"), Column("PCR", right=True), Column("file"), Column("kind"), Column("bank"),
                 Column("digest", digest=True)), rows)
    return EXIT_OK


def register_launch(sub: Any) -> None:
    p = sub.add_parser("launch", help="the fail-closed launch gate: measure, extend, log, verify, policy, exec",
                       description="Everything after -- is the launcher. Placeholders are whole arguments: "
                                   "{hypervisor}, {kernel} and {initrd} become the sealed, measured copies "
                                   "(/proc/self/fd/N), {cmdline} and {hypervisor_cmdline} the measured command lines, "
                                   "{qemu_modules} QEMU's multiboot -initrd list (commas escaped); {{ and }} are "
                                   "braces. The launcher gets a clean environment (PATH, HOME, USER, LOGNAME, TERM, "
                                   "LANG, LANGUAGE, LC_*, TZ, TMPDIR, and TBOOT_PY_<COMPONENT>).")
    p.add_argument("--policy", type=Path, required=True, metavar="P", help="policy (TOML, JSON or signed DSSE)")
    p.add_argument("--trust-key", type=Path, action="append", default=[], metavar="K",
                   help="trusted policy signing key (repeatable); then unsigned policies are refused")
    add_tpm_arg(p)
    p.add_argument("--log", type=Path, default=None, metavar="LOG",
                   help="event log (default STATE/logs/tboot-py.reset<R>.restart<S>.log, one per TPM boot)")
    p.add_argument("--state", type=Path, default=None, metavar="DIR",
                   help="state directory: AK, default log and audit log (default /var/lib/tboot-py)")
    p.add_argument("--audit-log", type=Path, default=None, metavar="FILE",
                   help="hash-chained JSON-lines audit log (default STATE/audit.jsonl)")
    p.add_argument("--ak-alg", default="rsa", choices=["rsa", "ecc", "ecc384", "rsapss"],
                   help="AK algorithm when the gate creates its AK on first use")
    p.add_argument("--handle", default=None, metavar="HANDLE",
                   help="persistent handle of the gate's AK when it creates one (default 0x81010003; "
                        "`tboot-py attest` uses 0x81010002)")
    p.add_argument("--audit-pcr", default="15", metavar="N|none",
                   help="PCR each audit record is extended into, so a cut or rewritten trail shows "
                        "(default 15; none: not anchored)")
    p.add_argument("--firmware-log", type=Path, default=None, metavar="LOG",
                   help="firmware event log: feeds boot-state rules and the replay of PCRs that boot "
                        "loaders also extend (default with a TPM device: the kernel's binary_bios_measurements)")
    p.add_argument("--evidence-out", type=Path, default=None, metavar="FILE",
                   help="write the gate's evidence bundle (quote + logs) for later `tboot-py verify`; "
                        "the audit record holds its nonce")
    p.add_argument("--dry-run", action="store_true",
                   help="do everything but run the launcher: it still extends the TPM's PCRs, appends to the event "
                        "log, quotes with the AK (creating it on first use) and appends to the audit log")
    p.add_argument("--json", action="store_true", help="print the decision as JSON")
    p.add_argument("--require-ear", metavar="URL",
                   help="first require a fresh, affirming EAR for this host from the attestation service at URL")
    p.add_argument("--ear-key", type=Path, metavar="PUB",
                   help="EAR signing key, PEM or JWKS (default: the service's /.well-known/jwks.json)")
    p.add_argument("--ear-max-age", type=float, default=300.0, metavar="S", help="oldest EAR accepted (default 300)")
    p.add_argument("--ear-host", metavar="NAME", help="this host's enrolled name (default: the host name)")
    _add_artifact_args(p)
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- LAUNCH_CMD...")
    p.set_defaults(func=_launch)


def _launch(args: argparse.Namespace) -> int:
    from tboot_py._args import parse_handle
    from tboot_py.errors import InputError
    from tboot_py.launch.gate import DEFAULT_STATE, GateRequest, default_firmware_log
    from tboot_py.launch.handover import check_command

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command and not args.dry_run:
        raise InputError("no launch command: give one after --, or use --dry-run")
    if args.pcr_map == "tboot" and args.pcr is not None:
        raise InputError("--pcr and --pcr-map tboot exclude each other")
    # Check the command (placeholders, original paths, the launcher) before anything is measured.
    if command:
        check_command(command, {c: getattr(args, c) for c in ("hypervisor", "kernel", "initrd")},
                      args.cmdline, args.hypervisor_cmdline)
    if args.require_ear:  # the attestation service vouches for this host before anything runs
        import socket

        from tboot_py.server.ear import require_fresh_ear

        require_fresh_ear(args.require_ear, args.ear_key, args.ear_host or socket.gethostname(), args.ear_max_age)
    firmware_log = args.firmware_log if args.firmware_log is not None else default_firmware_log(args.tpm)
    req = GateRequest(
        policy=args.policy, tpm=args.tpm, hypervisor=args.hypervisor, kernel=args.kernel, initrd=args.initrd,
        cmdline=args.cmdline, hypervisor_cmdline=args.hypervisor_cmdline, trust_keys=tuple(args.trust_key),
        log=args.log, state=args.state or DEFAULT_STATE, audit_log=args.audit_log, pcr_map=args.pcr_map,
        pcr=args.pcr, ak_alg=args.ak_alg, firmware_log=firmware_log, dry_run=args.dry_run,
        command=tuple(command), evidence_out=args.evidence_out,
        ak_handle=parse_handle(args.handle) if args.handle is not None else None,
        audit_pcr=_audit_pcr(args.audit_pcr),
    )
    return _run(args, req)


def _run(args: argparse.Namespace, req: Any) -> int:
    """Run the gate on ``req``, print the decision, and exec the launcher when allowed."""
    import sys

    from tboot_py.launch.gate import exec_launcher, run_gate

    result = run_gate(req)
    _report(args, result)
    if not result.allowed:
        return result.exit_code
    if req.dry_run or result.launch is None:
        for c in result.copies:
            c.close()
        return EXIT_OK
    sys.stdout.flush()
    sys.stderr.flush()
    exec_launcher(result)
    return EXIT_OK  # not reached


def _audit_pcr(text: str) -> int | None:
    from tboot_py.errors import InputError
    from tboot_py.tpm import check_pcr_index

    if text == "none":
        return None
    if not (text.isascii() and text.isdigit()):
        raise InputError(f"--audit-pcr wants a PCR number or none, got {text!r}")
    return check_pcr_index(int(text))


def _report(args: argparse.Namespace, result: Any) -> None:
    import sys

    from tboot_py._output import Column, emit_json, print_table, say

    if args.json:
        emit_json({
            "allowed": result.allowed, "exit_code": result.exit_code, "reasons": list(result.reasons),
            "verdict": result.verdict.as_json() if result.verdict is not None else None,
            "measurements": [m.to_json() for m in result.measurements],
            "audit": {"hash": result.audit.get("hash")} if result.audit else None,
        })
        return
    if result.verdict is not None:
        print_table("Policy checks", (Column("rule"), Column("result"), Column("detail")),
                    [(r.rule, "[green]pass[/]" if r.passed else "[red]FAIL[/]", r.message)
                     for r in result.verdict.reasons], stderr=True)
    if result.allowed:
        say(f"[bold green]ALLOWED[/]: {'; '.join(result.reasons)}", stderr=True)
    else:
        say(f"[bold red]DENIED[/] (exit {result.exit_code}):", stderr=True)
        sys.stderr.flush()
        for r in result.reasons:  # plain lines: reasons carry digests that must not wrap
            print(f"  - {r}", file=sys.stderr)
    sys.stderr.flush()


def _hook(args: argparse.Namespace) -> int:
    import sys

    from tboot_py.launch.hooks.run import hook_request

    req = hook_request(args.name, args.hook_args, sys.stdin)
    if req is None:
        return EXIT_OK
    args.json = False
    return _run(args, req)
