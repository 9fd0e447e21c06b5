"""Xen ``xl`` domain configs (xl.cfg(5)) as the measured ``xl create`` reads them.

The hook reads the config with xl's own statement syntax and xl's whole key set, then
hands xl a sealed copy of exactly the bytes it checked, so xl never re-reads the file:

* the boot keys (``kernel``, ``ramdisk``, ``cmdline``, ``root``, ``extra``) are measured;
  each must be one quoted string assigned with ``=``, the last assignment wins, as in xl;
* every key that makes xl (or a process it starts) load code or boot arguments from
  somewhere else is refused (:data:`CODE_KEYS`: boot loaders, firmware, shims, device-model
  binaries and arguments, ACPI/SMBIOS tables, device trees);
* an HVM guest is refused: libxl hands an HVM guest's kernel path to the device model,
  a separate process that opens it again by name (xl.cfg(5), "Direct Kernel Boot");
* any key not in xl.cfg(5) is refused, since a newer xl may give it a meaning;
* the sealed copy is those bytes followed by three lines naming the sealed kernel and
  ramdisk (``/proc/self/fd/N``) and the measured command line; the result is parsed again
  and must give back exactly those values.

Tokens (tools/libs/util/libxlu_cfg_l.l): lower-case identifiers, numbers, single- or
double-quoted strings with backslash escapes, ``=``, ``+=``, lists, and ``;`` or a newline
between statements; comments run from ``#`` to the end of the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tboot_py.errors import InputError

#: The keys the gate measures (xl.cfg(5), "Direct Kernel Boot").
BOOT_KEYS = frozenset({"kernel", "ramdisk", "cmdline", "root", "extra"})
#: Keys that load code or pass boot data the gate does not measure (xl.cfg(5)).
CODE_KEYS = frozenset({
    "bootloader", "bootloader_args", "firmware", "firmware_override", "bios_path_override",
    "acpi_firmware", "smbios_firmware", "pvshim", "pvshim_path", "pvshim_cmdline", "pvshim_extra",
    "device_model", "device_model_override", "device_model_args", "device_model_args_pv",
    "device_model_args_hvm", "device_model_stubdomain_override", "stubdomain_kernel", "stubdomain_ramdisk",
    "stubdomain_cmdline", "device_tree", "dtdev", "loader", "shim",
})
#: The other keys of xl.cfg(5) (Xen 4.17): they configure the domain but load no boot code.
OTHER_KEYS = frozenset({
    "name", "uuid", "type", "builder", "pool", "vcpus", "maxvcpus", "cpus", "cpus_soft", "cpu_weight", "cap",
    "memory", "maxmem", "on_poweroff", "on_reboot", "on_watchdog", "on_crash", "on_soft_reset", "direct_io_safe",
    "e820_host", "driver_domain", "passthrough", "vmtrace_buf_kb", "altp2m", "altp2mhvm", "nestedhvm", "cpuid",
    "vpmu", "max_grant_frames", "max_maptrack_frames", "max_grant_version", "nomigrate", "tsc_mode",
    "localtime", "rtc_timeoffset", "timer_mode", "hpet", "vpt_align", "viridian", "acpi", "acpi_s3", "acpi_s4",
    "acpi_laptop_slate", "apic", "pae", "hap", "oos", "shadow_memory", "nx", "vga", "videoram", "stdvga", "vnc",
    "vnclisten", "vncdisplay", "vncunused", "vncpasswd", "keymap", "sdl", "opengl", "nographic", "spice",
    "spicehost", "spiceport", "spicetls_port", "spicedisable_ticketing", "spicepasswd", "spiceagent_mouse",
    "spicevdagent", "spice_clipboard_sharing", "spiceusbredirection", "spice_image_compression",
    "spice_streaming_video", "serial", "boot", "usb", "usbversion", "usbdevice", "vkb_device", "soundhw",
    "gfx_passthru", "rdm", "rdm_mem_boundary", "mmio_hole", "xen_platform_pci", "device_model_version",
    "device_model_user", "device_model_stubdomain_seclabel", "stubdomain_memory", "dm_restrict", "claim_mode",
    "mca_caps", "msr_relaxed", "ioports", "iomem", "irqs", "pci", "pci_permissive", "pci_msitranslate",
    "pci_seize", "pci_power_mgmt", "gic_version", "vuart", "nr_spis", "disk", "vif", "vtpm", "vfb", "vkb",
    "vsnd", "vdispl", "p9", "pvcalls", "channel", "usbctrl", "usbdev", "tee", "seclabel", "init_seclabel",
    "iommu_memkb", "max_event_channels", "bootloader_restrict", "bootloader_user", "bios", "ms_vm_genid",
    "vscsi", "trap_unmapped_accesses", "llc_colors",
})
#: Guest types whose kernel libxl loads in the xl process itself (xl.cfg(5), "type").
DIRECT_TYPES = frozenset({"pv", "pvh"})

_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r]+) | (?P<comment>\#[^\n]*) | (?P<nl>\n) | (?P<semi>;)
  | (?P<ident>[a-z][_0-9a-z]*) | (?P<number>[0-9][0-9a-fx]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*" | '(?:[^'\\\n]|\\.)*')
  | (?P<op>\+=|=) | (?P<punct>[\[\],])
""", re.VERBOSE)
_ESCAPES = {"\\": "\\", '"': '"', "'": "'"}


@dataclass(frozen=True)
class Setting:
    """One statement: ``key op value``; ``text`` is the value when it is one quoted string."""

    key: str
    op: str
    text: str | None
    line: int


@dataclass(frozen=True)
class XlBoot:
    """What an xl config boots: the measured inputs of the gate."""

    kernel: str
    ramdisk: str | None
    cmdline: str | None


