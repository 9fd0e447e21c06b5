"""The xl-create hook reads an xl domain config (xl.cfg(5)) as xl itself does: every
kernel, ramdisk and command line that xl would boot must be measured and handed to xl as
the gate's sealed copy, or the hook must refuse. xl gets a sealed copy of the very bytes
the hook checked (``xl create {xl_config}``), never the file again."""

from __future__ import annotations

from pathlib import Path

import pytest

from tboot_py.errors import InputError
from tboot_py.launch import xl
from tboot_py.launch.gate import GateRequest
from tboot_py.launch.hooks.run import parse_xl_config, xl_create


@pytest.fixture
def gate_conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    conf = tmp_path / "gate.toml"
    conf.write_text(f'policy = "{tmp_path / "p.json"}"\ntpm = "swtpm:port=1"\nstate = "{tmp_path / "s"}"\n')
    monkeypatch.setenv("TBOOT_PY_GATE_CONFIG", str(conf))
    return conf


def _run(tmp_path: Path, text: str, *extra: str) -> GateRequest:
    cfg = tmp_path / "guest.cfg"
    cfg.write_text(text)
    return xl_create([str(cfg), *extra])


def _booted(req: GateRequest) -> xl.XlBoot:
    """What xl boots from the sealed config the gate would hand it."""
    assert req.xl_config is not None and req.kernel is not None
    boot = xl.check_config(req.xl_config.decode())
    sealed = xl.sealed_text(req.xl_config, boot, "/proc/self/fd/7", "/proc/self/fd/8" if req.initrd else None)
    return xl.check_config(sealed.decode())


def test_double_quoted_config(tmp_path: Path, gate_conf: Path) -> None:
    req = _run(tmp_path, 'name = "g"\nkernel = "/b/vmlinuz"\nramdisk = "/b/initrd"\n'
                         'root = "/dev/xvda1 ro"\nextra = "quiet"  # comment\n')
    assert (req.kernel, req.initrd, req.cmdline) == (Path("/b/vmlinuz"), Path("/b/initrd"), "root=/dev/xvda1 ro quiet")
    assert req.command == ("xl", "create", "{xl_config}") and not req.dry_run
    assert _booted(req) == xl.XlBoot("/proc/self/fd/7", "/proc/self/fd/8", "root=/dev/xvda1 ro quiet")


@pytest.mark.parametrize("text", [
    # xl accepts single-quoted strings ...
    "kernel = '/b/vmlinuz'\nramdisk = '/evil/initrd'\ncmdline = 'init=/bin/sh'\n",
    # ... and ';' between statements on one line.
    'kernel = "/b/vmlinuz"\nname = "g"; ramdisk = "/evil/initrd"; cmdline = "init=/bin/sh"\n',
    # ... and no spaces, and a list spanning lines before them.
    'disk = [ "phy:/dev/vg/g,xvda,w",\n  "file:/x.iso,xvdc:cdrom,r" ]\nkernel="/b/vmlinuz"\n'
    "ramdisk='/evil/initrd'\ncmdline='init=/bin/sh'\n",
])
def test_every_ramdisk_and_cmdline_xl_would_use_is_measured(tmp_path: Path, gate_conf: Path, text: str) -> None:
    req = _run(tmp_path, text)
    # The ramdisk and command line xl boots must be the measured ones, never the config's own.
    assert req.initrd == Path("/evil/initrd") and req.cmdline == "init=/bin/sh"
    assert _booted(req) == xl.XlBoot("/proc/self/fd/7", "/proc/self/fd/8", "init=/bin/sh")


def test_command_line_overrides_are_read_like_the_config(tmp_path: Path, gate_conf: Path) -> None:
    req = _run(tmp_path, 'kernel = "/b/vmlinuz"\n', "ramdisk='/evil/initrd'")
    assert req.initrd == Path("/evil/initrd")
    assert req.xl_config is not None and req.xl_config.endswith(b"ramdisk='/evil/initrd'\n")
    assert _booted(req).ramdisk == "/proc/self/fd/8"  # the gate's copy wins


def test_escapes_are_measured_as_xl_decodes_them(tmp_path: Path, gate_conf: Path) -> None:
    req = _run(tmp_path, 'kernel = "/b/vmlinuz"\ncmdline = "a=\\"x y\\" b"\n')
    assert req.cmdline == 'a="x y" b'
    assert _booted(req).cmdline == 'a="x y" b'


