"""Hash algorithms (PCR banks) known to tboot-py.

Algorithm identifiers are TPM_ALG_ID values from the TCG Algorithm Registry
(TPM 2.0 Part 2, 6.3). Digest sizes are fixed by the algorithm.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from tboot_py.errors import UnknownAlgorithmError


@dataclass(frozen=True)
class HashAlg:
    """One hash algorithm: TPM name, TPM_ALG_ID, digest size and hashlib name."""

    name: str
    alg_id: int
    size: int
    hashlib_name: str

    def new(self) -> Any:
        """A fresh hashlib object (``Any`` because hashlib's type is private)."""
        return hashlib.new(self.hashlib_name)

    def digest(self, data: bytes) -> bytes:
        h = self.new()
        h.update(data)
        return bytes(h.digest())

    @property
    def available(self) -> bool:
        return _hashlib_has(self.hashlib_name)

    @property
    def ctor(self) -> Any:
        """``ctor(data)`` -> a hashlib object: the named constructor where hashlib has one
        (faster than ``hashlib.new``), else ``hashlib.new`` (sm3)."""
        return _ctor(self.hashlib_name)


SHA1 = HashAlg("sha1", 0x0004, 20, "sha1")
SHA256 = HashAlg("sha256", 0x000B, 32, "sha256")
SHA384 = HashAlg("sha384", 0x000C, 48, "sha384")
SHA512 = HashAlg("sha512", 0x000D, 64, "sha512")
SM3_256 = HashAlg("sm3_256", 0x0012, 32, "sm3")
SHA3_256 = HashAlg("sha3_256", 0x0027, 32, "sha3_256")
SHA3_384 = HashAlg("sha3_384", 0x0028, 48, "sha3_384")
SHA3_512 = HashAlg("sha3_512", 0x0029, 64, "sha3_512")

ALL: tuple[HashAlg, ...] = (SHA1, SHA256, SHA384, SHA512, SM3_256, SHA3_256, SHA3_384, SHA3_512)
_BY_NAME = {a.name: a for a in ALL}
_BY_NAME["sm3"] = SM3_256
_BY_ID = {a.alg_id: a for a in ALL}

#: The banks tboot-py measures into by default (matches swtpm-config's default).
DEFAULT_BANKS: tuple[HashAlg, ...] = (SHA1, SHA256, SHA384)


@cache
def _ctor(name: str) -> Any:
    named = getattr(hashlib, name, None)
    if named is not None:
        return named
    return lambda data=b"": hashlib.new(name, data)


@cache
def _hashlib_has(name: str) -> bool:
    try:
        hashlib.new(name)
    except ValueError:
        return False
    return True


def by_name(name: str) -> HashAlg:
    """Look an algorithm up by its TPM bank name (``sha256``); raises UnknownAlgorithmError."""
    alg = _BY_NAME.get(name.strip().lower().replace("-", "_"))
    if alg is None:
        known = ", ".join(a.name for a in ALL)
        raise UnknownAlgorithmError(f"unknown hash algorithm {name!r} (known: {known})")
    return alg


def by_id(alg_id: int) -> HashAlg | None:
    """Look an algorithm up by TPM_ALG_ID; None when unknown (callers decide if that is fatal)."""
    return _BY_ID.get(alg_id)


def parse_banks(spec: str | Iterable[str | HashAlg]) -> tuple[HashAlg, ...]:
    """Parse ``"sha1,sha256"`` (or a list of names or HashAlgs) into algorithms, keeping
    order, no repeats.

    Raises UnknownAlgorithmError for an unknown name, one this OpenSSL cannot compute, or
    an empty list.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[HashAlg] = []
    for n in items:
        if isinstance(n, str) and not n.strip():
            continue
        alg = by_name(n) if isinstance(n, str) else n
        if not isinstance(alg, HashAlg):
            raise UnknownAlgorithmError(f"not a hash algorithm: {n!r}")
        if not alg.available:
            raise UnknownAlgorithmError(f"hash algorithm {alg.name!r} is not available in this OpenSSL")
        if alg not in out:
            out.append(alg)
    if not out:
        raise UnknownAlgorithmError("no hash algorithm (PCR bank) given")
    return tuple(out)
