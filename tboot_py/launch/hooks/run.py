"""``tboot-py hook xl-create|libvirt-qemu``: each hook reads what its launcher will read and
builds a :class:`~tboot_py.launch.gate.GateRequest`, which the gate runs in-process."""

from __future__ import annotations

import os
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from tboot_py.errors import InputError, PolicyError
from tboot_py.fileio import read_file, read_text
from tboot_py.launch import xl
from tboot_py.launch.gate import GateRequest, default_firmware_log
from tboot_py.launch.xl import parse_xl_config

__all__ = ["GateConfig", "hook_request", "libvirt_qemu", "load_config", "parse_xl_config", "xl_create"]

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
        doc = tomllib.loads(read_text(path, "gate configuration"))
    except tomllib.TOMLDecodeError as e:
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


def gate_request(cfg: GateConfig, *, kernel: str, initrd: str | None, cmdline: str | None,
                 dry_run: bool, command: Sequence[str] = (), xl_config: bytes | None = None,
                 allow_needed: Sequence[str] = ()) -> GateRequest:
    """The gate request a hook runs in-process (never an argv for the CLI)."""
    return GateRequest(policy=cfg.policy, tpm=cfg.tpm, kernel=Path(kernel),
                       initrd=Path(initrd) if initrd else None, cmdline=cmdline, trust_keys=cfg.trust_keys,
                       state=cfg.state, pcr_map=cfg.pcr_map, firmware_log=default_firmware_log(cfg.tpm),
                       dry_run=dry_run, command=tuple(command), xl_config=xl_config,
                       allow_needed=tuple(allow_needed))


# ---------------------------------------------------------------- xl create

#: Largest xl config the hook reads.
MAX_XL_CONFIG = 1 << 20


def xl_create(args: Sequence[str]) -> GateRequest:
    """The gate request for ``xl create CONFIG [VAR=VALUE ...]``: the config is read once,
    checked with xl's whole key set (:mod:`tboot_py.launch.xl`), and xl gets the sealed copy
    of exactly those bytes (``xl create {xl_config}``), so it never reads the file again."""
    if not args:
        raise InputError("usage: tboot-py hook xl-create CONFIG [VAR=VALUE ...]")
    config = Path(args[0])
    data = read_file(config, "xl domain configuration", MAX_XL_CONFIG)
    # xl create reads each VAR=VALUE as one more line of the config.
    text = xl.with_extras(data, tuple(args[1:]))
    try:
        boot = xl.check_config(text.decode(), str(config))
    except UnicodeDecodeError as e:
        raise InputError(f"{config}: not UTF-8 text: {e}") from None
    return gate_request(load_config(), kernel=boot.kernel, initrd=boot.ramdisk, cmdline=boot.cmdline,
                        dry_run=False, command=("xl", "create", "{xl_config}"), xl_config=text)


# ---------------------------------------------------------------- libvirt qemu hook

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
XEN_NS = "http://libvirt.org/schemas/domain/xen/1.0"
#: Domain XML elements (libvirt formatdomain) that load code, or pass boot arguments or boot
#: data to the guest, outside the kernel, initrd and command line the gate measures.
#: Each is refused unless the policy's ``allow_launch`` names it.
LIBVIRT_UNMEASURED = {
    "./os/loader": "loader",              # firmware image (OVMF, SeaBIOS) or a custom loader
    "./os/nvram": "nvram",                # UEFI variable store and its template: boot entries
    "./os/firmware": "firmware",          # firmware auto-selection
    "./os/dtb": "dtb",                    # device tree handed to the kernel
    "./os/acpi": "acpi",                  # ACPI tables (os/acpi/table) the guest executes (AML)
    "./os/smbios": "smbios",              # host SMBIOS, read by the guest (systemd reads type 11)
    "./os/initarg": "init",               # container init arguments
    "./os/init": "init",
    "./sysinfo": "sysinfo",               # SMBIOS strings and fw_cfg entries (files) for the guest
    "./devices//rom": "rom",              # option ROM files run by the firmware
}


def libvirt_unmeasured(root: ET.Element) -> list[str]:
    """The names of everything in the domain that passes code or boot data the gate does
    not measure (:data:`LIBVIRT_UNMEASURED`, the qemu: and xen: namespaces, firmware='...')."""
    found: list[str] = []
    for path, name in LIBVIRT_UNMEASURED.items():
        for el in root.findall(path):
            if name == "rom" and el.get("file") is None and el.get("enabled") != "yes":
                continue  # <rom bar='off'/> only switches the device's own ROM BAR
            found.append(name)
    os_el = root.find("./os")
    if os_el is not None and os_el.get("firmware"):
        found.append("firmware")
    for parent in root.iter():
        for el in parent:  # the outermost element of each qemu: or xen: block names it
            tag = el.tag if isinstance(el.tag, str) else ""
            for ns, prefix in ((QEMU_NS, "qemu"), (XEN_NS, "xen")):
                if tag.startswith("{" + ns + "}") and not str(parent.tag).startswith("{" + ns + "}"):
                    found.append(f"{prefix}:{tag[len(ns) + 2:]}")
    return sorted(set(found))


def libvirt_qemu(args: Sequence[str], xml_text: str) -> GateRequest | None:
    """The gate request for libvirt's ``qemu GUEST prepare begin -`` (None: not our event).
    libvirt starts QEMU itself, so this is a decision only (dry run): the domain must boot
    the measured kernel, initrd and command line and nothing else the gate cannot see."""
    if len(args) < 3:
        raise InputError("usage: tboot-py hook libvirt-qemu GUEST OPERATION SUBOPERATION [EXTRA]")
    _guest, op, subop = args[0], args[1], args[2]
    if (op, subop) != ("prepare", "begin"):
        return None
    if "<!DOCTYPE" in xml_text or "<!ENTITY" in xml_text:
        raise InputError("domain XML with a DTD or entities is refused")
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as e:
        raise InputError(f"domain XML does not parse: {e}") from None
    kernel = root.findtext("./os/kernel")
    if not kernel:
        # A domain that boots through its own firmware has nothing for the gate to measure
        # here; its firmware measures it. Deny unless the configuration says otherwise.
        raise InputError("domain has no <os><kernel>: direct kernel boot is required for a gated launch")
    for tag in ("kernel", "initrd", "cmdline"):
        if len(root.findall(f"./os/{tag}")) > 1:
            raise InputError(f"domain XML has more than one <os><{tag}>")
    return gate_request(load_config(), kernel=kernel, initrd=root.findtext("./os/initrd") or None,
                        cmdline=root.findtext("./os/cmdline"), dry_run=True,
                        allow_needed=libvirt_unmeasured(root))


def hook_request(name: str, args: Sequence[str], stdin: TextIO) -> GateRequest | None:
    """The gate request for hook ``name`` (None: nothing to gate)."""
    if name == "xl-create":
        return xl_create(args)
    if name == "libvirt-qemu":
        try:
            xml_text = stdin.read(MAX_XML + 1)
        except (OSError, ValueError) as e:  # a closed or unreadable stdin; bad UTF-8
            raise InputError(f"cannot read the domain XML from standard input: {e}") from None
        if len(xml_text) > MAX_XML:
            raise InputError("domain XML too large")
        return libvirt_qemu(args, xml_text)
    raise InputError(f"unknown hook {name!r} (xl-create, libvirt-qemu)")
