"""What the gate hands the launcher: its argv, its environment and the sealed copies.

Rules (README, "What the gate guarantees"):

* A placeholder is a whole argument: ``{hypervisor}``, ``{kernel}``, ``{initrd}`` and
  ``{xl_config}`` become the sealed copies (``/proc/self/fd/N``), ``{cmdline}`` and
  ``{hypervisor_cmdline}`` the measured command lines, each as one argv element, which
  execve(2) passes on without any parsing. A placeholder inside a larger argument
  (``--append={cmdline}``, ``file={initrd}``, ``"{kernel} {cmdline},{initrd}"``) is refused:
  the launcher would re-parse the measured value with its own syntax.
* ``{qemu_modules}`` is QEMU's multiboot module list for ``-initrd`` when ``-kernel`` is a
  multiboot image (Xen): ``KERNEL CMDLINE,INITRD``. QEMU splits that list at single commas
  and reads ``,,`` as a literal comma (QEMU's option syntax, get_opt_value() in
  util/qemu-option.c, used by hw/i386/multiboot.c), and takes everything after a module's
  first space as its command line. The gate builds the list itself and doubles every comma
  of the measured command line, so no command line can add a module.
* A measured value that cannot travel as one argument (a NUL byte), or that a launcher
  could read as an option (a leading ``-``), is refused.
* A literal argument that names an artifact's original file (same path, or the same inode
  by any other spelling, alone or after ``=``, ``,`` or ``:``) is refused: the launcher
  would open the unmeasured file instead of the sealed copy.
* The launcher is resolved to an absolute path with the clean ``PATH`` before anything is
  measured, and runs with a clean environment: only :data:`ENV_ALLOW` (and ``LC_*``) from
  the caller, then ``TBOOT_PY_<COMPONENT>`` for the copies the gate made, nothing else.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from tboot_py.errors import InputError

#: Placeholders that stand for a sealed copy.
FILE_PLACEHOLDERS = ("hypervisor", "kernel", "initrd", "xl_config")
#: Placeholders that stand for a measured command line.
TEXT_PLACEHOLDERS = ("cmdline", "hypervisor_cmdline")
PLACEHOLDERS = (*FILE_PLACEHOLDERS, *TEXT_PLACEHOLDERS, "qemu_modules")
#: Caller variables the launcher may inherit; also every ``LC_*``.
ENV_ALLOW = ("PATH", "HOME", "USER", "LOGNAME", "TERM", "LANG", "LANGUAGE", "TZ", "TMPDIR")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_TOKEN = re.compile(r"\{\{|\}\}|\{(" + "|".join(PLACEHOLDERS) + r")\}")
_SPLIT = re.compile(r"[=,:\s'\"]+")


class Copy(Protocol):
    """What the hand-over needs of a sealed copy (:class:`tboot_py.launch.sealed.SealedCopy`)."""

    @property
    def component(self) -> str: ...

    @property
    def path(self) -> str: ...


@dataclass(frozen=True)
class LaunchPlan:
    """Exactly what the gate executes: recorded in the audit record, then exec'd as is."""

    executable: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    #: Files the gate generated for the launcher (the sealed xl config): (component, SHA-256 hex).
    generated: tuple[tuple[str, str], ...] = ()

    def as_json(self) -> dict[str, object]:
        return {"executable": self.executable, "argv": list(self.argv), "env": dict(self.env),
                "generated": dict(self.generated)}


def escape_braces(text: str) -> str:
    """Quote literal text for a launch command: ``{`` and ``}`` are doubled, as in str.format."""
    return text.replace("{", "{{").replace("}", "}}")


def _literal(arg: str) -> str | None:
    """The argument's text with ``{{``/``}}`` decoded, or None when it is one placeholder.
    A placeholder inside a larger argument raises InputError."""
    whole = _TOKEN.fullmatch(arg)
    if whole is not None and whole.group(1) is not None:
        return None
    out: list[str] = []
    pos = 0
    for m in _TOKEN.finditer(arg):
        if m.group(1) is not None:
            hint = (" (for QEMU's multiboot -initrd list use {qemu_modules})"
                    if m.group(1) in ("kernel", "cmdline", "initrd") and "," in arg else "")
            raise InputError(f"launch argument {arg!r}: {{{m.group(1)}}} must be a whole argument; the launcher "
                             f"would re-parse a measured value inside {arg!r}{hint}")
        out.append(arg[pos:m.start()] + m.group(0)[0])
        pos = m.end()
    out.append(arg[pos:])
    return "".join(out)


def check_text_value(name: str, value: str) -> str:
    """A measured command line that is about to become one launcher argument."""
    if "\0" in value:
        raise InputError(f"the measured {name} contains a NUL byte; it cannot be passed as one argument")
    if value.startswith("-"):
        raise InputError(f"the measured {name} starts with '-'; a launcher could read it as an option")
    return value


def qemu_modules(kernel: str, cmdline: str | None, initrd: str | None) -> str:
    """QEMU's multiboot ``-initrd`` list with every comma of the command line doubled."""
    head = kernel if cmdline is None else f"{kernel} {check_text_value('cmdline', cmdline).replace(',', ',,')}"
    return head if initrd is None else f"{head},{initrd}"


