"""The ``tboot-py`` command line. ``main(argv)`` is callable in-process for tests.

Each stage registers its own subcommands from a small ``_cli`` module that imports nothing
heavy at start-up. Exit codes (DESIGN.md): 0 allowed/ok, 1 denied or not verified,
2 usage or input error, 3 TPM or internal error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from tboot_py.errors import EXIT_INTERNAL, EXIT_USAGE, Error

#: Every command: its name, the module whose ``register(subparsers)`` adds it (each handler
#: returns an exit code), and its one-line help. The help is repeated here so that
#: ``tboot-py --help`` and every command import only their own stage (a test checks it equals
#: what the module registers).
COMMANDS = (
    ("pcrs", "tboot_py.tpm._cli", "read PCR values from a TPM"),
    ("log", "tboot_py.eventlog._cli", "TCG event logs: show, replay, verify, diff, check, state"),
    ("extend", "tboot_py.launch._cli", "measure artifacts, extend them into the TPM and append to the event log"),
    ("launch", "tboot_py.launch._cli", "the fail-closed launch gate: measure, extend, log, verify, policy, exec"),
    ("hook", "tboot_py.launch._cli", "run a launch hook (xl-create, libvirt-qemu) through the gate"),
    ("audit", "tboot_py.audit._cli", "check or show the hash-chained audit log of launch decisions"),
    ("measure", "tboot_py.measure._cli", "compute the digests of launch artifacts in every bank"),
    ("policy", "tboot_py.policy._cli", "launch policies: create, show, sign, verify, predict, tboot VLP"),
    ("attest", "tboot_py.attest._cli", "EK, AK, credential activation and quotes on a TPM"),
    ("verify", "tboot_py.verify._cli", "verify an evidence bundle: quote, nonce, PCRs, event logs"),
    ("quote", "tboot_py.verify._cli", "quote tools on tpm2-tools files"),
    ("serve", "tboot_py.server._cli", "run the remote attestation service (HTTP API, SQLite or PostgreSQL)"),
    ("fleet", "tboot_py.server._cli", "administer the attestation service: hosts, approvals, policies"),
    ("ear", "tboot_py.server._cli", "EAT attestation results (EAR JWTs) from the service"),
    ("agent", "tboot_py.agent._cli", "attestation agent: enroll with the service and attest on an interval"),
    ("completion", "tboot_py._cli", "print the shell completion script (bash or zsh)"),
)
COMMAND_MODULES = tuple(dict.fromkeys(m for _, m, _ in COMMANDS if m != __name__))


class _Parser(argparse.ArgumentParser):
    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse asks shutil for the width, and shutil imports bz2, lzma and fnmatch.
        return self.formatter_class(prog=self.prog, width=_columns() - 2)  # type: ignore[call-arg]

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _columns() -> int:
    """``shutil.get_terminal_size().columns``: $COLUMNS, else the terminal on stdout, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0 and sys.__stdout__ is not None:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; with ``argv``, only the command it names is built in full (the
    others are listed with their help but their modules are not imported)."""
    from tboot_py import __version__

    parser = _Parser(prog="tboot-py", description="Measured launch and attestation toolkit.")
    parser.add_argument("--version", action="version", version=f"tboot-py {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    wanted = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    modules = {m for n, m, _ in COMMANDS if wanted is None or n == wanted}
    listed = None
    for name, module, help_ in COMMANDS:
        if name in sub.choices:
            continue
        if module not in modules:
            # Listed in the help and the invalid-choice error only: argv does not name it, so it
            # shares one empty parser (building fifteen was most of ``--help``'s time).
            listed = listed or _Parser(prog=f"tboot-py {name}", add_help=False)
            sub.choices[name] = listed
            sub._choices_actions.append(sub._ChoicesPseudoAction(name, (), help_))
        elif module == __name__:
            _register(sub)
        else:
            importlib.import_module(module).register(sub)
            modules.discard(module)
    return parser


def _register(sub: argparse._SubParsersAction[_Parser]) -> None:
    c = sub.add_parser("completion", help="print the shell completion script (bash or zsh)",
                       description="Generated from the argument parser. bash: "
                                   "`source <(tboot-py completion bash)`; zsh: write it as _tboot-py into $fpath.")
    c.add_argument("shell", choices=["bash", "zsh"])
    c.set_defaults(func=_completion)


def _completion(args: argparse.Namespace) -> int:
    from tboot_py import _docs

    cmds = _docs.commands()
    sys.stdout.write(_docs.bash_completion(cmds) if args.shell == "bash" else _docs.zsh_completion(cmds))
    return 0


#: Arguments where ``-`` is not standard input: outputs (``-`` is standard output or a name)
#: and the arguments handed to a launched program or hook.
_NOT_STDIN = frozenset({"out", "output", "command", "hook_args"})


def stdin_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The arguments given as ``-`` (standard input), named as in the usage line, once per
    ``-``. Standard input can be read once, so a command takes it for one argument at most."""
    names: dict[str, str] = {}
    todo = [parser]
    while todo:
        for action in todo.pop()._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += action.choices.values()
            else:
                names.setdefault(action.dest, action.option_strings[0] if action.option_strings
                                 else str(action.metavar or action.dest.upper()))
    found = []
    for dest, value in vars(args).items():
        if dest in _NOT_STDIN:
            continue
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str | os.PathLike) and os.fspath(v) == "-":
                found.append(names.get(dest, dest))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv == ["--version"]:  # answered before any parser is built
        from tboot_py import __version__

        print(f"tboot-py {__version__}")
        return 0
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help exits 0, usage errors exit 2
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    dashes = stdin_arguments(parser, args)
    if len(dashes) > 1:
        print(f"tboot-py: error: only one argument can be - (standard input), not {' and '.join(dashes)}",
              file=sys.stderr)
        return EXIT_USAGE
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
