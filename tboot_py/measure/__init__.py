"""The measurement engine: multi-bank digests of the artifacts a launch hands over.

Three ways to measure (see :mod:`tboot_py.measure.artifacts` for how one is chosen):
a plain file hash, a PE/COFF Authenticode digest, and a tboot VL module hash.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tboot_py._lazy import exports

# Eager: this name is also a submodule, and importing the submodule would rebind it.
from tboot_py.measure.authenticode import authenticode

if TYPE_CHECKING:
    from tboot_py.measure.artifacts import ArtifactKind, Measurement, detect_kind, measure
    from tboot_py.measure.digests import DigestSet, MultiHasher, hash_stream, resolve_banks
    from tboot_py.measure.tboot import MAX_DECOMPRESSED, DecompressedTooLarge, tboot_module_hash

__all__ = [
    "MAX_DECOMPRESSED",
    "ArtifactKind",
    "DecompressedTooLarge",
    "DigestSet",
    "Measurement",
    "MultiHasher",
    "authenticode",
    "detect_kind",
    "hash_stream",
    "measure",
    "resolve_banks",
    "tboot_module_hash",
]

__getattr__, __dir__ = exports(__name__, {
    'ArtifactKind': ('tboot_py.measure.artifacts', 'ArtifactKind'),
    'Measurement': ('tboot_py.measure.artifacts', 'Measurement'),
    'detect_kind': ('tboot_py.measure.artifacts', 'detect_kind'),
    'measure': ('tboot_py.measure.artifacts', 'measure'),
    'DigestSet': ('tboot_py.measure.digests', 'DigestSet'),
    'MultiHasher': ('tboot_py.measure.digests', 'MultiHasher'),
    'hash_stream': ('tboot_py.measure.digests', 'hash_stream'),
    'resolve_banks': ('tboot_py.measure.digests', 'resolve_banks'),
    'MAX_DECOMPRESSED': ('tboot_py.measure.tboot', 'MAX_DECOMPRESSED'),
    'DecompressedTooLarge': ('tboot_py.measure.tboot', 'DecompressedTooLarge'),
    'tboot_module_hash': ('tboot_py.measure.tboot', 'tboot_module_hash'),
})
