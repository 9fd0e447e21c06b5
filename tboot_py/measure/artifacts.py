"""Artifacts to measure, how their kind is chosen, and the Measurement they yield.

Kind detection (``kind="auto"``), in this order:

1. a command line is given                      -> TBOOT_MODULE (a multiboot module: Xen
   ``xen.gz``, a dom0 kernel or an initrd booted by tboot, whose VL policy hash covers the
   command line; tboot docs, "Verified Launch policy")
2. ``MZ`` at 0 and ``PE\\0\\0`` at e_lfanew      -> PE (xen.efi, an EFI-stub vmlinuz, a UKI:
   firmware measures the Authenticode digest, TCG PC Client PFP 10.4.4)
3. anything else (gzip, ELF, initrd, data)      -> FILE (the plain digest of the bytes)

The kind can always be forced. A gzip or ELF image without a command line is *not* guessed
to be a tboot module: ask for ``kind="tboot-module"`` (its command line is then empty, as
with ``tb_polgen`` without ``--cmdline``).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tboot_py import algorithms
from tboot_py.algorithms import HashAlg
from tboot_py.errors import InputError
from tboot_py.measure import _pe
from tboot_py.measure._source import Source, open_source, source_name
from tboot_py.measure.authenticode import authenticode_digests
from tboot_py.measure.digests import DigestSet, Progress, resolve_banks, stream_digests
from tboot_py.measure.tboot import tboot_module_digests

if TYPE_CHECKING:
    from pathlib import Path


class ArtifactKind(enum.Enum):
    FILE = "file"
    PE = "pe"
    TBOOT_MODULE = "tboot-module"

    @classmethod
    def parse(cls, value: ArtifactKind | str) -> ArtifactKind | None:
        """An ArtifactKind, or None for ``"auto"``; anything else raises InputError."""
        if isinstance(value, ArtifactKind):
            return value
        v = str(value).strip().lower().replace("_", "-")
        if v == "auto":
            return None
        for k in cls:
            if k.value == v:
                return k
        known = ", ".join(["auto", *(k.value for k in cls)])
        raise InputError(f"unknown artifact kind {value!r} (known: {known})")


@dataclass(frozen=True)
class Measurement:
    """What was measured and its digests. ``size`` is the size of the file as hashed (the
    compressed size for a gzip tboot module). ``cmdline`` is set only for tboot modules."""

    name: str
    kind: ArtifactKind
    size: int
    digests: DigestSet
    cmdline: str | None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"file": self.name, "kind": self.kind.value, "size": self.size}
        if self.cmdline is not None:
            out["cmdline"] = self.cmdline
        out["digests"] = self.digests.hex()
        return out


def detect_kind(src: Path | str | int | bytes, *, cmdline: str | None = None) -> ArtifactKind:
    """The kind ``measure(kind="auto")`` would use (rules in the module docstring)."""
    if cmdline is not None:
        return ArtifactKind.TBOOT_MODULE
    if isinstance(src, bytes | bytearray | memoryview):
        data = bytes(src)
        return ArtifactKind.PE if _pe.looks_like_pe(data[:0x40], _pe.bytes_reader(data), len(data)) else (
            ArtifactKind.FILE)
    with open_source(src) as s:
        return _detect(s, None)


def _detect(s: Source, cmdline: str | None) -> ArtifactKind:
    if cmdline is not None:
        return ArtifactKind.TBOOT_MODULE
    head = s.read_exact(0, min(0x40, s.size))
    return ArtifactKind.PE if _pe.looks_like_pe(head, _pe.source_reader(s), s.size) else ArtifactKind.FILE


def measure(
    src: Path | str | int,
    *,
    kind: ArtifactKind | str = "auto",
    banks: Sequence[HashAlg] = algorithms.DEFAULT_BANKS,
    cmdline: str | None = None,
    name: str | None = None,
    progress: Progress | None = None,
) -> Measurement:
    """Measure one artifact: a path or an open fd (read with pread from offset 0, never moved).

    ``kind`` is ``"auto"`` or an ArtifactKind (or its value). A command line is only
    meaningful for a tboot module; giving one with ``kind`` file or pe raises InputError.
    """
    algs = resolve_banks(banks)
    k = ArtifactKind.parse(kind)
    if k is not ArtifactKind.TBOOT_MODULE and k is not None and cmdline is not None:
        raise InputError(f"a command line is only part of a tboot-module measurement, not of a {k.value}")
    label = name if name is not None else source_name(src)
    if not isinstance(src, os.PathLike | str | int):
        raise InputError(f"cannot measure a {type(src).__name__}")
    # Open once: the kind is detected on, and the digests taken from, the same open file.
    with open_source(src) as s:
        if k is None:
            k = _detect(s, cmdline)
        if k is ArtifactKind.TBOOT_MODULE:
            cl = "" if cmdline is None else cmdline
            digests, size, _gz = tboot_module_digests(s, cl, algs, progress)
            return Measurement(label, k, size, digests, cl)
        if k is ArtifactKind.PE:
            digests, size = authenticode_digests(s, algs, progress)
        else:
            digests, size = stream_digests(s, algs, progress)
        return Measurement(label, k, size, digests, None)
