"""tboot VLP interoperability against the real tb_polgen (Debian package tboot)."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest
from conftest import run_cli

from tboot_py.measure import measure
from tboot_py.policy import Component, DigestKind, Inputs, MeasuredComponent, Mode, evaluate, load_policy
from tboot_py.policy.vlp import parse_vlp

pytestmark = pytest.mark.integration


def tb_polgen(*args: str | Path) -> str:
    r = subprocess.run(["tb_polgen", *map(str, args)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def show(path: Path) -> str:
    """tb_polgen --show, without the file name it echoes."""
    return tb_polgen("--show", path)


def make(tmp: Path, name: str, ptype: str, alg: str, adds: list[list[str]]) -> Path:
    pol = tmp / name
    tb_polgen("--create", "--type", ptype, "--alg", alg, pol)
    for a in adds:
        tb_polgen("--add", *a, pol)
    return pol


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for n in ("xen", "vmlinuz", "initrd"):
        p = tmp_path / n
        p.write_bytes(hashlib.sha512(n.encode()).digest() * 100)
        out[n] = p
    return out


CASES = [
    ("halt", "sha256"), ("continue", "sha1"), ("nonfatal", "sha384"), ("halt", "sha512"),
]


@pytest.mark.parametrize(("ptype", "alg"), CASES)
def test_round_trip_is_byte_identical(tmp_path: Path, images: dict[str, Path], ptype: str, alg: str) -> None:
    adds = [
        ["--num", "0", "--pcr", "18", "--hash", "image", "--cmdline", "dom0_mem=1G", "--image", str(images["xen"])],
        ["--num", "1", "--pcr", "19", "--hash", "image", "--cmdline", "console=hvc0", "--image",
         str(images["vmlinuz"])],
        ["--num", "1", "--pcr", "19", "--hash", "image", "--image", str(images["initrd"])],  # 2nd hash, same entry
        ["--num", "2", "--pcr", "none", "--hash", "image", "--image", str(images["initrd"])],
        ["--num", "any", "--pcr", "19", "--hash", "any"],
    ]
    vlp = make(tmp_path, "orig.pol", ptype, alg, adds)
    unsafe = ["--allow-permissive"] if ptype == "nonfatal" else []
    assert run_cli("policy", "import-vlp", str(vlp), "-o", str(tmp_path / "p.toml"), *unsafe).rc == 0
    pol = load_policy(tmp_path / "p.toml")
    assert pol.mode is {"halt": Mode.HALT, "continue": Mode.CONTINUE, "nonfatal": Mode.NONFATAL}[ptype]
    r = run_cli("policy", "export-vlp", str(tmp_path / "p.toml"), "-o", str(tmp_path / "back.pol"))
    assert r.rc == 0, r.err
    assert (tmp_path / "back.pol").read_bytes() == vlp.read_bytes()
    assert show(tmp_path / "back.pol") == show(vlp)
    # also through JSON
    assert run_cli("policy", "import-vlp", str(vlp), "-o", str(tmp_path / "p.json"), *unsafe).rc == 0
    assert run_cli("policy", "export-vlp", str(tmp_path / "p.json"), "-o", str(tmp_path / "b2.pol")).rc == 0
    assert (tmp_path / "b2.pol").read_bytes() == vlp.read_bytes()


@pytest.mark.parametrize(("ptype", "adds", "why"), [
    ("nonfatal", [["--num", "0", "--pcr", "18", "--hash", "image", "--cmdline", "x", "--image", "IMG"]], "nonfatal"),
    ("halt", [], "no entries"),
    ("nonfatal", [], "nonfatal"),
    ("halt", [["--num", "any", "--pcr", "none", "--hash", "any"]], "any hash"),
])
def test_allow_all_vlps_are_refused_unless_asked_and_then_marked(tmp_path: Path, images: dict[str, Path],
                                                                 ptype: str, adds: list[list[str]], why: str) -> None:
    """A tb_polgen policy that verifies nothing used to import silently as a policy that
    allows any launch. Now the import refuses it; --allow-permissive imports it marked UNSAFE,
    with warnings in the policy, and every verdict under it names the policy as UNSAFE."""
    vlp = make(tmp_path, "p.pol", ptype, "sha256", [[str(images["xen"]) if a == "IMG" else a for a in x]
                                                    for x in adds])
    data = vlp.read_bytes()
    r = run_cli("policy", "import-vlp", str(vlp), "-o", str(tmp_path / "p.toml"))
    assert r.rc == 2 and why in r.err and "--allow-permissive" in r.err, r.err
    assert not (tmp_path / "p.toml").exists()
    r = run_cli("policy", "import-vlp", str(vlp), "-o", str(tmp_path / "p.toml"), "--allow-permissive")
    assert r.rc == 0 and why in r.err, r.err
    pol = load_policy(tmp_path / "p.toml")
    assert pol.name is not None and pol.name.startswith("UNSAFE") and any(why in w for w in pol.warnings)
    m = measure(images["xen"], kind="tboot-module", cmdline="anything")
    v = evaluate(pol, Inputs(measurements=(MeasuredComponent(Component.HYPERVISOR, DigestKind.TBOOT_MODULE,
                                                             tuple(m.digests.as_dict().items())),)))
    assert str(v.as_json()["policy"]).startswith("UNSAFE")
    # It still round-trips to the same tboot file.
    assert run_cli("policy", "export-vlp", str(tmp_path / "p.toml"), "-o", str(tmp_path / "o.pol")).rc == 0
    assert (tmp_path / "o.pol").read_bytes() == data


def test_tb_polgen_hashes_match_our_measurements(tmp_path: Path, images: dict[str, Path]) -> None:
    """An imported tb_polgen policy admits exactly the modules tboot-py's measure hashes."""
    vlp = make(tmp_path, "p.pol", "halt", "sha256", [
        ["--num", "0", "--pcr", "18", "--hash", "image", "--image", str(images["xen"])],
        ["--num", "1", "--pcr", "19", "--hash", "image", "--cmdline", "console=hvc0", "--image",
         str(images["vmlinuz"])],
    ])
    assert run_cli("policy", "import-vlp", str(vlp), "-o", str(tmp_path / "p.toml")).rc == 0
    pol = load_policy(tmp_path / "p.toml")

    def mc(comp: Component, path: Path, cmd: str) -> MeasuredComponent:
        m = measure(path, kind="tboot-module", cmdline=cmd)
        return MeasuredComponent(comp, DigestKind.TBOOT_MODULE, tuple(m.digests.as_dict().items()))

    good = (mc(Component.HYPERVISOR, images["xen"], ""), mc(Component.KERNEL, images["vmlinuz"], "console=hvc0"))
    assert evaluate(pol, Inputs(measurements=good)).allowed
    bad = (good[0], mc(Component.KERNEL, images["vmlinuz"], "console=hvc0 single"))
    v = evaluate(pol, Inputs(measurements=bad))
    assert not v.allowed and v.failures[0].component == "kernel"


