"""Man pages and shell completion, generated from the argparse parser so they cannot drift.

``python -m tboot_py._docs write`` (``make docs``) writes them under ``tboot_py/share/``, which
the wheel ships (and installs into ``share/man/man1``, ``share/bash-completion`` and
``share/zsh/site-functions``); a test checks the files equal what the parser generates now.
``tboot-py completion bash|zsh`` prints the same scripts.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tboot_py import __version__

SHARE = Path(__file__).resolve().parent / "share"
PROG = "tboot-py"

EXIT_STATUS = (
    ("0", "allowed, verified or ok"),
    ("1", "denied by policy, or the evidence does not verify"),
    ("2", "usage or input error (missing file, bad argument, unparseable input, unreachable TPM)"),
    ("3", "TPM failure mid-way, or internal error"),
)


@dataclass(frozen=True)
class Command:
    path: tuple[str, ...]  # () for tboot-py itself, ("log", "replay") for `tboot-py log replay`
    parser: argparse.ArgumentParser
    help: str  # the one-line help its parent lists

    @property
    def name(self) -> str:
        return " ".join((PROG, *self.path))

    @property
    def page(self) -> str:
        return "-".join((PROG, *self.path))

    def subcommands(self) -> list[tuple[str, str]]:
        for a in self.parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                helps = {c.dest: c.help or "" for c in a._choices_actions}
                return [(n, helps.get(n, "")) for n in a.choices]
        return []

    def options(self) -> list[argparse.Action]:
        return [a for a in self.parser._actions if a.option_strings]

    def positionals(self) -> list[argparse.Action]:
        return [a for a in self.parser._actions
                if not a.option_strings and not isinstance(a, argparse._SubParsersAction)]


def commands(parser: argparse.ArgumentParser | None = None) -> list[Command]:
    """Every command, depth first, ``tboot-py`` itself first."""
    if parser is None:
        from tboot_py._cli import build_parser

        parser = build_parser()
    out: list[Command] = []

    def walk(p: argparse.ArgumentParser, path: tuple[str, ...], help_: str) -> None:
        cmd = Command(path, p, help_)
        out.append(cmd)
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                helps = {c.dest: c.help or "" for c in a._choices_actions}
                for name, child in a.choices.items():
                    walk(child, (*path, name), helps.get(name, ""))

    walk(parser, (), parser.description or "")
    return out


@contextmanager
def _width(columns: int = 80) -> Iterator[None]:
    """argparse wraps usage to $COLUMNS; generated text must not depend on the terminal."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(columns)
    try:
        yield
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def _takes_value(a: argparse.Action) -> bool:
    return a.nargs != 0 and not isinstance(a, argparse._HelpAction | argparse._VersionAction)


# --- man pages (roff, man(7)) ---------------------------------------------------------------

def _roff(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line for line in text.splitlines())


def man_page(cmd: Command, all_cmds: list[Command]) -> str:
    with _width():
        usage = cmd.parser.format_usage().removeprefix("usage: ").strip()
    lines = [f'.TH "{cmd.page.upper()}" "1" "" "tboot-py {__version__}" "tboot-py manual"',
             ".SH NAME", f"{_roff(cmd.page)} \\- {_roff(cmd.help or cmd.parser.description or '')}",
             ".SH SYNOPSIS", ".nf", _roff(usage), ".fi"]
    if cmd.parser.description:
        lines += [".SH DESCRIPTION", _roff(cmd.parser.description)]
    subs = cmd.subcommands()
    if subs:
        lines.append(".SH COMMANDS")
        for name, help_ in subs:
            lines += [".TP", f"\\fB{_roff(name)}\\fR", _roff(help_),
                      f"See \\fB{_roff('-'.join((PROG, *cmd.path, name)))}\\fR(1)."]
    pos = cmd.positionals()
    if pos:
        lines.append(".SH ARGUMENTS")
        for a in pos:
            lines += [".TP", f"\\fI{_roff(str(a.metavar or a.dest))}\\fR", _roff(_help(a))]
    opts = cmd.options()
    if opts:
        lines.append(".SH OPTIONS")
        for a in opts:
            head = ", ".join(f"\\fB{_roff(o)}\\fR" for o in a.option_strings)
            if _takes_value(a):
                head += f" \\fI{_roff(_metavar(a))}\\fR"
            lines += [".TP", head, _roff(_help(a))]
    lines.append(".SH EXIT STATUS")
    for code, meaning in EXIT_STATUS:
        lines += [".TP", code, _roff(meaning)]
    see = [c.page for c in all_cmds if c.path == cmd.path[:-1] or c.path[:-1] == cmd.path]
    see = [p for p in see if p != cmd.page]
    if see:
        lines += [".SH SEE ALSO", ", ".join(f"\\fB{_roff(p)}\\fR(1)" for p in see)]
    return "\n".join(lines) + "\n"


def _metavar(a: argparse.Action) -> str:
    if a.metavar is not None:
        return str(a.metavar)
    if a.choices is not None:
        return "{" + ",".join(str(c) for c in a.choices) + "}"
    return a.dest.upper()


def _help(a: argparse.Action) -> str:
    text = (a.help or "").replace("%(default)s", str(a.default)).replace("%(prog)s", PROG)
    if a.choices is not None and not isinstance(a, argparse._SubParsersAction):
        text = (text + "; " if text else "") + "one of: " + ", ".join(str(c) for c in a.choices)
    return text


# --- shell completion -----------------------------------------------------------------------

