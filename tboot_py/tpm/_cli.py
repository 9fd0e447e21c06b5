"""``tboot-py pcrs``: read PCRs from a TPM."""

from __future__ import annotations

import argparse
from typing import Any

from tboot_py.errors import EXIT_OK


def add_tpm_arg(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--tpm", required=required, metavar="TCTI",
                   help="TPM to use: /dev/tpmrm0, device:/dev/tpmrm0 or swtpm:host=127.0.0.1,port=2321")


def register(sub: Any) -> None:
    p = sub.add_parser("pcrs", help="read PCR values from a TPM")
    add_tpm_arg(p)
    p.add_argument("--banks", help="comma-separated banks (default: every active bank)")
    p.add_argument("--pcr", dest="pcr_list", help="comma-separated PCR indices (default: 0-23)")
    p.add_argument("--json", action="store_true", help="machine output")
    p.set_defaults(func=_pcrs)


def _pcrs(args: argparse.Namespace) -> int:
    from tboot_py import algorithms
    from tboot_py._output import emit_json, pcrs_json, print_pcrs
    from tboot_py.tpm import NUM_PCRS, open_tpm, parse_pcr_list

    banks = algorithms.parse_banks(args.banks) if args.banks else None
    pcrs = parse_pcr_list(args.pcr_list) if args.pcr_list else list(range(NUM_PCRS))
    tpm = open_tpm(args.tpm)
    try:
        values = tpm.read_pcrs(pcrs, banks)
    finally:
        tpm.close()
    if args.json:
        emit_json({"pcrs": pcrs_json(values)})
    else:
        print_pcrs(values, title=f"PCRs of {args.tpm}")
    return EXIT_OK