def test_export_from_reference_values_is_accepted_by_tb_polgen(tmp_path: Path, images: dict[str, Path]) -> None:
    pol = tmp_path / "p.toml"
    assert run_cli("policy", "init", str(pol), "--mode", "continue").rc == 0
    for comp, img, cmd in (("hypervisor", "xen", ""), ("kernel", "vmlinuz", "console=hvc0"),
                           ("initrd", "initrd", "")):
        r = run_cli("policy", "add", str(pol), "--component", comp, "--file", str(images[img]),
                    "--kind", "tboot-module", "--cmdline", cmd)
        assert r.rc == 0, r.err
    assert run_cli("policy", "export-vlp", str(pol), "-o", str(tmp_path / "out.pol")).rc == 0
    out = show(tmp_path / "out.pol")
    assert "TB_POLTYPE_CONT_VERIFY_FAIL" in out and "TB_HALG_SHA256" in out
    # the same policy, written by tb_polgen itself
    ref = make(tmp_path, "ref.pol", "continue", "sha256", [
        ["--num", "0", "--pcr", "18", "--hash", "image", "--image", str(images["xen"])],
        ["--num", "1", "--pcr", "19", "--hash", "image", "--cmdline", "console=hvc0", "--image",
         str(images["vmlinuz"])],
        ["--num", "2", "--pcr", "19", "--hash", "image", "--image", str(images["initrd"])],
    ])
    assert (tmp_path / "out.pol").read_bytes() == ref.read_bytes()
    assert len(re.findall(r"policy entry\[", out)) == 3
    parsed = parse_vlp((tmp_path / "out.pol").read_bytes())
    assert [e.mod_num for e in parsed.entries] == [0, 1, 2]


def test_import_refuses_corrupt_files(tmp_path: Path, images: dict[str, Path]) -> None:
    vlp = make(tmp_path, "p.pol", "halt", "sha256", [
        ["--num", "0", "--pcr", "18", "--hash", "image", "--image", str(images["xen"])]])
    data = vlp.read_bytes()
    for i, bad in enumerate((data[:-1], data + b"\0", b"\x03" + data[1:], data[:1] + b"\x07" + data[2:])):
        f = tmp_path / f"bad{i}.pol"
        f.write_bytes(bad)
        r = run_cli("policy", "import-vlp", str(f), "-o", str(tmp_path / "x.toml"))
        assert r.rc == 2 and "parse error at offset" in r.err, (i, r.err)