def _words(cmd: Command) -> tuple[list[str], list[str]]:
    opts = [o for a in cmd.options() for o in a.option_strings]
    return [n for n, _ in cmd.subcommands()], opts


def bash_completion(cmds: list[Command]) -> str:
    steps = sorted({" ".join(("", *c.path)) for c in cmds if c.path})
    out = [f"# bash completion for {PROG} {__version__} (generated from its argument parser)",
           "_tboot_py() {",
           '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"',
           '    local cmdpath="" w i subs="" opts=""',
           "    for ((i = 1; i < COMP_CWORD; i++)); do",
           '        w="${COMP_WORDS[i]}"',
           '        case "$cmdpath $w" in',
           "            " + "|".join(f'"{s}"' for s in steps) + ') cmdpath="$cmdpath $w" ;;',
           "        esac",
           "    done",
           '    case "$cmdpath:$prev" in']
    for c in cmds:
        for a in c.options():
            if a.choices is not None and _takes_value(a):
                pats = "|".join(f'"{" ".join(("", *c.path))}:{o}"' for o in a.option_strings)
                words = " ".join(str(x) for x in a.choices)
                out.append(f'        {pats}) COMPREPLY=($(compgen -W "{words}" -- "$cur")); return ;;')
            elif _takes_value(a):
                pats = "|".join(f'"{" ".join(("", *c.path))}:{o}"' for o in a.option_strings)
                out.append(f'        {pats}) COMPREPLY=($(compgen -f -- "$cur")); return ;;')
    out += ["    esac", '    case "$cmdpath" in']
    for c in cmds:
        subs, opts = _words(c)
        out.append(f'        "{" ".join(("", *c.path))}") subs="{" ".join(subs)}"; opts="{" ".join(opts)}" ;;')
    out += ["    esac",
            '    if [[ "$cur" == -* ]]; then',
            '        COMPREPLY=($(compgen -W "$opts" -- "$cur"))',
            '    elif [[ -n "$subs" ]]; then',
            '        COMPREPLY=($(compgen -W "$subs" -- "$cur"))',
            "    else",
            '        COMPREPLY=($(compgen -f -- "$cur"))',
            "    fi",
            "}",
            f"complete -o filenames -F _tboot_py {PROG}",
            ""]
    return "\n".join(out)


def _zq(name: str, description: str) -> str:
    """``name:description`` as one zsh single-quoted word for _describe (colons in either escaped)."""
    text = name.replace(":", "\\:") + ":" + description.replace(":", "\\:")
    return "'" + text.replace("'", "'\\''") + "'"


def zsh_completion(cmds: list[Command]) -> str:
    steps = sorted({" ".join(("", *c.path)) for c in cmds if c.path})
    out = [f"#compdef {PROG}",
           f"# zsh completion for {PROG} {__version__} (generated from its argument parser)",
           "_tboot_py() {",
           "    local cmdpath='' w i cur=${words[CURRENT]} prev=${words[CURRENT-1]}",
           "    local -a subs opts",
           "    for ((i = 2; i < CURRENT; i++)); do",
           "        w=${words[i]}",
           '        case "$cmdpath $w" in',
           "            (" + "|".join(f'"{s}"' for s in steps) + ') cmdpath="$cmdpath $w" ;;',
           "        esac",
           "    done",
           '    case "$cmdpath:$prev" in']
    for c in cmds:
        for a in c.options():
            if not _takes_value(a):
                continue
            pats = "|".join(f'"{" ".join(("", *c.path))}:{o}"' for o in a.option_strings)
            if a.choices is not None:
                out.append(f"        ({pats}) compadd -- {' '.join(str(x) for x in a.choices)}; return ;;")
            else:
                out.append(f"        ({pats}) _files; return ;;")
    out += ["    esac", '    case "$cmdpath" in']
    for c in cmds:
        subs = " ".join(_zq(n, h) for n, h in c.subcommands())
        opts = " ".join(_zq(o, _help(a)) for a in c.options() for o in a.option_strings)
        out.append(f'        ("{" ".join(("", *c.path))}") subs=({subs}); opts=({opts}) ;;')
    out += ["    esac",
            "    if [[ $cur == -* ]]; then",
            "        _describe -t options option opts",
            "    elif (( ${#subs} )); then",
            "        _describe -t commands command subs",
            "    else",
            "        _files",
            "    fi",
            "}",
            '_tboot_py "$@"',
            ""]
    return "\n".join(out)


def generated(parser: argparse.ArgumentParser | None = None) -> dict[str, str]:
    """Every generated file, by its path under ``tboot_py/share``."""
    cmds = commands(parser)
    files = {f"man/man1/{c.page}.1": man_page(c, cmds) for c in cmds}
    files["completions/tboot-py"] = bash_completion(cmds)
    files["completions/_tboot-py"] = zsh_completion(cmds)
    return files


def write(root: Path = SHARE) -> list[Path]:
    written = []
    want = generated()
    for old in [*root.glob("man/man1/*.1"), *root.glob("completions/*")]:
        if str(old.relative_to(root)) not in want:
            old.unlink()
    for rel, text in want.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if not p.is_file() or p.read_text() != text:
            p.write_text(text)
            written.append(p)
    return written


if __name__ == "__main__":  # python -m tboot_py._docs write
    if sys.argv[1:] != ["write"]:
        sys.exit("usage: python -m tboot_py._docs write")
    for p in write():
        print(f"wrote {p}")
