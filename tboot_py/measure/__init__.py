"""The measurement engine: multi-bank digests of the artifacts a launch hands over.

Three ways to measure (see :mod:`tboot_py.measure.artifacts` for how one is chosen):
a plain file hash, a PE/COFF Authenticode digest, and a tboot VL module hash.
"""

from tboot_py.measure.artifacts import ArtifactKind, Measurement, detect_kind, measure
from tboot_py.measure.authenticode import authenticode
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
