"""Kind detection, measure() and the ``tboot-py measure`` command."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import pytest
from _pe_synth import build_pe
from conftest import run_cli

from tboot_py import algorithms
from tboot_py.errors import InputError
from tboot_py.measure import ArtifactKind, Measurement, authenticode, detect_kind, measure


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    pe = tmp_path / "app.efi"
    pe.write_bytes(build_pe().data)
    gz = tmp_path / "xen.gz"
    gz.write_bytes(gzip.compress(b"\x7fELF multiboot image"))
    plain = tmp_path / "initrd"
    plain.write_bytes(b"initrd bytes")
    mz = tmp_path / "dos.exe"
    mz.write_bytes(b"MZ" + b"\0" * 200)  # MZ without a PE header is not a PE
    return {"pe": pe, "gz": gz, "plain": plain, "mz": mz}


def test_detect_kind(files: dict[str, Path]) -> None:
    assert detect_kind(files["pe"]) is ArtifactKind.PE
    assert detect_kind(files["gz"]) is ArtifactKind.FILE
    assert detect_kind(files["plain"]) is ArtifactKind.FILE
    assert detect_kind(files["mz"]) is ArtifactKind.FILE
    assert detect_kind(files["pe"], cmdline="x") is ArtifactKind.TBOOT_MODULE
    assert detect_kind(files["pe"].read_bytes()) is ArtifactKind.PE


def test_measure_kinds(files: dict[str, Path]) -> None:
    banks = (algorithms.SHA256,)
    m = measure(files["pe"], banks=banks)
    assert m.kind is ArtifactKind.PE and m.cmdline is None
    assert m.digests == authenticode(files["pe"], banks)
    assert m.digests["sha256"] != hashlib.sha256(files["pe"].read_bytes()).digest()
    m = measure(files["pe"], kind="file", banks=banks)
    assert m.digests["sha256"] == hashlib.sha256(files["pe"].read_bytes()).digest()
    assert m.size == files["pe"].stat().st_size
    m = measure(files["gz"], cmdline="a=b", banks=banks)
    assert m.kind is ArtifactKind.TBOOT_MODULE and m.cmdline == "a=b"
    h = hashlib.sha256
    assert m.digests["sha256"] == h(h(b"a=b").digest() + h(b"\x7fELF multiboot image").digest()).digest()
    m = measure(files["gz"], kind=ArtifactKind.TBOOT_MODULE, banks=banks)
    assert m.cmdline == ""
    assert m.name == str(files["gz"])
    assert measure(files["plain"], name="initrd").name == "initrd"


def test_measure_fd(files: dict[str, Path]) -> None:
    fd = os.open(files["pe"], os.O_RDONLY)
    try:
        m = measure(fd)
        assert m.kind is ArtifactKind.PE and m.name == f"fd:{fd}"
        assert m.digests == measure(files["pe"]).digests
    finally:
        os.close(fd)


def test_measure_rejects(files: dict[str, Path]) -> None:
    with pytest.raises(InputError, match="unknown artifact kind"):
        measure(files["plain"], kind="elf")
    with pytest.raises(InputError, match="only part of a tboot-module"):
        measure(files["plain"], kind="file", cmdline="x")
    with pytest.raises(InputError):
        measure(files["plain"], kind="pe")  # not a PE: ParseError is an InputError


def test_measurement_is_frozen(files: dict[str, Path]) -> None:
    m = measure(files["plain"])
    assert isinstance(m, Measurement)
    with pytest.raises(AttributeError):
        m.size = 1  # type: ignore[misc]


def test_cli_json(files: dict[str, Path]) -> None:
    r = run_cli("measure", "--json", "--banks", "sha1,sha256", str(files["plain"]), str(files["pe"]))
    assert r.rc == 0, r.err
    doc = json.loads(r.out)
    first, second = doc["measurements"]
    assert first == {"file": str(files["plain"]), "kind": "file", "size": 12,
                     "digests": {"sha1": hashlib.sha1(b"initrd bytes").hexdigest(),
                                 "sha256": hashlib.sha256(b"initrd bytes").hexdigest()}}
    assert second["kind"] == "pe"
    r = run_cli("measure", "--json", "--cmdline", "c", str(files["gz"]))
    m = json.loads(r.out)["measurements"][0]
    assert m["kind"] == "tboot-module" and m["cmdline"] == "c" and set(m["digests"]) == {"sha1", "sha256", "sha384"}


def test_cli_table(files: dict[str, Path]) -> None:
    r = run_cli("measure", str(files["plain"]))
    assert r.rc == 0
    d = hashlib.sha384(b"initrd bytes").hexdigest()
    # Not a terminal: one record per line, the digest whole.
    assert f"sha384 {d} file 12 {files['plain']}" in r.out.splitlines()


@pytest.mark.parametrize("argv", [
    ["measure", "/nonexistent/file"],
    ["measure", "/"],
    ["measure", "--banks", "sha999", "/etc/hostname"],
    ["measure", "--kind", "pe", "/etc/hostname"],
    ["measure", "--kind", "elf", "/etc/hostname"],
    ["measure"],
])
def test_cli_bad_input_is_one_line_exit_2(argv: list[str], files: dict[str, Path]) -> None:
    r = run_cli(*argv)
    assert r.rc == 2
    assert "Traceback" not in r.err
    assert r.out == ""


def test_cli_truncated_pe(files: dict[str, Path], tmp_path: Path) -> None:
    t = tmp_path / "trunc.efi"
    t.write_bytes(files["pe"].read_bytes()[:0x300])
    r = run_cli("measure", str(t))
    assert r.rc == 2
    assert len(r.err.strip().splitlines()) == 1 and "parse error" in r.err


def test_measure_sealed_memfd_like_the_launch_gate(files: dict[str, Path]) -> None:
    import fcntl

    fd = os.memfd_create("kernel", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.write(fd, files["gz"].read_bytes())
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK)
        pos = os.lseek(fd, 0, os.SEEK_CUR)
        m = measure(fd, cmdline="console=hvc0", name="vmlinuz")
        assert m.name == "vmlinuz" and m.kind is ArtifactKind.TBOOT_MODULE
        assert m.digests == measure(files["gz"], cmdline="console=hvc0").digests
        assert os.lseek(fd, 0, os.SEEK_CUR) == pos
    finally:
        os.close(fd)


def test_parse_error_names_the_file(files: dict[str, Path], tmp_path: Path) -> None:
    from tboot_py.errors import ParseError

    t = tmp_path / "bad.efi"
    t.write_bytes(files["pe"].read_bytes()[:0x300])
    with pytest.raises(ParseError) as ei:
        measure(t)
    assert ei.value.source == str(t)
