"""The ``tboot-py`` command line. ``main(argv)`` is callable in-process for tests.

Each stage registers its own subcommands from a small ``_cli`` module that imports nothing
heavy at start-up. Exit codes (DESIGN.md): 0 allowed/ok, 1 denied or not verified,
2 usage or input error, 3 TPM or internal error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from tboot_py.errors import EXIT_INTERNAL, EXIT_USAGE, Error

# Modules that define ``register(subparsers)``; each handler returns an exit code.
COMMAND_MODULES = (
    "tboot_py.tpm._cli",
    "tboot_py.eventlog._cli",
    "tboot_py.launch._cli",
    "tboot_py.audit._cli",
    "tboot_py.measure._cli",
    "tboot_py.policy._cli",
    "tboot_py.attest._cli",
    "tboot_py.verify._cli",
    "tboot_py.server._cli",
    "tboot_py.agent._cli",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    from tboot_py import __version__

    parser = _Parser(prog="tboot-py", description="Measured launch and attestation toolkit.")
    parser.add_argument("--version", action="version", version=f"tboot-py {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    c = sub.add_parser("completion", help="print the shell completion script (bash or zsh)",
                       description="Generated from the argument parser. bash: "
                                   "`source <(tboot-py completion bash)`; zsh: write it as _tboot-py into $fpath.")
    c.add_argument("shell", choices=["bash", "zsh"])
    c.set_defaults(func=_completion)
    return parser


def _completion(args: argparse.Namespace) -> int:
    from tboot_py import _docs

    cmds = _docs.commands()
    sys.stdout.write(_docs.bash_completion(cmds) if args.shell == "bash" else _docs.zsh_completion(cmds))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help exits 0, usage errors exit 2
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    try:
        rc: int = args.func(args)
        return rc
    except Error as e:
        print(f"tboot-py: error: {e.diagnostics()}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("tboot-py: interrupted", file=sys.stderr)
        return EXIT_INTERNAL
    except BrokenPipeError:
        return EXIT_INTERNAL
    except Exception as e:  # fail closed, never a traceback
        print(f"tboot-py: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_INTERNAL


def run() -> None:
    sys.exit(main())
