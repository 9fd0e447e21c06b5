"""fetch_all: the extracted Debian artifacts are what the demo and the boot tests assume.

Oracles: the formats themselves (ELF, multiboot, PE, bzImage headers), gzip, dpkg-deb's
view of the downloaded packages and osslsigncode's view of the kernel signatures.
"""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
from pathlib import Path

import pytest

from tboot_py._artifacts import Artifacts, fetch_all, load, main

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def artifacts() -> Artifacts:
    return fetch_all()


def test_xen_images(artifacts: Artifacts) -> None:
    elf = artifacts.xen_elf.read_bytes()
    assert gzip.decompress(artifacts.xen_gz.read_bytes()) == elf
    assert elf[:4] == b"\x7fELF"
    # Multiboot(1) header magic within the first 8 KiB, Multiboot2 within 32 KiB, both 4/8-aligned.
    mb1, mb2 = elf.find(struct.pack("<I", 0x1BADB002)), elf.find(struct.pack("<I", 0xE85250D6))
    assert 0 <= mb1 < 8192 and mb1 % 4 == 0
    assert 0 <= mb2 < 32768 and mb2 % 8 == 0
    efi = artifacts.xen_efi.read_bytes()
    (pe_off,) = struct.unpack_from("<I", efi, 0x3C)
    assert efi[:2] == b"MZ" and efi[pe_off:pe_off + 4] == b"PE\0\0"
    assert artifacts.xen_version.startswith("4.17")


@pytest.mark.parametrize("which", ["dom0", "cloud"])
def test_kernels_are_signed_bzimages(artifacts: Artifacts, which: str) -> None:
    path = artifacts.vmlinuz if which == "dom0" else artifacts.vmlinuz_cloud
    version = artifacts.kernel_version if which == "dom0" else artifacts.kernel_version_cloud
    assert version.endswith("-cloud-amd64") == (which == "cloud")
    k = path.read_bytes()
    # x86 boot protocol: "HdrS" at 0x202; kernel_version string at 0x200 + the word at 0x20E.
    assert k[:2] == b"MZ" and k[0x202:0x206] == b"HdrS"
    (ver_off,) = struct.unpack_from("<H", k, 0x20E)
    assert k[0x200 + ver_off:].split(b" ", 1)[0].decode() == version
    r = subprocess.run(["osslsigncode", "verify", "-in", str(path)], capture_output=True, text=True, timeout=120,
                       check=False)
    assert "Debian Secure Boot Signer" in r.stdout, r.stdout[-800:]


def test_debs_match_the_manifest(artifacts: Artifacts) -> None:
    debs = {p.name.split("_")[0]: p for p in (artifacts.dir / "debs").glob("*.deb")}
    for pkg, version in ((f"linux-image-{artifacts.kernel_version}", artifacts.kernel_package_version),
                         (f"linux-image-{artifacts.kernel_version_cloud}", artifacts.kernel_package_version_cloud),
                         ("xen-hypervisor-4.17-amd64", artifacts.xen_version)):
        assert pkg in debs, f"{pkg} was not downloaded"
        out = subprocess.run(["dpkg-deb", "-f", str(debs[pkg]), "Version"], capture_output=True, text=True,
                             check=True).stdout.strip()
        assert out == version
    contents = subprocess.run(["dpkg-deb", "-c", str(debs[f"linux-image-{artifacts.kernel_version}"])],
                              capture_output=True, text=True, check=True).stdout
    assert f"./boot/vmlinuz-{artifacts.kernel_version}" in contents


def test_fetch_is_idempotent_and_cli_json(artifacts: Artifacts, capsys: pytest.CaptureFixture[str]) -> None:
    mtimes = [p.stat().st_mtime_ns for p in artifacts.files()]
    assert fetch_all() == artifacts
    assert load() == artifacts
    assert [p.stat().st_mtime_ns for p in artifacts.files()] == mtimes
    assert main(["fetch", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["vmlinuz"] == str(artifacts.vmlinuz)


def test_manifest_with_missing_file_is_not_trusted(artifacts: Artifacts, tmp_path: Path) -> None:
    good = {"format": 1, **artifacts.to_json(), "dir": str(tmp_path)}
    (tmp_path / "manifest.json").write_text(json.dumps(good))
    assert load(tmp_path) is not None  # control: the same manifest with every file present
    (tmp_path / "manifest.json").write_text(
        json.dumps({"format": 1, **{**artifacts.to_json(), "dir": str(tmp_path),
                                    "vmlinuz": str(tmp_path / "gone")}}))
    assert load(tmp_path) is None
    (tmp_path / "manifest.json").write_text("{not json")
    assert load(tmp_path) is None


def test_cli_error_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fetch", "--dir", "/proc/self/no-such-dir/x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("artifacts: error:") and err.count("\n") == 1
