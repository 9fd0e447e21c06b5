"""The launch hooks (xl create wrapper, libvirt qemu hook, systemd unit) drive the real gate
against a real swtpm. The `xl` on PATH is a recording stand-in: Xen's toolstack needs a
running hypervisor, which a test machine does not have."""

from __future__ import annotations

import hashlib
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
    (bindir / "xl").write_text(
        "#!/bin/sh\n"
        f'echo "$@" > {tmp_path / "xl-args"}\n'
        'for a in "$@"; do case "$a" in kernel=*|ramdisk=*) p=${a#*=}; p=${p#\\"}; p=${p%\\"};'
        f' sha256sum "$p" >> {tmp_path / "xl-hashes"};; esac; done\n')
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
    args = (Path(env["TMP"]) / "xl-args").read_text()
    assert args.startswith(f"create {cfg} ") and 'cmdline="root=/dev/xvda1 ro quiet"' in args
    hashes = (Path(env["TMP"]) / "xl-hashes").read_text().split()
    assert hashes[0] == hashlib.sha256(Path(env["KERNEL"]).read_bytes()).hexdigest()
    assert hashes[1].startswith("/proc/self/fd/")
    assert hashes[2] == hashlib.sha256(Path(env["INITRD"]).read_bytes()).hexdigest()


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
            f"<initrd>{env['INITRD']}</initrd><cmdline>root=/dev/xvda1 ro quiet</cmdline></os></domain>")


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
    for xml in ("<domain><os><type>hvm</type></os></domain>", "<domain><os>"):
        p = subprocess.run([str(hook), "guest", "prepare", "begin", "-"], input=xml, env=env,
                           capture_output=True, text=True, timeout=60, check=False)
        assert p.returncode == 2, p.stderr


def _unit_lines(name: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (HOOKS / name).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), v.strip())
    return out


def test_systemd_unit_verifies_and_its_execstartpre_gates(env: dict[str, str], tmp_path: Path) -> None:
    unit = HOOKS / "tboot-py-gate@.service"
    # systemd's own parser accepts the unit (it may warn about the EnvironmentFile path only).
    v = subprocess.run(["systemd-analyze", "verify", "--man=no", f"{unit}"], capture_output=True, text=True,
                       timeout=60, check=False)
    assert "Unknown key" not in v.stderr and "Invalid" not in v.stderr, v.stderr
    pre = _unit_lines("tboot-py-gate@.service")["ExecStartPre"]
    conf = {"POLICY": str(tmp_path / "p.json"), "TRUST_KEY": str(tmp_path / "k.pub"),
            "TPM": next(x for x in Path(env["TBOOT_PY_GATE_CONFIG"]).read_text().split('"') if x.startswith("swtpm")),
            "STATE": str(tmp_path / "unit-state"), "KERNEL": env["KERNEL"], "INITRD": env["INITRD"],
            "CMDLINE": "root=/dev/xvda1 ro quiet"}
    # systemd splits ${VAR} references into one word each (systemd.service(5), "Command lines").
    argv = [conf[w[2:-1]] if w.startswith("${") else w for w in shlex.split(pre)]
    ok = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert ok.returncode == 0, ok.stderr
    conf["INITRD"] = str(tmp_path / "bin" / "xl")  # some other file
    argv = [conf[w[2:-1]] if w.startswith("${") else w for w in shlex.split(pre)]
    bad = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 1, bad.stderr