def _tokens(text: str, where: str) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    pos, line = 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise InputError(f"{where}: line {line}: xl config syntax the gate cannot read: {text[pos:pos + 20]!r}")
        kind = m.lastgroup
        assert kind is not None
        if kind not in ("ws", "comment"):
            out.append((kind, m.group(), line))
        if kind == "nl":
            line += 1
        pos = m.end()
    return out


def _unquote(tok: str, where: str) -> str:
    """Decode a quoted xl string. Only \\\\, \\" and \\' are decoded; any other escape is
    refused, so the measured value is always the one xl passes on."""
    body, out, i = tok[1:-1], [], 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            nxt = body[i + 1]
            if nxt not in _ESCAPES:
                raise InputError(f"{where}: escape \\{nxt} in a boot setting is not supported")
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def quote(value: str) -> str:
    """``value`` as one double-quoted xl string (the inverse of the hook's decoding)."""
    if "\n" in value or "\0" in value:
        raise InputError("an xl string cannot hold a newline or a NUL byte")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def settings(text: str, where: str = "xl config") -> list[Setting]:
    """Every statement of the config, in order. Text the tokenizer cannot read, or a
    statement without a complete value, raises InputError."""
    toks = _tokens(text, where)
    out: list[Setting] = []
    i = 0
    while i < len(toks):
        kind, val, line = toks[i]
        if kind in ("nl", "semi"):
            i += 1
            continue
        if kind != "ident" or i + 1 >= len(toks) or toks[i + 1][0] != "op":
            raise InputError(f"{where}: line {line}: expected KEY = VALUE at {val!r}")
        key, op = val, toks[i + 1][1]
        i += 2
        start, depth = i, 0
        while i < len(toks) and (depth or toks[i][0] not in ("nl", "semi")):
            if toks[i][1] == "[":
                depth += 1
            elif toks[i][1] == "]":
                depth -= 1
                if depth < 0:
                    raise InputError(f"{where}: line {line}: unbalanced ']' in {key}")
            i += 1
        value = [t for t in toks[start:i] if t[0] != "nl"]
        if depth or not value:
            raise InputError(f"{where}: line {line}: {key} has no complete value")
        single = value[0][1] if len(value) == 1 and value[0][0] == "string" else None
        out.append(Setting(key, op, _unquote(single, f"{where}: {key}") if single is not None
                           and key in BOOT_KEYS | {"type", "builder"} else single, line))
    return out


def parse_xl_config(text: str, where: str = "xl config") -> dict[str, str]:
    """The boot keys (and ``type``/``builder``) an xl config sets, last assignment winning.
    Fails closed on a boot key that is not one plain quoted string."""
    out: dict[str, str] = {}
    for s in settings(text, where):
        if s.key in BOOT_KEYS or s.key in ("type", "builder"):
            if s.op != "=" or s.text is None:
                raise InputError(f"{where}: line {s.line}: {s.key} must be one quoted string for a measured launch")
            out[s.key] = s.text
    return out


def check_config(text: str, where: str = "xl config") -> XlBoot:
    """What the config boots, or InputError when xl would load anything the gate does not measure."""
    for s in settings(text, where):
        if s.key in CODE_KEYS:
            raise InputError(f"{where}: line {s.line}: {s.key} makes xl load code or boot data the gate does not "
                             "measure; a measured launch boots only kernel, ramdisk and cmdline")
        if s.key not in BOOT_KEYS and s.key not in OTHER_KEYS:
            raise InputError(f"{where}: line {s.line}: unknown key {s.key!r}; the gate refuses what it cannot "
                             "classify (xl.cfg(5))")
    keys = parse_xl_config(text, where)
    kind = keys.get("type") or ("hvm" if keys.get("builder") == "hvm" else "pv")
    if kind not in DIRECT_TYPES:
        raise InputError(f"{where}: type {kind!r}: the device model would open the kernel again by path; a "
                         "measured xl launch needs a pv or pvh guest")
    if "kernel" not in keys:
        raise InputError(f"{where}: no kernel= line; nothing to measure")
    cmdline = keys.get("cmdline")
    if cmdline is None and ("extra" in keys or "root" in keys):
        # xl.cfg(5): without cmdline=, the kernel gets "root=<root> <extra>".
        cmdline = " ".join(x for x in (f"root={keys['root']}" if "root" in keys else "", keys.get("extra", "")) if x)
    return XlBoot(keys["kernel"], keys.get("ramdisk"), cmdline)


def with_extras(config: bytes, extras: tuple[str, ...]) -> bytes:
    """The text xl reads for ``xl create CONFIG VAR=VALUE...``: each extra is one more line."""
    if not extras:
        return config
    return config + b"\n" + "\n".join(extras).encode() + b"\n"


def sealed_text(checked: bytes, boot: XlBoot, kernel: str, ramdisk: str | None) -> bytes:
    """The config xl gets: the checked bytes, then the sealed copies and the measured command
    line. Parsed again here: it must boot exactly ``kernel``, ``ramdisk`` and ``boot.cmdline``."""
    lines = [f"kernel = {quote(kernel)}"]
    if ramdisk is not None:
        lines.append(f"ramdisk = {quote(ramdisk)}")
    if boot.cmdline is not None:
        lines.append(f"cmdline = {quote(boot.cmdline)}")
    out = checked + b"\n# tboot-py: the measured copies\n" + "\n".join(lines).encode() + b"\n"
    again = check_config(out.decode(), "sealed xl config")
    if again != XlBoot(kernel, ramdisk, boot.cmdline):
        raise InputError("the sealed xl config does not read back as the measured boot")
    return out
