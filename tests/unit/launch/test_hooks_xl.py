"""The xl-create hook reads an xl domain config (xl.cfg(5)) as xl itself does: every
kernel, ramdisk and command line that xl would boot must be measured and handed to xl as
the gate's sealed copy, or the hook must refuse."""

from __future__ import annotations

from pathlib import Path

import pytest

from tboot_py.errors import InputError
from tboot_py.launch.hooks.run import parse_xl_config, xl_create


@pytest.fixture
def gate_conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    conf = tmp_path / "gate.toml"
    conf.write_text(f'policy = "{tmp_path / "p.json"}"\ntpm = "swtpm:port=1"\nstate = "{tmp_path / "s"}"\n')
    monkeypatch.setenv("TBOOT_PY_GATE_CONFIG", str(conf))
    return conf


def _run(tmp_path: Path, text: str, *extra: str) -> tuple[list[str], list[str]]:
    """(gate options before --, the xl command after --)."""
    cfg = tmp_path / "guest.cfg"
    cfg.write_text(text)
    argv = xl_create([str(cfg), *extra])
    i = argv.index("--")
    return argv[:i], argv[i + 1:]


def _opt(gate: list[str], name: str) -> str | None:
    return gate[gate.index(name) + 1] if name in gate else None


def test_double_quoted_config(tmp_path: Path, gate_conf: Path) -> None:
    gate, xl = _run(tmp_path, 'name = "g"\nkernel = "/b/vmlinuz"\nramdisk = "/b/initrd"\n'
                              'root = "/dev/xvda1 ro"\nextra = "quiet"  # comment\n')
    assert _opt(gate, "--kernel") == "/b/vmlinuz" and _opt(gate, "--initrd") == "/b/initrd"
    assert _opt(gate, "--cmdline") == "root=/dev/xvda1 ro quiet"
    assert xl[-3:] == ['kernel="{kernel}"', 'ramdisk="{initrd}"', 'cmdline="root=/dev/xvda1 ro quiet"']


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
    gate, xl = _run(tmp_path, text)
    # The ramdisk and command line xl boots must be the measured ones, never the config's own.
    assert _opt(gate, "--initrd") == "/evil/initrd"
    assert _opt(gate, "--cmdline") == "init=/bin/sh"
    assert 'ramdisk="{initrd}"' in xl and 'cmdline="init=/bin/sh"' in xl


def test_command_line_overrides_are_read_like_the_config(tmp_path: Path, gate_conf: Path) -> None:
    gate, xl = _run(tmp_path, 'kernel = "/b/vmlinuz"\n', "ramdisk='/evil/initrd'")
    assert _opt(gate, "--initrd") == "/evil/initrd"
    assert xl.index('ramdisk="{initrd}"') > xl.index("ramdisk='/evil/initrd'")  # the gate's copy wins


def test_escapes_are_measured_as_xl_decodes_them(tmp_path: Path, gate_conf: Path) -> None:
    gate, xl = _run(tmp_path, 'kernel = "/b/vmlinuz"\ncmdline = "a=\\"x y\\" b"\n')
    assert _opt(gate, "--cmdline") == 'a="x y" b'
    assert xl[-1] == 'cmdline="a=\\"x y\\" b"'


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


def test_parse_xl_config_keeps_the_last_assignment() -> None:
    assert parse_xl_config('kernel="/a"\nkernel = \'/b\'\nmemory = 512\n') == {"kernel": "/b"}
