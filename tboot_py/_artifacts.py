"""Real boot artifacts for the demo, the benchmarks and the integration tests.

``python -m tboot_py._artifacts fetch`` downloads real Debian 12 packages with
``apt-get download`` into ``<repo>/.artifacts/`` (git-ignored) and extracts what a
measured launch hands over:

- ``xen-4.17-amd64.efi``: Xen as a PE/COFF EFI application (Authenticode-measured),
- ``xen-4.17-amd64.gz`` and its gunzipped copy ``xen-4.17-amd64`` (a multiboot ELF; tboot
  and ``tb_polgen`` hash the gunzipped image, see tboot docs/policy_v2.txt),
- ``vmlinuz-<ver>-amd64``: the signed generic kernel (CONFIG_XEN_DOM0=y, the dom0 kernel),
- ``vmlinuz-<ver>-cloud-amd64``: the signed cloud kernel (smaller; used for OVMF boots).

``build_initrd`` writes a tiny gzip'd newc cpio initramfs with static busybox and a given
``/init``. It writes the cpio format itself, so device nodes need no root.

Fetching is idempotent: a manifest records what was extracted, and a later call that finds
every file reuses it without touching apt.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

from tboot_py.errors import EXIT_OK, Error, InputError
from tboot_py.fileio import write_atomic

ARTIFACTS_DIR = Path(__file__).resolve().parents[1] / ".artifacts"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1

XEN_PACKAGE = "xen-hypervisor-4.17-amd64"
XEN_NAME = "xen-4.17-amd64"
DOM0_META = "linux-image-amd64"
CLOUD_META = "linux-image-cloud-amd64"
BUSYBOX = Path("/bin/busybox")

# A versioned Debian kernel image package, e.g. linux-image-6.1.0-56-amd64 (the signed
# image; the unsigned build is named ...-amd64-unstable/-unsigned and is not wanted).
_KERNEL_PKG = re.compile(r"^linux-image-(\d[0-9a-z.+~-]*-(?:cloud-)?amd64)$")
_DEPENDS = re.compile(r"^\s*\|?(?:Pre)?Depends:\s*(\S+)", re.M)

_APT_TIMEOUT = 1800
_T = TypeVar("_T")


class ArtifactError(InputError):
    """An artifact could not be fetched, extracted or found (exit 2)."""


@dataclass(frozen=True)
class Artifacts:
    """Paths of the extracted real artifacts (all absolute, all regular files)."""

    dir: Path
    xen_version: str  # Debian package version of xen-hypervisor-4.17-amd64
    xen_efi: Path  # xen-4.17-amd64.efi (PE/COFF)
    xen_gz: Path  # xen-4.17-amd64.gz, as shipped
    xen_elf: Path  # gunzipped copy: a multiboot ELF
    kernel_version: str  # uname -r of the dom0 kernel, e.g. 6.1.0-56-amd64
    kernel_package_version: str  # Debian version, e.g. 6.1.192-2
    vmlinuz: Path  # signed generic kernel, dom0-capable
    kernel_version_cloud: str  # e.g. 6.1.0-56-cloud-amd64
    kernel_package_version_cloud: str
    vmlinuz_cloud: Path  # signed cloud kernel (no CONFIG_XEN_DOM0)
    busybox: Path  # static busybox used by build_initrd

    def files(self) -> tuple[Path, ...]:
        return (self.xen_efi, self.xen_gz, self.xen_elf, self.vmlinuz, self.vmlinuz_cloud)

    def to_json(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> Artifacts:
        try:
            s = {k: str(d[k]) for k in cls.__dataclass_fields__}
        except KeyError as e:
            raise ArtifactError(f"artifact manifest lacks {e.args[0]!r}") from e
        paths = {"dir", "xen_efi", "xen_gz", "xen_elf", "vmlinuz", "vmlinuz_cloud", "busybox"}
        return cls(**{k: (Path(v) if k in paths else v) for k, v in s.items()})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- helpers


def _run(cmd: Sequence[str], cwd: Path | None = None, timeout: float = _APT_TIMEOUT) -> str:
    try:
        r = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as e:
        raise ArtifactError(f"{cmd[0]} not found (run `make setup`)") from e
    except subprocess.TimeoutExpired as e:
        raise ArtifactError(f"{' '.join(cmd)} timed out after {timeout:.0f} s") from e
    if r.returncode != 0:
        last = (r.stderr.strip() or r.stdout.strip() or f"exit {r.returncode}").splitlines()[-1]
        raise ArtifactError(f"{' '.join(cmd)} failed: {last}")
    return r.stdout


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise fetches between processes (the demo and tests may start together)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _apt_download(pkg: str, dest: Path) -> Path:
    """``apt-get download pkg`` into dest (reused when present); returns the .deb path."""
    dest.mkdir(parents=True, exist_ok=True)
    found = sorted(dest.glob(f"{pkg}_*.deb"))
    if not found:
        _run(["apt-get", "download", "-q", pkg], cwd=dest)
        found = sorted(dest.glob(f"{pkg}_*.deb"))
    if not found:
        raise ArtifactError(f"apt-get download {pkg} produced no .deb in {dest}")
    return found[-1]


def _retry_after_apt_update(step: Callable[[], _T]) -> _T:
    """Run a fetch step; if it fails as root, refresh the package lists once and retry.

    A fresh machine may have no lists, and stale lists name versions the mirror dropped
    (404). The retry re-resolves metapackages, so it picks up the current kernel ABI.
    """
    try:
        return step()
    except ArtifactError:
        if os.geteuid() != 0:
            raise
    _run(["apt-get", "update", "-qq"])
    return step()


def _deb_field(deb: Path, field: str) -> str:
    return _run(["dpkg-deb", "-f", str(deb), field]).strip()


def resolve_kernel_package(meta: str) -> str:
    """The versioned linux-image package a Debian kernel metapackage depends on.

    ``linux-image-amd64`` depends on e.g. ``linux-image-6.1.0-56-amd64`` (built from
    linux-signed-amd64: the EFI stub carries Debian's Secure Boot signature).
    """
    out = _run(["apt-cache", "depends", "--no-recommends", "--no-suggests", meta], timeout=120)
    for m in _DEPENDS.finditer(out):
        if _KERNEL_PKG.match(m.group(1)):
            return m.group(1)
    raise ArtifactError(f"cannot resolve {meta} to a linux-image-<version> package (apt-cache depends)")


def _extract(deb: Path, into: Path, members: Sequence[str]) -> None:
    """Extract the given members (tar wildcards such as ``./boot/vmlinuz-*``) of a .deb.

    ``dpkg-deb --fsys-tarfile`` streams the data archive; tar keeps only the members
    asked for, so the kernel's /lib/modules is never written out.
    """
    into.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as tar:
        try:
            subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=tar, stderr=subprocess.PIPE,
                           check=True, timeout=_APT_TIMEOUT)
        except (subprocess.CalledProcessError, FileNotFoundError, subprocess.TimeoutExpired) as e:
            raise ArtifactError(f"dpkg-deb --fsys-tarfile {deb.name} failed: {e}") from e
        tar.seek(0)
        try:
            subprocess.run(["tar", "-x", "-C", str(into), "--wildcards", *members], stdin=tar,
                           stderr=subprocess.PIPE, check=True, timeout=_APT_TIMEOUT)
        except (subprocess.CalledProcessError, FileNotFoundError, subprocess.TimeoutExpired) as e:
            raise ArtifactError(f"extracting {', '.join(members)} from {deb.name} failed: {e}") from e


def _install(src: Path, dst: Path) -> Path:
    if not src.is_file():
        raise ArtifactError(f"expected {src.name} in the package but it is missing")
    write_atomic(dst, src.read_bytes(), what="artifact")
    return dst


def _fetch_kernel(meta: str, root: Path) -> tuple[Path, str, str]:
    pkg = resolve_kernel_package(meta)
    version = _KERNEL_PKG.match(pkg).group(1)  # type: ignore[union-attr]
    dst = root / f"vmlinuz-{version}"
    deb = _apt_download(pkg, root / "debs")
    pkg_version = _deb_field(deb, "Version")
    if not dst.is_file():
        with tempfile.TemporaryDirectory(dir=root) as t:
            _extract(deb, Path(t), [f"./boot/vmlinuz-{version}", f"./boot/config-{version}"])
            _install(Path(t) / "boot" / f"vmlinuz-{version}", dst)
            _install(Path(t) / "boot" / f"config-{version}", root / f"config-{version}")
    return dst, version, pkg_version


def _fetch_xen(root: Path) -> tuple[Path, Path, Path, str]:
    deb = _apt_download(XEN_PACKAGE, root / "debs")
    version = _deb_field(deb, "Version")
    efi, gz, elf = root / f"{XEN_NAME}.efi", root / f"{XEN_NAME}.gz", root / XEN_NAME
    if not (efi.is_file() and gz.is_file()):
        with tempfile.TemporaryDirectory(dir=root) as t:
            _extract(deb, Path(t), ["./boot/*"])
            _install(Path(t) / "boot" / efi.name, efi)
            _install(Path(t) / "boot" / gz.name, gz)
    if not elf.is_file():
        try:
            image = gzip.decompress(gz.read_bytes())
        except (OSError, EOFError) as e:
            raise ArtifactError(f"{gz.name} does not gunzip: {e}") from e
        write_atomic(elf, image, what="artifact")
    with open(elf, "rb") as f:
        if f.read(4) != b"\x7fELF":
            raise ArtifactError(f"{elf.name} is not an ELF image after gunzip")
    return efi, gz, elf, version


def check_static_busybox(path: Path = BUSYBOX) -> Path:
    """Require a statically linked busybox (no ELF PT_INTERP program header)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ArtifactError(f"{path}: {e.strerror} (install busybox-static)") from e
    # ELF64 little-endian header: e_phoff at 0x20, e_phentsize at 0x36, e_phnum at 0x38.
    if len(data) < 64 or data[:6] != b"\x7fELF\x02\x01":
        raise ArtifactError(f"{path} is not an x86-64 ELF binary")
    phoff = int.from_bytes(data[0x20:0x28], "little")
    phentsize = int.from_bytes(data[0x36:0x38], "little")
    phnum = int.from_bytes(data[0x38:0x3A], "little")
    if phentsize < 4 or phoff + phnum * phentsize > len(data):
        raise ArtifactError(f"{path} has a truncated ELF program header table")
    for i in range(phnum):
        off = phoff + i * phentsize
        if int.from_bytes(data[off:off + 4], "little") == 3:  # PT_INTERP: dynamically linked
            raise ArtifactError(f"{path} is dynamically linked (install busybox-static)")
    return path


# --------------------------------------------------------------------------- public API


def load(root: Path = ARTIFACTS_DIR) -> Artifacts | None:
    """The fetched artifacts if the manifest and every file are present, else None."""
    try:
        d = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(d, dict) or d.get("format") != MANIFEST_FORMAT:
        return None
    try:
        a = Artifacts.from_json(d)
    except ArtifactError:
        return None
    if a.dir != root.resolve() or not all(p.is_file() and p.stat().st_size > 0 for p in a.files()):
        return None
    return a


def fetch_all(root: Path = ARTIFACTS_DIR, refresh: bool = False) -> Artifacts:
    """Download and extract every artifact (idempotent); raises ArtifactError."""
    root = root.resolve()
    if not refresh and (a := load(root)) is not None:
        return a
    with _locked(root):
        if not refresh and (a := load(root)) is not None:
            return a
        if refresh:
            shutil.rmtree(root / "debs", ignore_errors=True)
            (root / MANIFEST).unlink(missing_ok=True)
            for p in root.iterdir():
                if p.is_file() and p.name.startswith(("vmlinuz-", "config-", XEN_NAME)):
                    p.unlink()
        xen_efi, xen_gz, xen_elf, xen_version = _retry_after_apt_update(lambda: _fetch_xen(root))
        vmlinuz, kver, kpkg = _retry_after_apt_update(lambda: _fetch_kernel(DOM0_META, root))
        cloud, cver, cpkg = _retry_after_apt_update(lambda: _fetch_kernel(CLOUD_META, root))
        a = Artifacts(dir=root, xen_version=xen_version, xen_efi=xen_efi, xen_gz=xen_gz, xen_elf=xen_elf,
                      kernel_version=kver, kernel_package_version=kpkg, vmlinuz=vmlinuz,
                      kernel_version_cloud=cver, kernel_package_version_cloud=cpkg, vmlinuz_cloud=cloud,
                      busybox=check_static_busybox())
        for p in a.files():
            if not p.is_file() or p.stat().st_size == 0:
                raise ArtifactError(f"{p} is missing or empty after extraction")
        manifest = json.dumps({"format": MANIFEST_FORMAT, **a.to_json()}, indent=2) + "\n"
        write_atomic(root / MANIFEST, manifest.encode(), what="artifact manifest")
        return a


# --------------------------------------------------------------------------- initrd

# The kernel opens /dev/console for init's stdio before anything mounts devtmpfs
# (init/main.c console_on_rootfs), so the archive carries the node itself.
_DEV_NODES = {"dev/console": (5, 1, 0o600), "dev/null": (1, 3, 0o666), "dev/tty": (5, 0, 0o666)}
_DIRS = ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "etc", "run", "mnt", "root")
_MAX_NAME = 4096


