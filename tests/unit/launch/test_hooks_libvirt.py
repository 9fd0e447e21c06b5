"""The libvirt hook reads the whole domain XML (libvirt's formatdomain): every element
through which libvirt would hand QEMU code or boot data the gate did not measure is named,
so the gate refuses it unless the policy allows that name."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tboot_py.errors import InputError
from tboot_py.launch.hooks.run import libvirt_qemu, libvirt_unmeasured

NS = "xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0' xmlns:xen='http://libvirt.org/schemas/domain/xen/1.0'"


def _dom(os_extra: str = "", rest: str = "", os_attrs: str = "") -> str:
    return (f"<domain type='kvm' {NS}><name>g</name><os{os_attrs}><type arch='x86_64' machine='q35'>hvm</type>"
            "<kernel>/b/vmlinuz</kernel><initrd>/b/initrd</initrd><cmdline>quiet</cmdline>"
            f"{os_extra}<boot dev='hd'/><bootmenu enable='no'/></os>{rest}"
            "<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>"
            "<disk type='file' device='disk'><source file='/var/lib/g.qcow2'/><target dev='vda'/></disk>"
            "<interface type='network'><source network='default'/><rom bar='off'/></interface>"
            "</devices></domain>")


def test_a_plain_direct_kernel_boot_needs_nothing_allowed() -> None:
    assert libvirt_unmeasured(ET.fromstring(_dom())) == []


@pytest.mark.parametrize(("xml", "name"), [
    (_dom(rest="<qemu:commandline><qemu:arg value='-fw_cfg'/><qemu:arg value='name=opt/x,file=/evil'/>"
               "</qemu:commandline>"), "qemu:commandline"),
    (_dom(rest="<qemu:override><qemu:device alias='net0'/></qemu:override>"), "qemu:override"),
    (_dom(rest="<qemu:capabilities><qemu:del capability='blockdev'/></qemu:capabilities>"), "qemu:capabilities"),
    (_dom(rest="<xen:commandline><xen:arg value='-option-rom'/></xen:commandline>"), "xen:commandline"),
    (_dom("<loader readonly='yes' type='pflash'>/evil/OVMF_CODE.fd</loader>"), "loader"),
    (_dom("<nvram template='/evil/OVMF_VARS.fd'/>"), "nvram"),
    (_dom(os_attrs=" firmware='efi'"), "firmware"),
    (_dom("<firmware><feature enabled='no' name='secure-boot'/></firmware>"), "firmware"),
    (_dom("<dtb>/evil/guest.dtb</dtb>"), "dtb"),
    (_dom("<acpi><table type='slic'>/evil/slic.dat</table></acpi>"), "acpi"),
    (_dom("<smbios mode='host'/>"), "smbios"),
    (_dom(rest="<sysinfo type='fwcfg'><entry name='opt/com.coreos/config' file='/evil/ign'/></sysinfo>"),
     "sysinfo"),
    # systemd in the guest reads kernel command line additions from SMBIOS type 11 strings.
    (_dom(rest="<sysinfo type='smbios'><oemStrings><entry>io.systemd.stub.kernel-cmdline-extra=init=/bin/sh"
               "</entry></oemStrings></sysinfo>"), "sysinfo"),
    (_dom(rest="<devices><hostdev mode='subsystem' type='pci'><rom file='/evil/vbios.rom'/></hostdev></devices>"),
     "rom"),
])
def test_unmeasured_elements_are_named(xml: str, name: str) -> None:
    assert name in libvirt_unmeasured(ET.fromstring(xml))


@pytest.fixture
def gate_conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    conf = tmp_path / "gate.toml"
    conf.write_text(f'policy = "{tmp_path / "p.json"}"\ntpm = "swtpm:port=1"\nstate = "{tmp_path / "s"}"\n')
    monkeypatch.setenv("TBOOT_PY_GATE_CONFIG", str(conf))
    return conf


def test_the_request_carries_what_must_be_allowed(gate_conf: Path) -> None:
    req = libvirt_qemu(["g", "prepare", "begin", "-"], _dom("<dtb>/evil.dtb</dtb>"))
    assert req is not None and req.dry_run and req.allow_needed == ("dtb",)
    assert (req.kernel, req.initrd, req.cmdline) == (Path("/b/vmlinuz"), Path("/b/initrd"), "quiet")
    assert libvirt_qemu(["g", "release", "end", "-"], _dom()) is None


@pytest.mark.parametrize("xml", [
    _dom("<kernel>/evil/vmlinuz</kernel>"),  # which one would libvirt use?
    _dom("<cmdline>init=/bin/sh</cmdline>"),
    "<!DOCTYPE domain [<!ENTITY k SYSTEM 'file:///etc/passwd'>]><domain><os><kernel>&k;</kernel></os></domain>",
    "<domain><os><type>hvm</type></os></domain>",
])
def test_ambiguous_or_firmware_boot_domains_are_refused(gate_conf: Path, xml: str) -> None:
    with pytest.raises(InputError):
        libvirt_qemu(["g", "prepare", "begin", "-"], xml)
