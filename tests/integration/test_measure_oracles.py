"""The measurement engine against real tools on real Debian artifacts.

Oracles: ``osslsigncode verify`` ("Calculated message digest") for Authenticode digests,
and tboot's ``tb_polgen`` (the policy hashes it writes, read back with ``--show``) for
tboot VL module hashes. Artifacts come from tboot_py._artifacts (``make test`` fetches them).
"""

from __future__ import annotations

import gzip
import re
import subprocess
from pathlib import Path

import pytest
from _pe_synth import Sec, build_pe

from tboot_py import algorithms
from tboot_py._artifacts import Artifacts, fetch_all
from tboot_py.measure import ArtifactKind, authenticode, measure, tboot_module_hash

pytestmark = pytest.mark.integration

_DIGEST = re.compile(r"Calculated message digest\s*:\s*([0-9A-Fa-f]+)")
_ALG = re.compile(r"Message digest algorithm\s*:\s*(\S+)")


@pytest.fixture(scope="session")
def artifacts() -> Artifacts:
    return fetch_all()


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("signkey")
    key, cert = d / "key.pem", d / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=tboot-py test signer",
                    "-days", "2", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return key, cert


def osslsigncode_digest(path: Path) -> tuple[str, str]:
    """(algorithm, hex digest) that osslsigncode calculates over the image."""
    r = subprocess.run(["osslsigncode", "verify", "-in", str(path)], capture_output=True, text=True, check=False)
    out = r.stdout + r.stderr
    m, a = _DIGEST.search(out), _ALG.search(out)
    assert m and a, f"osslsigncode printed no digest:\n{out}"
    return a.group(1).lower(), m.group(1).lower()


def sign(src: Path, dst: Path, alg: str, key: tuple[Path, Path]) -> Path:
    subprocess.run(["osslsigncode", "sign", "-key", str(key[0]), "-certs", str(key[1]), "-h", alg,
                    "-in", str(src), "-out", str(dst)], check=True, capture_output=True)
    return dst


@pytest.mark.parametrize("which", ["vmlinuz", "vmlinuz_cloud"])
def test_debian_signed_kernel_matches_osslsigncode(artifacts: Artifacts, which: str) -> None:
    path: Path = getattr(artifacts, which)
    alg, want = osslsigncode_digest(path)
    assert alg == "sha256"
    m = measure(path)
    assert m.kind is ArtifactKind.PE
    assert m.digests.hex()["sha256"] == want
    assert m.size == path.stat().st_size


@pytest.mark.parametrize("alg", ["sha1", "sha256", "sha384", "sha512"])
def test_xen_efi_signed_here_matches_osslsigncode(artifacts: Artifacts, signing_key: tuple[Path, Path],
                                                    tmp_path: Path, alg: str) -> None:
    signed = sign(artifacts.xen_efi, tmp_path / "xen-signed.efi", alg, signing_key)
    got_alg, want = osslsigncode_digest(signed)
    assert got_alg == alg
    assert authenticode(signed, [algorithms.by_name(alg)]).hex()[alg] == want


@pytest.mark.parametrize("pe32plus", [True, False])
@pytest.mark.parametrize("trailing", [b"", b"overlay data" * 3 + b"1234"])
def test_synthetic_pe_signed_here_matches_osslsigncode(signing_key: tuple[Path, Path], tmp_path: Path,
                                                       pe32plus: bool, trailing: bytes) -> None:
    pe = build_pe([Sec(b".text", b"\x90" * 0x300), Sec(b".data", bytes(range(256)) * 2)],
                  pe32plus=pe32plus, trailing=trailing)
    assert len(pe.data) % 8 == 0  # so signing adds no padding and the digest is unchanged
    src = tmp_path / "in.efi"
    src.write_bytes(pe.data)
    signed = sign(src, tmp_path / "out.efi", "sha256", signing_key)
    _, want = osslsigncode_digest(signed)
    assert authenticode(signed, [algorithms.SHA256]).hex()["sha256"] == want
    assert authenticode(src, [algorithms.SHA256]).hex()["sha256"] == want


# --- tb_polgen --------------------------------------------------------------------------

_HASH_LINE = re.compile(r"hashes\[\d+\]:\s*((?:[0-9a-f]{2}\s*)+)")


def tb_polgen_hash(tmp_path: Path, image: Path, cmdline: str | None, alg: str) -> str:
    pol = tmp_path / f"policy-{alg}"
    pol.unlink(missing_ok=True)
    subprocess.run(["tb_polgen", "--create", "--type", "nonfatal", "--alg", alg, str(pol)],
                   check=True, capture_output=True)
    add = ["tb_polgen", "--add", "--num", "0", "--pcr", "none", "--hash", "image", "--image", str(image)]
    if cmdline is not None:
        add += ["--cmdline", cmdline]
    subprocess.run([*add, str(pol)], check=True, capture_output=True)
    shown = subprocess.run(["tb_polgen", "--show", str(pol)], check=True, capture_output=True, text=True).stdout
    hashes = _HASH_LINE.findall(shown)
    assert len(hashes) == 1, shown
    return "".join(hashes[0].split())


CMDLINES = ["console=com1 com1=115200,8n1 dom0_mem=1024M,max:1024M loglvl=all", "", None]


@pytest.mark.parametrize("which", ["xen_gz", "xen_elf", "vmlinuz"])
@pytest.mark.parametrize("cmdline", CMDLINES)
def test_module_hash_matches_tb_polgen(artifacts: Artifacts, tmp_path: Path, which: str,
                                       cmdline: str | None) -> None:
    image: Path = getattr(artifacts, which)
    banks = [algorithms.SHA1, algorithms.SHA256, algorithms.SHA384, algorithms.SHA512]
    m = measure(image, kind="tboot-module", cmdline=cmdline, banks=banks)
    assert m.kind is ArtifactKind.TBOOT_MODULE
    for alg in ("sha1", "sha256", "sha384", "sha512"):
        assert m.digests.hex()[alg] == tb_polgen_hash(tmp_path, image, cmdline, alg), alg


def test_gzip_and_gunzipped_xen_give_the_same_module_hash(artifacts: Artifacts) -> None:
    c = "dom0_mem=2G"
    assert tboot_module_hash(artifacts.xen_gz, c) == tboot_module_hash(artifacts.xen_elf, c)
    assert gzip.decompress(artifacts.xen_gz.read_bytes())[:4] == b"\x7fELF"


def test_multi_member_gzip_matches_tb_polgen(tmp_path: Path) -> None:
    img = tmp_path / "mm.gz"
    img.write_bytes(gzip.compress(b"first member ") + gzip.compress(b"second member" * 1000))
    got = tboot_module_hash(img, "x=1", [algorithms.SHA256]).hex()["sha256"]
    assert got == tb_polgen_hash(tmp_path, img, "x=1", "sha256")


def test_cli_module_hash_matches_tb_polgen(artifacts: Artifacts, tmp_path: Path) -> None:
    import json

    from conftest import run_cli

    r = run_cli("measure", "--json", "--banks", "sha256", "--cmdline", "console=vga", str(artifacts.xen_gz))
    assert r.rc == 0, r.err
    got = json.loads(r.out)["measurements"][0]["digests"]["sha256"]
    assert got == tb_polgen_hash(tmp_path, artifacts.xen_gz, "console=vga", "sha256")