class _Newc:
    """Writer of the "new ASCII" (newc, magic 070701) cpio format the kernel unpacks.

    Header: magic + 13 eight-digit hex fields (ino, mode, uid, gid, nlink, mtime, filesize,
    devmajor, devminor, rdevmajor, rdevminor, namesize, check); the NUL-terminated name
    and the data are each padded to a multiple of 4 (Documentation/driver-api/
    early-userspace/buffer-format.rst).
    """

    def __init__(self) -> None:
        self.out = bytearray()
        self.ino = 1
        self.names: set[str] = set()

    def add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        name = name.strip("/")
        parts = name.split("/")
        if not name or any(p in ("", ".", "..") for p in parts) or len(name) >= _MAX_NAME or "\0" in name:
            raise InputError(f"bad initrd path {name!r}")
        if name in self.names:
            raise InputError(f"duplicate initrd path {name!r}")
        self.names.add(name)
        self._entry(name, mode, data, rdev)

    def _entry(self, name: str, mode: int, data: bytes, rdev: tuple[int, int]) -> None:
        raw = name.encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(mode) else 1
        fields = (self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(raw), 0)
        self.ino += 1
        self.out += b"070701" + b"".join(b"%08X" % f for f in fields) + raw
        self.out += b"\0" * (-len(self.out) % 4)
        self.out += data
        self.out += b"\0" * (-len(self.out) % 4)

    def finish(self) -> bytes:
        self.ino = 0
        self._entry("TRAILER!!!", 0, b"", (0, 0))
        return bytes(self.out)


