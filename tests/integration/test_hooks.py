"""The launch hooks (xl create wrapper, libvirt qemu hook, systemd unit) drive the real gate
against a real swtpm. The `xl` on PATH is a recording stand-in: Xen's toolstack needs a
running hypervisor, which a test machine does not have."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tboot_py.tpm.swtpm import Swtpm
from tests.conftest import run_cli

pytestmark = pytest.mark.integration

HOOKS = Path(__file__).resolve().parents[2] / "tboot_py" / "launch" / "hooks"


@pytest.fixture
def env(swtpm: Swtpm, tmp_path: Path) -> dict[str, str]:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"domU kernel " * 3000)
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(b"domU initrd " * 2000)
    policy = tmp_path / "policy.toml"
    for argv in (["policy", "init", str(policy)],
                 ["policy", "add", str(policy), "--component", "kernel", "--file", str(kernel)],
                 ["policy", "add", str(policy), "--component", "initrd", "--file", str(initrd)],
                 ["policy", "add", str(policy), "--component", "cmdline", "--cmdline", "root=/dev/xvda1 ro quiet"],
                 ["policy", "keygen", "-o", str(tmp_path / "k")],
                 ["policy", "sign", str(policy), "--key", str(tmp_path / "k"), "-o", str(tmp_path / "p.json")]):
        r = run_cli(*argv)
        assert r.rc == 0, r.err
    conf = tmp_path / "gate.toml"
    conf.write_text(f'policy = "{tmp_path / "p.json"}"\ntrust_keys = ["{tmp_path / "k.pub"}"]\n'
                    f'tpm = "{swtpm.tcti}"\nstate = "{tmp_path / "state"}"\n')
    bindir = tmp_path / "bin"
    bindir.mkdir()
    # tboot-py on PATH for the shims, and a stand-in xl that records what it was handed.
    (bindir / "tboot-py").write_text(f"#!/bin/sh\nexec {sys.executable} -m tboot_py \"$@\"\n")
    # It reads the config it is handed, as xl does, and hashes the last kernel= and ramdisk=.
    (bindir / "xl").write_text(
        "#!/bin/sh\n"
        f'echo "$@" > {tmp_path / "xl-args"}\n'
        f'cat "$2" > {tmp_path / "xl-config"}\n'
        f'env > {tmp_path / "xl-env"}\n'
        'for k in kernel ramdisk; do p=$(sed -n "s/^$k = \\"\\(.*\\)\\"$/\\1/p" "$2" | tail -n 1);'
        f' sha256sum "$p" >> {tmp_path / "xl-hashes"}; done\n')
    for f in ("tboot-py", "xl"):
        (bindir / f).chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "TBOOT_PY_GATE_CONFIG": str(conf),
            "TMP": str(tmp_path), "KERNEL": str(kernel), "INITRD": str(initrd), "PYTHONPATH": os.getcwd()}


def _xl_config(env: dict[str, str], initrd: str | None = None) -> Path:
    cfg = Path(env["TMP"]) / "guest.cfg"
    cfg.write_text(f'name = "guest"\nmemory = 512\nkernel = "{env["KERNEL"]}"\n'
                   f'ramdisk = "{initrd or env["INITRD"]}"\nroot = "/dev/xvda1 ro"\nextra = "quiet"\n')
    return cfg


def test_xl_create_wrapper_launches_measured_copies(env: dict[str, str]) -> None:
    cfg = _xl_config(env)
    p = subprocess.run([str(HOOKS / "xl-create-measured"), str(cfg)], env=env, capture_output=True, text=True,
                       timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    tmp = Path(env["TMP"])
    # xl gets one argument: the sealed copy of the config the hook checked, never the file.
    args = (tmp / "xl-args").read_text().split()
    assert args[0] == "create" and args[1].startswith("/proc/self/fd/") and len(args) == 2
    handed = (tmp / "xl-config").read_bytes()
    assert handed.startswith(cfg.read_bytes()) and b'cmdline = "root=/dev/xvda1 ro quiet"' in handed
    hashes = (tmp / "xl-hashes").read_text().split()
    assert hashes[0] == hashlib.sha256(Path(env["KERNEL"]).read_bytes()).hexdigest()
    assert hashes[1].startswith("/proc/self/fd/")
    assert hashes[2] == hashlib.sha256(Path(env["INITRD"]).read_bytes()).hexdigest()
    # A clean environment: the caller's TBOOT_PY_* settings do not reach xl.
    xl_env = (tmp / "xl-env").read_text()
    assert "TBOOT_PY_GATE_CONFIG" not in xl_env and "KERNEL=" not in xl_env.replace("TBOOT_PY_KERNEL=", "")
    record = [json.loads(x) for x in (tmp / "state" / "audit.jsonl").read_text().splitlines()][-1]
    assert record["launch"]["argv"] == ["xl", "create", args[1]]
    assert record["launch"]["env"]["TBOOT_PY_XL_CONFIG"] == args[1]
    assert record["launch"]["generated"] == {"xl_config": hashlib.sha256(handed).hexdigest()}


def test_xl_config_rewritten_after_the_check_changes_nothing(env: dict[str, str]) -> None:
    """xl used to re-read the config by path after the hook checked it: a config swapped in
    between could boot anything. xl now reads the sealed copy; the swap is never seen."""
    cfg = _xl_config(env)
    original = cfg.read_bytes()
    tmp = Path(env["TMP"])
    # The policy check is the slow part; swap the file while the gate runs, then check xl's view.
    p = subprocess.Popen([str(HOOKS / "xl-create-measured"), str(cfg)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    cfg.write_text('kernel = "/evil/vmlinuz"\nbootloader = "pygrub"\n')
    _out, err = p.communicate(timeout=120)
    if p.returncode == 0:
        assert (tmp / "xl-config").read_bytes().startswith(original), "xl read a config the hook did not check"
    else:
        assert not (tmp / "xl-args").exists(), err


def test_xl_create_wrapper_refuses_tampered_ramdisk(env: dict[str, str]) -> None:
    bad = Path(env["TMP"]) / "evil-initrd"
    bad.write_bytes(Path(env["INITRD"]).read_bytes() + b"\x00")
    p = subprocess.run([str(HOOKS / "xl-create-measured"), str(_xl_config(env, str(bad)))], env=env,
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 1, p.stderr
    assert not (Path(env["TMP"]) / "xl-args").exists(), "xl ran although the gate denied"
    assert "initrd" in p.stderr


def _domain_xml(env: dict[str, str], kernel: str) -> str:
    return (f"<domain type='kvm'><name>guest</name><os><type>hvm</type><kernel>{kernel}</kernel>"
            f"<initrd>{env['INITRD']}</initrd><cmdline>root=/dev/xvda1 ro quiet</cmdline></os>"
            "<devices><emulator>/usr/bin/qemu-system-x86_64</emulator><rom bar='off'/></devices></domain>")


@pytest.mark.parametrize(("kernel_ok", "rc"), [(True, 0), (False, 1)])
def test_libvirt_qemu_hook(env: dict[str, str], kernel_ok: bool, rc: int) -> None:
    kernel = env["KERNEL"]
    if not kernel_ok:
        kernel = str(Path(env["TMP"]) / "other-kernel")
        Path(kernel).write_bytes(b"not the approved kernel")
    hook = HOOKS / "libvirt-qemu"
    p = subprocess.run([str(hook), "guest", "prepare", "begin", "-"], input=_domain_xml(env, kernel), env=env,
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == rc, p.stderr
    # Other operations pass through untouched.
    q = subprocess.run([str(hook), "guest", "release", "end", "-"], input=_domain_xml(env, kernel), env=env,
                       capture_output=True, text=True, timeout=60, check=False)
    assert q.returncode == 0, q.stderr


def test_libvirt_hook_denies_firmware_boot_and_bad_xml(env: dict[str, str]) -> None:
    hook = HOOKS / "libvirt-qemu"
    for xml in ("<domain><os><type>hvm</type></os></domain>", "<domain><os>",
                '<!DOCTYPE d [<!ENTITY k "/evil">]><domain><os><kernel>&k;</kernel></os></domain>'):
        p = subprocess.run([str(hook), "guest", "prepare", "begin", "-"], input=xml, env=env,
                           capture_output=True, text=True, timeout=60, check=False)
        assert p.returncode == 2, p.stderr


QEMU_NS = "xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'"
#: Domain XML that boots the measured kernel, initrd and command line, plus one more thing
#: libvirt hands QEMU that loads code or passes boot data. The hook used to read <os> only.
UNMEASURED = {
    "qemu:commandline": "<qemu:commandline><qemu:arg value='-initrd'/><qemu:arg value='/evil'/></qemu:commandline>",
    "loader": "<os-extra><loader readonly='yes' type='rom'>/evil/bios.bin</loader></os-extra>",
    "nvram": "<os-extra><nvram template='/evil/VARS.fd'>/var/lib/libvirt/qemu/nvram/g.fd</nvram></os-extra>",
    "dtb": "<os-extra><dtb>/evil/board.dtb</dtb></os-extra>",
    "acpi": "<os-extra><acpi><table type='slic'>/evil/slic.dat</table></acpi></os-extra>",
    "smbios": "<os-extra><smbios mode='host'/></os-extra>",
    "sysinfo": "<sysinfo type='fwcfg'><entry name='opt/com.example/init' file='/evil/init'/></sysinfo>",
    "rom": "<devices><interface type='user'><rom file='/evil/pxe.rom'/></interface></devices>",
    "qemu:override": "<qemu:override><qemu:device alias='ua'><qemu:frontend>"
                     "<qemu:property name='romfile' type='string' value='/evil'/></qemu:frontend></qemu:device>"
                     "</qemu:override>",
    "firmware": "<os-firmware-attr/>",
}


def _domain_with(env: dict[str, str], extra: str) -> str:
    os_extra = extra[len("<os-extra>"):-len("</os-extra>")] if extra.startswith("<os-extra>") else ""
    fw = " firmware='efi'" if extra == "<os-firmware-attr/>" else ""
    rest = "" if os_extra or fw else extra
    return (f"<domain type='kvm' {QEMU_NS}><name>guest</name><os{fw}><type>hvm</type>"
            f"<kernel>{env['KERNEL']}</kernel><initrd>{env['INITRD']}</initrd>"
            f"<cmdline>root=/dev/xvda1 ro quiet</cmdline>{os_extra}</os>{rest}"
            "<devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices></domain>")


def test_libvirt_hook_refuses_what_it_does_not_measure(env: dict[str, str]) -> None:
    hook = HOOKS / "libvirt-qemu"
    for name, extra in UNMEASURED.items():
        p = subprocess.run([str(hook), "guest", "prepare", "begin", "-"], input=_domain_with(env, extra), env=env,
                           capture_output=True, text=True, timeout=60, check=False)
        assert p.returncode == 1, (name, p.stderr)
        assert name in p.stderr, (name, p.stderr)
    # The same domain without the extra element passes: the refusal is about that element.
    ok = subprocess.run([str(hook), "guest", "prepare", "begin", "-"], input=_domain_with(env, ""), env=env,
                        capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr


def test_libvirt_hook_allows_an_element_the_policy_names(env: dict[str, str]) -> None:
    tmp = Path(env["TMP"])
    policy = tmp / "policy.toml"
    text = policy.read_text()
    policy.write_text(text.replace("version = 1\n", 'version = 1\nallow_launch = ["qemu:commandline"]\n', 1))
    assert run_cli("policy", "sign", str(policy), "--key", str(tmp / "k"), "-o", str(tmp / "p.json")).rc == 0
    hook = HOOKS / "libvirt-qemu"
    allowed = _domain_with(env, UNMEASURED["qemu:commandline"])
    p = subprocess.run([str(hook), "guest", "prepare", "begin", "-"], input=allowed, env=env,
                       capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    other = _domain_with(env, UNMEASURED["loader"])
    q = subprocess.run([str(hook), "guest", "prepare", "begin", "-"], input=other, env=env,
                       capture_output=True, text=True, timeout=60, check=False)
    assert q.returncode == 1 and "loader" in q.stderr, q.stderr


def _unit_lines(name: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (HOOKS / name).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), v.strip())
    return out


def _systemd_argv(line: str, conf: dict[str, str]) -> list[str]:
    """ExecStart= as systemd expands it (systemd.service(5), "Command lines"): ${VAR} is one
    word, $VAR is split at whitespace."""
    out: list[str] = []
    for w in shlex.split(line):
        if w.startswith("${"):
            out.append(conf[w[2:-1]])
        elif w.startswith("$"):
            out += conf[w[1:]].split()
        else:
            out.append(w)
    return out


def test_systemd_unit_launches_through_the_gate(env: dict[str, str], tmp_path: Path) -> None:
    unit = HOOKS / "tboot-py-gate@.service"
    # systemd's own parser accepts the unit (it may warn about the EnvironmentFile path only).
    v = subprocess.run(["systemd-analyze", "verify", "--man=no", f"{unit}"], capture_output=True, text=True,
                       timeout=60, check=False)
    assert "Unknown key" not in v.stderr and "Invalid" not in v.stderr, v.stderr
    lines = _unit_lines("tboot-py-gate@.service")
    assert "ExecStartPre" not in lines and "--dry-run" not in lines["ExecStart"]
    marker = tmp_path / "launched"
    start = tmp_path / "start-domain"
    start.write_text(f'#!/bin/sh\nsha256sum "$1" "$2" > {marker}\necho "$3" >> {marker}\nenv >> {marker}\n')
    start.chmod(0o755)
    conf = {"POLICY": str(tmp_path / "p.json"), "TRUST_KEY": str(tmp_path / "k.pub"),
            "TPM": next(x for x in Path(env["TBOOT_PY_GATE_CONFIG"]).read_text().split('"') if x.startswith("swtpm")),
            "STATE": str(tmp_path / "unit-state"), "KERNEL": env["KERNEL"], "INITRD": env["INITRD"],
            "CMDLINE": "root=/dev/xvda1 ro quiet", "LAUNCH": f"{start} {{kernel}} {{initrd}} {{cmdline}}"}
    # systemd puts the EnvironmentFile's variables into the gate's environment.
    # A stale copy path for a component this launch does not have must not reach the launcher.
    unit_env = {**env, **conf, "TBOOT_PY_HYPERVISOR": "/stale/xen"}
    ok = subprocess.run(_systemd_argv(lines["ExecStart"], conf), env=unit_env, capture_output=True, text=True,
                        timeout=120, check=False)
    assert ok.returncode == 0, ok.stderr
    out = marker.read_text().splitlines()
    # The launcher got the sealed copies, by fd, with exactly the measured bytes.
    assert out[0].split() == [hashlib.sha256(Path(env["KERNEL"]).read_bytes()).hexdigest(), out[0].split()[1]]
    assert out[0].split()[1].startswith("/proc/self/fd/")
    assert out[1].split()[0] == hashlib.sha256(Path(env["INITRD"]).read_bytes()).hexdigest()
    assert out[2] == "root=/dev/xvda1 ro quiet"
    launcher_env = dict(x.split("=", 1) for x in out[3:] if "=" in x)
    assert "POLICY" not in launcher_env and "KERNEL" not in launcher_env and "TBOOT_PY_HYPERVISOR" not in launcher_env
    assert launcher_env["TBOOT_PY_INITRD"].startswith("/proc/self/fd/")
    marker.unlink()
    conf["INITRD"] = str(tmp_path / "bin" / "xl")  # some other file
    bad = subprocess.run(_systemd_argv(lines["ExecStart"], conf), env={**env, **conf}, capture_output=True,
                         text=True, timeout=120, check=False)
    assert bad.returncode == 1, bad.stderr
    assert not marker.exists()
