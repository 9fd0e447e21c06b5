"""build_initrd: the archive parses back with GNU cpio (the oracle), /init is executable."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import pytest

from tboot_py._artifacts import ArtifactError, build_initrd, check_static_busybox, main
from tboot_py.errors import InputError

INIT = "#!/bin/sh\necho hello from init\npoweroff -f\n"


def _listing(img: Path) -> dict[str, str]:
    """``cpio -itv`` of the archive: {path: mode string}."""
    raw = gzip.decompress(img.read_bytes())
    r = subprocess.run(["cpio", "-itv", "--quiet"], input=raw, capture_output=True, check=True)
    out: dict[str, str] = {}
    for line in r.stdout.decode().splitlines():
        fields = line.split()
        name = fields[-3] if "->" in fields else fields[-1]
        out[name] = fields[0]
    return out


def _extract(img: Path, dest: Path, *names: str) -> None:
    raw = gzip.decompress(img.read_bytes())
    subprocess.run(["cpio", "-id", "--quiet", "--no-absolute-filenames", *names], input=raw, cwd=dest,
                   check=True, capture_output=True)


def test_initrd_parses_back(tmp_path: Path) -> None:
    img = build_initrd(tmp_path / "initrd.img", INIT, {"etc/tboot/marker": b"\x00\x01payload",
                                                         "bin/helper": b"#!/bin/sh\n"})
    listing = _listing(img)
    assert listing["init"] == "-rwxr-xr-x"
    assert listing["bin/busybox"] == "-rwxr-xr-x"
    assert listing["dev/console"].startswith("c")
    assert listing["sbin/poweroff"].startswith("l")
    assert listing["bin/sh"].startswith("l")
    assert listing["etc/tboot"].startswith("d")
    assert listing["etc/tboot/marker"] == "-rw-r--r--"
    assert listing["bin/helper"] == "-rwxr-xr-x"
    dest = tmp_path / "x"
    dest.mkdir()
    _extract(img, dest, "init", "etc/tboot/marker", "bin/busybox")
    assert (dest / "init").read_text() == INIT
    assert (dest / "etc/tboot/marker").read_bytes() == b"\x00\x01payload"
    assert (dest / "bin/busybox").read_bytes() == Path("/bin/busybox").read_bytes()


def test_initrd_is_reproducible(tmp_path: Path) -> None:
    a = build_initrd(tmp_path / "a.img", INIT).read_bytes()
    b = build_initrd(tmp_path / "b.img", INIT).read_bytes()
    c = build_initrd(tmp_path / "c.img", INIT + "\n").read_bytes()
    assert a == b
    assert a != c


@pytest.mark.parametrize("name", ["../escape", "etc/../../x", "init", "", "etc//x", "./etc/x", "a\0b"])
def test_initrd_rejects_bad_paths(tmp_path: Path, name: str) -> None:
    with pytest.raises(InputError):
        build_initrd(tmp_path / "i.img", INIT, {name: b"x"})


def test_dynamic_busybox_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="dynamically linked"):
        check_static_busybox(Path("/bin/ls"))
    junk = tmp_path / "junk"
    junk.write_bytes(b"not an elf")
    with pytest.raises(ArtifactError, match="not an x86-64 ELF"):
        check_static_busybox(junk)


def test_cli_usage_error_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bogus"]) == 2
