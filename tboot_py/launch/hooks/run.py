"""``tboot-py hook xl-create|libvirt-qemu``: the hooks' logic, shared with the gate."""

from __future__ import annotations

import os
import re
import shlex
import sys
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tboot_py.errors import EXIT_OK, InputError, PolicyError
from tboot_py.launch.gate import escape_braces

DEFAULT_CONFIG = Path("/etc/tboot-py/gate.toml")
#: libvirt hook input is small; refuse anything larger than this.
MAX_XML = 4 << 20


@dataclass(frozen=True)
class GateConfig:
    policy: Path
    tpm: str
    trust_keys: tuple[Path, ...] = ()
    state: Path = Path("/var/lib/tboot-py")
    pcr_map: str = "default"


def load_config(path: Path | None = None) -> GateConfig:
    path = path or Path(os.environ.get("TBOOT_PY_GATE_CONFIG", DEFAULT_CONFIG))
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"gate configuration {path} not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise InputError(f"gate configuration {path}: {e}") from None
    try:
        keys = doc.get("trust_keys", [])
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise PolicyError(f"{path}: trust_keys must be a list of paths")
        return GateConfig(policy=Path(_str(doc, "policy", path)), tpm=_str(doc, "tpm", path),
                          trust_keys=tuple(Path(k) for k in keys),
                          state=Path(doc.get("state", "/var/lib/tboot-py")),
                          pcr_map=str(doc.get("pcr_map", "default")))
    except (TypeError, ValueError) as e:
        raise InputError(f"gate configuration {path}: {e}") from None


def _str(doc: Mapping[str, Any], key: str, path: Path) -> str:
    v = doc.get(key)
    if not isinstance(v, str) or not v:
        raise InputError(f"gate configuration {path}: '{key}' must be a non-empty string")
    return v


def gate_argv(cfg: GateConfig, *, kernel: str | None, initrd: str | None, cmdline: str | None,
              dry_run: bool, command: Sequence[str] = ()) -> list[str]:
    argv = ["launch", "--policy", str(cfg.policy), "--tpm", cfg.tpm, "--state", str(cfg.state),
            "--pcr-map", cfg.pcr_map]
    for k in cfg.trust_keys:
        argv += ["--trust-key", str(k)]
    if kernel:
        argv += ["--kernel", kernel]
    if initrd:
        argv += ["--initrd", initrd]
    if cmdline is not None:
        argv += ["--cmdline", cmdline]
    if dry_run:
        argv.append("--dry-run")
    if command:
        argv += ["--", *command]
    return argv


# ---------------------------------------------------------------- xl create