def _values(copies: Sequence[Copy], cmdline: str | None, hypervisor_cmdline: str | None) -> dict[str, str]:
    values = {str(c.component): str(c.path) for c in copies}
    if cmdline is not None:
        values["cmdline"] = check_text_value("cmdline", cmdline)
    if hypervisor_cmdline is not None:
        values["hypervisor_cmdline"] = check_text_value("hypervisor_cmdline", hypervisor_cmdline)
    if "kernel" in values:
        values["qemu_modules"] = qemu_modules(values["kernel"], cmdline, values.get("initrd"))
    return values


def launcher_argv(command: Sequence[str], copies: Sequence[Copy], cmdline: str | None,
                  hypervisor_cmdline: str | None = None) -> list[str]:
    """The launch argv: each whole-argument placeholder replaced by its value (module docstring)."""
    values = _values(copies, cmdline, hypervisor_cmdline)
    out: list[str] = []
    for arg in command:
        text = _literal(arg)
        if text is not None:
            out.append(text)
            continue
        key = arg[1:-1]
        if key not in values:
            need = "kernel" if key == "qemu_modules" else key
            raise InputError(f"the launch command uses {{{key}}} but no {need} was given")
        out.append(values[key])
    return out


def _ids(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def check_no_original_paths(command: Sequence[str], originals: Mapping[str, tuple[str, tuple[int, int] | None]]
                            ) -> None:
    """Refuse a literal launch argument that names a measured artifact's original file
    (``originals``: component -> (path as given, (st_dev, st_ino) when read))."""
    by_path = {os.path.realpath(p): c for c, (p, _i) in originals.items()}
    by_id = {i: c for c, (_p, i) in originals.items() if i is not None}
    for arg in command:
        text = _literal(arg)
        if text is None:
            continue
        for piece in {text, *_SPLIT.split(text)}:
            if not piece:
                continue
            comp = by_path.get(os.path.realpath(piece)) if "\0" not in piece else None
            ident = _ids(piece)
            comp = comp or (by_id.get(ident) if ident is not None else None)
            if comp is not None:
                raise InputError(f"launch argument {arg!r} names the original {comp} file; the launcher must get "
                                 f"the measured copy ({{{comp}}}), never a path it would open again")


def clean_env(environ: Mapping[str, str], copies: Sequence[Copy]) -> dict[str, str]:
    """The launcher's environment: the allow-list from ``environ``, then the gate's own."""
    env = {k: v for k, v in environ.items() if k in ENV_ALLOW or k.startswith("LC_")}
    env.setdefault("PATH", DEFAULT_PATH)
    for c in copies:
        env[f"TBOOT_PY_{c.component.upper()}"] = c.path
    return env


def resolve_launcher(name: str, env: Mapping[str, str]) -> str:
    """The absolute path of the launcher, found with the clean environment's PATH."""
    if not name:
        raise InputError("the launch command is empty")
    found = shutil.which(name, path=env.get("PATH", DEFAULT_PATH))
    if found is None:
        raise InputError(f"cannot run launcher {name!r}: not found or not executable")
    return os.path.abspath(found)


def launch_plan(command: Sequence[str], copies: Sequence[Copy], cmdline: str | None,
                hypervisor_cmdline: str | None = None, *,
                originals: Mapping[str, tuple[str, tuple[int, int] | None]] | None = None,
                environ: Mapping[str, str] | None = None,
                generated: Sequence[tuple[str, str]] = ()) -> LaunchPlan:
    """Check the command and build what the gate will exec; InputError when it is refused."""
    if not command:
        raise InputError("no launch command given (put it after --)")
    check_no_original_paths(command, originals or {})
    argv = launcher_argv(command, copies, cmdline, hypervisor_cmdline)
    env = clean_env(os.environ if environ is None else environ, copies)
    return LaunchPlan(resolve_launcher(argv[0], env), tuple(argv), tuple(sorted(env.items())), tuple(generated))


@dataclass(frozen=True)
class _Pending:
    component: str
    path: str


def check_command(command: Sequence[str], artifacts: Mapping[str, object | None], cmdline: str | None,
                  hypervisor_cmdline: str | None = None) -> None:
    """The checks of :func:`launch_plan`, before anything is read: ``artifacts`` maps each
    component to the path it will be read from (None: not given)."""
    given = {c: str(p) for c, p in artifacts.items() if p is not None}
    launch_plan(command, [_Pending(c, f"/proc/self/fd/<{c}>") for c in given], cmdline, hypervisor_cmdline,
                originals={c: (p, _ids(p)) for c, p in given.items()})


def exec_plan(plan: LaunchPlan, fds: Sequence[int]) -> None:
    """Replace this process with the launcher; the sealed copies stay open for it."""
    for fd in fds:
        os.set_inheritable(fd, True)
    try:
        os.execve(plan.executable, list(plan.argv), dict(plan.env))
    except OSError as e:
        raise InputError(f"cannot run launcher {plan.executable!r}: {e.strerror}") from e
