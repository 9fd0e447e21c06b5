"""Where measured data meets another program's syntax: the launch argv, QEMU's option
lists, the launcher's environment, and the bytes of each artifact kind. Each attack is first
shown to work against the old behaviour (or against the other program's own parsing), then
shown refused."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from _pe_synth import Sec, build_pe

from tboot_py.errors import InputError
from tboot_py.launch.handover import (
    check_command,
    clean_env,
    launch_plan,
    launcher_argv,
    qemu_modules,
)
from tboot_py.launch.sealed import seal_artifact
from tboot_py.measure import measure


@dataclass
class Copy:
    component: str
    path: str


COPIES = [Copy("hypervisor", "/proc/self/fd/3"), Copy("kernel", "/proc/self/fd/4"), Copy("initrd", "/proc/self/fd/5")]


def qemu_split(opt: str) -> list[str]:
    """QEMU's reading of a multiboot -initrd list (get_opt_value(): a single comma ends an
    item, ",," is a literal comma); confirmed against the real qemu-system-x86_64 in
    tests/integration/test_launch_syntax.py."""
    items, cur, i = [], [], 0
    while i < len(opt):
        if opt[i] == ",":
            if opt[i + 1:i + 2] == ",":
                cur.append(",")
                i += 2
                continue
            items.append("".join(cur))
            cur = []
            i += 1
            continue
        cur.append(opt[i])
        i += 1
    items.append("".join(cur))
    return items


# ---------------------------------------------------------------- placeholders

def test_an_approved_comma_used_to_add_a_boot_module() -> None:
    # The attack: an approved kernel command line with a comma, substituted inside QEMU's
    # module list as the demo used to do, becomes one more module for QEMU.
    cmdline = "console=hvc0,/boot/evil.bin"
    old = f"/proc/self/fd/4 {cmdline},/proc/self/fd/5"
    assert qemu_split(old) == ["/proc/self/fd/4 console=hvc0", "/boot/evil.bin", "/proc/self/fd/5"]
    # Now that form is refused, and {qemu_modules} keeps the command line inside its module.
    with pytest.raises(InputError, match=r"whole argument.*qemu_modules"):
        launcher_argv(["qemu", "-initrd", "{kernel} {cmdline},{initrd}"], COPIES, cmdline)
    argv = launcher_argv(["qemu", "-initrd", "{qemu_modules}"], COPIES, cmdline)
    assert qemu_split(argv[2]) == [f"/proc/self/fd/4 {cmdline}", "/proc/self/fd/5"]


@pytest.mark.parametrize("arg", [
    "--append={cmdline}", "file={initrd},if=virtio", "{kernel} {cmdline}", "x{hypervisor}",
    "cmdline=\"{cmdline}\"", "{hypervisor_cmdline} extra", "{xl_config}.cfg", "{{{kernel}}}",
])
def test_placeholders_only_as_whole_arguments(arg: str) -> None:
    with pytest.raises(InputError, match="whole argument"):
        launcher_argv(["launcher", arg], COPIES, "quiet", "console=com1")


@pytest.mark.parametrize("cmdline", ["a\0b", "-kernel /evil", "--option"])
def test_values_that_cannot_be_one_argument_are_refused(cmdline: str) -> None:
    with pytest.raises(InputError, match=r"NUL|starts with '-'"):
        launcher_argv(["qemu", "-append", "{cmdline}"], COPIES, cmdline)
    with pytest.raises(InputError):
        launcher_argv(["qemu", "-initrd", "{qemu_modules}"], COPIES, cmdline)


@pytest.mark.parametrize("cmdline", ['quiet "init=/bin/sh"', "a b  c", "x='y z'", "{initrd}", "a;b|c$(id)"])
def test_spaces_quotes_and_braces_reach_the_launcher_as_one_argument(cmdline: str) -> None:
    argv = launcher_argv(["qemu", "-append", "{cmdline}", "-initrd", "{qemu_modules}"], COPIES, cmdline)
    assert argv[2] == cmdline
    assert qemu_split(argv[4]) == [f"/proc/self/fd/4 {cmdline}", "/proc/self/fd/5"]


def test_qemu_modules_without_initrd_or_cmdline() -> None:
    assert qemu_modules("/proc/self/fd/4", None, None) == "/proc/self/fd/4"
    assert qemu_modules("/proc/self/fd/4", "a,b", None) == "/proc/self/fd/4 a,,b"
    with pytest.raises(InputError, match="no kernel"):
        launcher_argv(["q", "{qemu_modules}"], [Copy("initrd", "/proc/self/fd/5")], None)
    with pytest.raises(InputError, match="no cmdline"):
        launcher_argv(["q", "{cmdline}"], COPIES, None)


# ---------------------------------------------------------------- original paths

@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    p = tmp_path / "vmlinuz"
    p.write_bytes(b"kernel bytes")
    return p


@pytest.mark.parametrize("form", ["path", "relative", "symlink", "hardlink", "file=", "drive", "colon"])
def test_a_command_naming_the_original_file_is_refused(tmp_path: Path, artifact: Path, form: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The launcher would open the unmeasured file by path (it may change after the gate
    read it); under any spelling, the command is refused."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link").symlink_to(artifact)
    os.link(artifact, tmp_path / "hard")
    arg = {"path": str(artifact), "relative": "./vmlinuz", "symlink": str(tmp_path / "link"),
           "hardlink": "hard", "file=": f"file={artifact}", "drive": f"file={artifact},if=virtio,format=raw",
           "colon": f"vmlinuz:{tmp_path / 'link'}"}[form]
    with pytest.raises(InputError, match="original kernel"):
        check_command(["true", "-kernel", arg], {"kernel": artifact}, None)
    # Another file is fine.
    other = tmp_path / "other"
    other.write_bytes(b"x")
    check_command(["true", "-drive", f"file={other}"], {"kernel": artifact}, None)


# ---------------------------------------------------------------- environment

def test_launcher_environment_is_clean() -> None:
    caller = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C", "TERM": "dumb",
              # A stale copy path for a component this launch does not have would look measured.
              "TBOOT_PY_INITRD": "/tmp/evil-initrd", "TBOOT_PY_GATE_CONFIG": "/tmp/g.toml",
              "LD_PRELOAD": "/tmp/evil.so", "QEMU_AUDIO_DRV": "none", "KERNEL": "/boot/vmlinuz"}
    env = clean_env(caller, [Copy("kernel", "/proc/self/fd/4")])
    assert env == {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C", "TERM": "dumb",
                   "TBOOT_PY_KERNEL": "/proc/self/fd/4"}
    assert "PATH" in clean_env({}, [])


def test_plan_resolves_the_launcher_and_records_argv_and_env() -> None:
    plan = launch_plan(["sh", "-c", "exit 0", "sh", "{kernel}"], COPIES, None,
                       environ={"PATH": "/usr/bin:/bin", "TBOOT_PY_HYPERVISOR": "/stale"})
    assert os.path.isabs(plan.executable) and plan.executable.endswith("/sh")
    doc = plan.as_json()
    assert doc["argv"] == ["sh", "-c", "exit 0", "sh", "/proc/self/fd/4"]
    assert doc["env"] == {"PATH": "/usr/bin:/bin", "TBOOT_PY_HYPERVISOR": "/proc/self/fd/3",
                          "TBOOT_PY_KERNEL": "/proc/self/fd/4", "TBOOT_PY_INITRD": "/proc/self/fd/5"}
    assert doc["generated"] == {}
    with pytest.raises(InputError, match="not found"):
        launch_plan(["no-such-launcher-xyz"], COPIES, None, environ={"PATH": "/usr/bin"})


# ---------------------------------------------------------------- bytes per kind

def _gzip_with_hidden_payload(image: bytes, payload: bytes) -> bytes:
    """A valid gzip member (RFC 1952) whose FEXTRA and FCOMMENT fields carry ``payload``:
    decompression skips both, so the module hash never sees them."""
    flg = 0x04 | 0x10  # FEXTRA | FCOMMENT
    head = b"\x1f\x8b\x08" + bytes([flg]) + b"\0\0\0\0\0\xff"
    extra = b"TP" + struct.pack("<H", len(payload)) + payload
    body = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = body.compress(image) + body.flush()
    comment = payload.replace(b"\0", b"\1") + b"\0"
    return (head + struct.pack("<H", len(extra)) + extra + comment + data
            + struct.pack("<II", zlib.crc32(image), len(image) & 0xFFFFFFFF))


def test_gzip_module_is_handed_over_gunzipped(tmp_path: Path) -> None:
    image = b"\x7fELF multiboot image " * 5000
    payload = b"\x90" * 64 + b"unmeasured code"
    plain, evil = tmp_path / "xen.gz", tmp_path / "xen-evil.gz"
    plain.write_bytes(gzip.compress(image))
    evil.write_bytes(_gzip_with_hidden_payload(image, payload))
    # The attack: both files have the same module hash, yet one carries extra bytes.
    m1 = measure(plain, kind="tboot-module", cmdline="")
    m2 = measure(evil, kind="tboot-module", cmdline="")
    assert m1.digests == m2.digests and payload in evil.read_bytes()
    # The gate's copy of either is the gunzipped image: the bytes the hash covers, no more.
    for f in (plain, evil):
        c = seal_artifact("hypervisor", f, tboot_module=True)
        try:
            handed = os.pread(c.fd, c.size + 1, 0)
            assert c.gunzipped and handed == image and payload not in handed
            assert measure(c.fd, kind="tboot-module", cmdline="").digests == m1.digests
        finally:
            c.close()
    # Outside the tboot mapping the file is measured as a file: every byte, handed as is.
    c = seal_artifact("hypervisor", evil, tboot_module=False)
    try:
        assert os.pread(c.fd, c.size + 1, 0) == evil.read_bytes() and not c.gunzipped
    finally:
        c.close()


def test_gzip_module_with_trailing_bytes_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "xen.gz"
    f.write_bytes(gzip.compress(b"image") + b"trailing code")
    with pytest.raises(InputError, match="after the last gzip member"):
        seal_artifact("hypervisor", f, tboot_module=True)


def test_pe_padding_outside_the_digest_must_be_zero(tmp_path: Path) -> None:
    # A gap of 0x200 bytes between the headers and .text that no section covers (Authenticode
    # step 6 hashes from SUM_OF_BYTES_HASHED on, which lies past it).
    pe = build_pe([Sec(b".text", b"\xc3" * 0x90, pointer=0x400), Sec(b".data", b"d" * 0x40)])
    good = tmp_path / "good.efi"
    good.write_bytes(pe.data)
    seal_artifact("kernel", good, tboot_module=False).close()
    # The attack: code in the padding after .text changes no Authenticode digest.
    assert pe.size_of_headers == 0x200 and sorted(pe.sections)[0][0] == 0x400
    evil_bytes = bytearray(pe.data)
    evil_bytes[0x300:0x310] = b"\xcc" * 16
    evil = tmp_path / "evil.efi"
    evil.write_bytes(bytes(evil_bytes))
    assert measure(good, kind="pe").digests == measure(evil, kind="pe").digests
    assert hashlib.sha256(good.read_bytes()).digest() != hashlib.sha256(evil.read_bytes()).digest()
    with pytest.raises(InputError, match="outside the Authenticode digest"):
        seal_artifact("kernel", evil, tboot_module=False)
