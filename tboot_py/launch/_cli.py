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
    if args.initrd is not None:
        out.append(Artifact("initrd", args.initrd, args.initrd.name))
    if args.cmdline is not None and not tboot:
        out.append(Artifact("cmdline", None, "cmdline", cmdline=args.cmdline))
    if args.hypervisor_cmdline is not None and not tboot:
        out.append(Artifact("cmdline", None, "hypervisor-cmdline", cmdline=args.hypervisor_cmdline))
    if not out:
        raise InputError("nothing to measure: give --hypervisor, --kernel, --initrd or --cmdline")
    return out


def logged_json(logged: Any) -> list[dict[str, Any]]:
    return [{"component": lm.component, "pcr": lm.pcr, **lm.measurement.to_json()} for lm in logged]


def _extend(args: argparse.Namespace) -> int:
    from rich.table import Table

    from tboot_py._output import console, emit_json
    from tboot_py.launch.builder import extend_and_log
    from tboot_py.tpm import open_tpm

    artifacts = artifacts_from_args(args)
    tpm = open_tpm(args.tpm)
    try:
        logged = extend_and_log(tpm, args.log, artifacts, mapping=args.pcr_map, pcr=args.pcr)
    finally:
        tpm.close()
    if args.json:
        emit_json({"log": str(args.log), "extended": logged_json(logged)})
        return EXIT_OK
    t = Table(title=f"Extended and logged to {args.log}")
    for col in ("component", "PCR", "file", "kind", "bank", "digest"):
        t.add_column(col, overflow="fold")
    for lm in logged:
        for i, (bank, hexd) in enumerate(lm.measurement.digests.hex().items()):
            first = i == 0
            t.add_row(lm.component if first else "", str(lm.pcr) if first else "",
                      lm.measurement.name if first else "", lm.measurement.kind.value if first else "", bank, hexd)
    console().print(t)
    return EXIT_OK