@pytest.mark.parametrize("text", [
    'kernel = "/b/vmlinuz"\nramdisk = "/a" "/b"\n',  # not one value
    'kernel = "/b/vmlinuz"\ncmdline = "unterminated\n',
    'kernel = "/b/vmlinuz"\ncmdline = "x\\ny"\n',  # an escape the hook does not decode
    'kernel = "/b/vmlinuz"\nramdisk = ["/a"]\n',
    'kernel = "/b/vmlinuz"\nramdisk += "/a"\n',
    'kernel = "/b/vmlinuz"\nbootloader = "pygrub"\n',  # the guest's disk picks the kernel
    'kernel = "/b/vmlinuz"\nRamdisk = "/a"\n',
])
def test_configs_the_hook_cannot_read_exactly_are_refused(tmp_path: Path, gate_conf: Path, text: str) -> None:
    with pytest.raises(InputError):
        _run(tmp_path, text)


@pytest.mark.parametrize(("line", "why"), [
    # Each key makes xl, libxl or the device model load code or boot data the gate never saw
    # (xl.cfg(5)); an attacker who can write the config would otherwise run it unmeasured.
    ('bootloader_args = ["--kernel=/evil"]', "bootloader_args"),
    ('firmware = "/evil/pvh-firmware"', "firmware"),
    ('pvshim = 1', "pvshim"),
    ('pvshim_path = "/evil/shim"', "pvshim_path"),
    ('pvshim_cmdline = "init=/bin/sh"', "pvshim_cmdline"),
    ('device_model_override = "/evil/qemu"', "device_model_override"),
    ('device_model_args = ["-kernel", "/evil"]', "device_model_args"),
    ('device_model_args_pv = ["-option-rom", "/evil"]', "device_model_args_pv"),
    ('device_model_args_hvm = ["-bios", "/evil"]', "device_model_args_hvm"),
    ('device_model_stubdomain_override = 1', "device_model_stubdomain_override"),
    ('stubdomain_kernel = "/evil"', "stubdomain_kernel"),
    ('acpi_firmware = "/evil/ssdt.aml"', "acpi_firmware"),
    ('smbios_firmware = "/evil/smbios.bin"', "smbios_firmware"),
    ('bios_path_override = "/evil/rom"', "bios_path_override"),
    ('device_tree = "/evil/partial.dtb"', "device_tree"),
    ('future_loader = "/evil"', "unknown key"),
    ('type = "hvm"', "device model"),
    ('builder = "hvm"', "device model"),
])
def test_code_loading_keys_are_refused(tmp_path: Path, gate_conf: Path, line: str, why: str) -> None:
    with pytest.raises(InputError, match=why):
        _run(tmp_path, f'kernel = "/b/vmlinuz"\n{line}\n')
    # ... also when they come as a VAR=VALUE override on the xl command line.
    with pytest.raises(InputError, match=why):
        _run(tmp_path, 'kernel = "/b/vmlinuz"\n', line)


def test_pvh_and_ordinary_keys_pass(tmp_path: Path, gate_conf: Path) -> None:
    req = _run(tmp_path, 'type = "pvh"\nname = "g"\nmemory = 512\nvcpus = 2\nvif = ["bridge=xenbr0"]\n'
                         'disk = ["phy:/dev/vg/g,xvda,w"]\non_reboot = "destroy"\nkernel = "/b/vmlinuz"\n')
    assert req.kernel == Path("/b/vmlinuz") and req.cmdline is None


def test_sealed_config_is_the_checked_bytes_then_the_copies() -> None:
    text = b'kernel = "/b/vmlinuz"\n# trailing comment without newline'
    boot = xl.check_config(text.decode())
    sealed = xl.sealed_text(text, boot, "/proc/self/fd/3", None)
    assert sealed.startswith(text + b"\n")
    assert xl.check_config(sealed.decode()) == xl.XlBoot("/proc/self/fd/3", None, None)
    # A measured command line is written back in a form xl reads as exactly that string.
    evil = xl.XlBoot("/b/vmlinuz", None, 'x" ramdisk="/evil" y=\\"')
    again = xl.check_config(xl.sealed_text(text, evil, "/proc/self/fd/3", None).decode())
    assert again.cmdline == evil.cmdline and again.ramdisk is None


def test_parse_xl_config_keeps_the_last_assignment() -> None:
    assert parse_xl_config('kernel="/a"\nkernel = \'/b\'\nmemory = 512\n') == {"kernel": "/b"}