#: The keys whose values decide what xl boots (xl.cfg(5), "Direct Kernel Boot").
_XL_BOOT_KEYS = frozenset({"kernel", "ramdisk", "cmdline", "extra", "root", "bootloader"})
#: Tokens of xl's config language (tools/libs/util/libxlu_cfg_l.l): lower-case identifiers,
#: numbers, single- or double-quoted strings with backslash escapes, '=', '+=', lists, and
#: ';' or a newline between statements. Comments run from '#' to the end of the line.
_XL_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r]+) | (?P<comment>\#[^\n]*) | (?P<nl>\n) | (?P<semi>;)
  | (?P<ident>[a-z][_0-9a-z]*) | (?P<number>[0-9][0-9a-fx]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*" | '(?:[^'\\\n]|\\.)*')
  | (?P<op>\+=|=) | (?P<punct>[\[\],])
""", re.VERBOSE)
_XL_ESCAPES = {"\\": "\\", '"': '"', "'": "'"}


def _xl_tokens(text: str, where: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _XL_TOKEN.match(text, pos)
        if m is None:
            line = text.count("\n", 0, pos) + 1
            raise InputError(f"{where}: line {line}: xl config syntax the gate cannot read: {text[pos:pos + 20]!r}")
        kind = m.lastgroup
        assert kind is not None
        if kind not in ("ws", "comment"):
            out.append((kind, m.group()))
        pos = m.end()
    return out


def _xl_string(tok: str, where: str) -> str:
    """Decode a quoted xl string. Only \\\\, \\" and \\' are decoded; any other escape is
    refused, so the measured value is always the one xl passes on."""
    body, out, i = tok[1:-1], [], 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            nxt = body[i + 1]
            if nxt not in _XL_ESCAPES:
                raise InputError(f"{where}: escape \\{nxt} in a boot setting is not supported")
            out.append(_XL_ESCAPES[nxt])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _xl_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_xl_config(text: str, where: str = "xl config") -> dict[str, str]:
    """kernel, ramdisk, cmdline/extra/root and bootloader from an xl domain config
    (xl.cfg(5)), read with xl's own statement syntax; the last assignment wins, as in xl.

    Fails closed: text the hook cannot tokenize, or a boot setting that is not one plain
    string, raises InputError, so xl can never boot a value that was not measured."""
    toks = _xl_tokens(text, where)
    out: dict[str, str] = {}
    i = 0
    while i < len(toks):
        kind, val = toks[i]
        if kind in ("nl", "semi"):
            i += 1
            continue
        if kind != "ident" or i + 1 >= len(toks) or toks[i + 1][0] != "op":
            raise InputError(f"{where}: expected KEY = VALUE at {val!r}")
        key, op = val, toks[i + 1][1]
        i += 2
        start, depth = i, 0
        while i < len(toks) and (depth or toks[i][0] not in ("nl", "semi")):
            if toks[i][1] == "[":
                depth += 1
            elif toks[i][1] == "]":
                depth -= 1
                if depth < 0:
                    raise InputError(f"{where}: unbalanced ']' in {key}")
            i += 1
        value = [t for t in toks[start:i] if t[0] != "nl"]
        if depth or not value:
            raise InputError(f"{where}: {key} has no complete value")
        if key in _XL_BOOT_KEYS:
            if op != "=" or len(value) != 1 or value[0][0] != "string":
                raise InputError(f"{where}: {key} must be one quoted string for a measured launch")
            out[key] = _xl_string(value[0][1], f"{where}: {key}")
    return out


def xl_create(args: Sequence[str]) -> list[str]:
    """Gate arguments for ``xl create CONFIG [VAR=VALUE ...]``."""
    if not args:
        raise InputError("usage: tboot-py hook xl-create CONFIG [VAR=VALUE ...]")
    config = Path(args[0])
    try:
        keys = parse_xl_config(config.read_text(), str(config))
    except OSError as e:
        raise InputError(f"{config}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{config}: not text: {e}") from None
    for extra in args[1:]:
        # xl create reads each VAR=VALUE as one more line of the config.
        keys.update(parse_xl_config(extra, f"argument {extra!r}"))
    if keys.get("bootloader"):
        raise InputError(f"{config}: bootloader={keys['bootloader']!r} picks the kernel from the guest's disk; "
                         "a measured launch needs direct kernel boot")
    if "kernel" not in keys:
        raise InputError(f"{config}: no kernel= line; nothing to measure")
    cmdline = keys.get("cmdline")
    if cmdline is None and ("extra" in keys or "root" in keys):
        # xl.cfg(5): without cmdline=, the kernel gets "root=<root> <extra>".
        cmdline = " ".join(x for x in (f"root={keys['root']}" if "root" in keys else "", keys.get("extra", "")) if x)
    command = ["xl", "create", str(config), *args[1:], 'kernel="{kernel}"']
    if "ramdisk" in keys:
        command.append('ramdisk="{initrd}"')
    if cmdline is not None:
        command.append(escape_braces(f"cmdline={_xl_quote(cmdline)}"))
    return gate_argv(load_config(), kernel=keys["kernel"], initrd=keys.get("ramdisk"), cmdline=cmdline,
                     dry_run=False, command=command)


# ---------------------------------------------------------------- libvirt qemu hook

def libvirt_qemu(args: Sequence[str], xml_text: str) -> list[str] | None:
    """Gate arguments for libvirt's ``qemu GUEST prepare begin -`` (None: not our event)."""
    if len(args) < 3:
        raise InputError("usage: tboot-py hook libvirt-qemu GUEST OPERATION SUBOPERATION [EXTRA]")
    _guest, op, subop = args[0], args[1], args[2]
    if (op, subop) != ("prepare", "begin"):
        return None
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as e:
        raise InputError(f"domain XML does not parse: {e}") from None
    kernel = root.findtext("./os/kernel")
    if not kernel:
        # A domain that boots through its own firmware has nothing for the gate to measure
        # here; its firmware measures it. Deny unless the configuration says otherwise.
        raise InputError("domain has no <os><kernel>: direct kernel boot is required for a gated launch")
    return gate_argv(load_config(), kernel=kernel, initrd=root.findtext("./os/initrd") or None,
                     cmdline=root.findtext("./os/cmdline"), dry_run=True)


def main_hook(name: str, args: Sequence[str]) -> int:
    from tboot_py._cli import main

    if name == "xl-create":
        argv = xl_create(args)
    elif name == "libvirt-qemu":
        xml_text = sys.stdin.read(MAX_XML + 1)
        if len(xml_text) > MAX_XML:
            raise InputError("domain XML too large")
        maybe = libvirt_qemu(args, xml_text)
        if maybe is None:
            return EXIT_OK
        argv = maybe
    else:
        raise InputError(f"unknown hook {name!r} (xl-create, libvirt-qemu)")
    print("tboot-py hook: " + shlex.join(["tboot-py", *argv]), file=sys.stderr)
    return main(argv)