def _busybox_applets(busybox: Path) -> list[str]:
    """Installation paths of every applet (``bin/sh``, ``sbin/poweroff``, ...)."""
    out = _run([str(busybox), "--list-full"], timeout=30)
    return [line.strip().strip("/") for line in out.splitlines() if line.strip()]


def build_initrd(out: Path, init_script: str, extra_files: Mapping[str, bytes] | None = None,
                 busybox: Path = BUSYBOX) -> Path:
    """Write a gzip'd newc cpio initramfs with static busybox and ``/init``; returns ``out``.

    ``init_script`` becomes /init (mode 0755); start it with ``#!/bin/sh``. Every busybox
    applet is linked under its usual path, so ``poweroff -f`` (a direct reboot(2)
    RB_POWER_OFF, no init needed) powers a bare-metal, OVMF or Xen dom0 kernel off.
    ``extra_files`` maps archive paths (``etc/foo``) to contents (mode 0644, or 0755 under
    bin/ and sbin/); parent directories are created. The archive is reproducible (mtime 0).
    """
    extra = dict(extra_files or {})
    bb = check_static_busybox(busybox)
    w = _Newc()
    dirs = set(_DIRS)
    for name in extra:
        parts = name.strip("/").split("/")[:-1]
        dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    for d in sorted(dirs):
        w.add(d, stat.S_IFDIR | 0o755)
    for node, (major, minor, perm) in _DEV_NODES.items():
        w.add(node, stat.S_IFCHR | perm, rdev=(major, minor))
    w.add("bin/busybox", stat.S_IFREG | 0o755, bb.read_bytes())
    for applet in _busybox_applets(bb):
        if applet == "bin/busybox" or applet in w.names:
            continue
        parent = applet.rsplit("/", 1)[0] if "/" in applet else ""
        if parent and parent not in w.names:
            continue
        w.add(applet, stat.S_IFLNK | 0o777, b"/bin/busybox")
    w.add("init", stat.S_IFREG | 0o755, init_script.encode())
    for name, data in sorted(extra.items()):
        top = name.strip("/").split("/", 1)[0]
        mode = 0o755 if top in ("bin", "sbin") or name.strip("/").startswith("usr/bin/") else 0o644
        w.add(name, stat.S_IFREG | mode, bytes(data))
    archive = gzip.compress(w.finish(), compresslevel=6, mtime=0)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, archive, what="initrd")
    return out


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tboot_py._artifacts",
                                description="Fetch the real Debian artifacts the demo and tests use.")
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download and extract (idempotent)")
    f.add_argument("--dir", type=Path, default=ARTIFACTS_DIR, help="artifact directory (default: .artifacts)")
    f.add_argument("--refresh", action="store_true", help="download again even if present")
    f.add_argument("--json", action="store_true", help="print the manifest as JSON")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else 2
    try:
        a = fetch_all(args.dir, refresh=args.refresh)
    except Error as e:
        print(f"artifacts: error: {e.diagnostics()}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        print(f"artifacts: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(a.to_json(), indent=2))
    else:
        print(f"xen {a.xen_version}: {a.xen_efi.name}, {a.xen_gz.name}, {a.xen_elf.name}")
        print(f"dom0 kernel {a.kernel_version} ({a.kernel_package_version}): {a.vmlinuz.name}")
        print(f"cloud kernel {a.kernel_version_cloud} ({a.kernel_package_version_cloud}): {a.vmlinuz_cloud.name}")
        print(f"in {a.dir}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
