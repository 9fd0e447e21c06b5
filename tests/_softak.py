"""A software AK for unit tests: builds and signs TPMS_ATTEST quotes like a TPM would.

Only for unit tests of the verifier (tampered quotes must be re-signed so that the check
under test, not the signature, rejects them). Integration tests use a real swtpm.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tboot_py import algorithms
from tboot_py.attest.keys import AK_ATTRS
from tboot_py.eventlog import NewEvent, encode_log
from tboot_py.tpm import wire as st
from tboot_py.tpm.evidence import EventLogBlob, Evidence
from tboot_py.verify.quote import TrustedAK

_H = {algorithms.SHA1.alg_id: hashes.SHA1, algorithms.SHA256.alg_id: hashes.SHA256,
      algorithms.SHA384.alg_id: hashes.SHA384}
#: An arbitrary parent Qualified Name (as if the AK were a child of some EK).
PARENT_QN = b"\x00\x0b" + hashlib.sha256(b"parent").digest()


@dataclass
class SoftAK:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    public: st.Public
    qualified_name: bytes

    @classmethod
    def rsa(cls, scheme: int = st.ALG_RSASSA, hash_id: int = algorithms.SHA256.alg_id,
            attrs: int = AK_ATTRS) -> SoftAK:
        k = rsa.generate_private_key(65537, 2048)
        n = k.public_key().public_numbers().n.to_bytes(256, "big")
        pub = st.rsa_template(attrs, scheme=scheme, scheme_hash=hash_id, unique=n)
        pub = st.parse_public(pub.marshal())
        return cls(k, pub, st.qualified_name(PARENT_QN, pub))

    @classmethod
    def ecc(cls, curve: int = st.CURVE_NIST_P256, hash_id: int = algorithms.SHA256.alg_id) -> SoftAK:
        c, size = (ec.SECP256R1(), 32) if curve == st.CURVE_NIST_P256 else (ec.SECP384R1(), 48)
        k = ec.generate_private_key(c)
        nums = k.public_key().public_numbers()
        pub = st.Public(st.ALG_ECC, algorithms.SHA256.alg_id, AK_ATTRS, b"", (st.ALG_NULL, 0, 0), st.ALG_ECDSA,
                        hash_id, curve=curve, ecc_x=nums.x.to_bytes(size, "big"), ecc_y=nums.y.to_bytes(size, "big"))
        pub = st.parse_public(pub.marshal())
        return cls(k, pub, st.qualified_name(PARENT_QN, pub))

    @property
    def trusted(self) -> TrustedAK:
        return TrustedAK(self.public, self.qualified_name)

    def sign(self, message: bytes, scheme: int | None = None, hash_id: int | None = None) -> bytes:
        scheme = self.public.scheme if scheme is None else scheme
        hash_id = self.public.scheme_hash if hash_id is None else hash_id
        h = _H[hash_id]()
        if isinstance(self.key, rsa.RSAPrivateKey):
            if scheme == st.ALG_RSAPSS:
                sig = self.key.sign(message, padding.PSS(padding.MGF1(h), h.digest_size), h)
            else:
                sig = self.key.sign(message, padding.PKCS1v15(), h)
            return st.Signature(scheme, hash_id, sig=sig).marshal()
        r, s = decode_dss_signature(self.key.sign(message, ec.ECDSA(h)))
        size = (self.key.curve.key_size + 7) // 8
        return st.Signature(st.ALG_ECDSA, hash_id, r=r.to_bytes(size, "big"), s=s.to_bytes(size, "big")).marshal()


def pcr_values(sel: st.PCRSelection, seed: bytes = b"") -> dict[str, dict[int, bytes]]:
    out: dict[str, dict[int, bytes]] = {}
    for b in sel.banks:
        alg = b.alg
        assert alg is not None
        out[alg.name] = {i: alg.digest(seed + bytes([i])) for i in b.pcrs}
    return out


def digest_of(pcrs: dict[str, dict[int, bytes]], sel: st.PCRSelection, hash_id: int) -> bytes:
    alg = algorithms.by_id(hash_id)
    assert alg is not None
    return alg.digest(b"".join(pcrs[b.bank][i] for b in sel.banks for i in b.pcrs))


def make_attest(ak: SoftAK, sel: st.PCRSelection, pcrs: dict[str, dict[int, bytes]], nonce: bytes, *,
                clock: int = 1000, reset: int = 5, restart: int = 2, safe: bool = True) -> st.Attest:
    digest = digest_of(pcrs, sel, ak.public.scheme_hash)
    return st.Attest(st.TPM_GENERATED_VALUE, st.ST_ATTEST_QUOTE, ak.qualified_name, nonce,
                     st.ClockInfo(clock, reset, restart, safe), 0x0102030405060708, st.QuoteInfo(sel, digest),
                     b"", b"")


def evidence(ak: SoftAK, attest: st.Attest, pcrs: dict[str, dict[int, bytes]],
             logs: tuple[EventLogBlob, ...] = (), sig: bytes | None = None) -> Evidence:
    raw = st.marshal_attest(attest)
    return Evidence(raw, ak.sign(raw) if sig is None else sig, pcrs, ak.public.raw, logs)


def build_log(events: list[tuple[int, bytes]], banks: tuple[algorithms.HashAlg, ...]) -> bytes:
    """A crypto-agile log; each event (pcr, data) is measured as H(data) in every bank."""
    return encode_log([NewEvent(pcr, 0x0D, {b.name: b.digest(data) for b in banks}, data)
                       for pcr, data in events], banks)


def replayed(events: list[tuple[int, bytes]], banks: tuple[algorithms.HashAlg, ...]) -> dict[str, dict[int, bytes]]:
    """Replay independently of tboot_py.eventlog (the oracle for log tests)."""
    out: dict[str, dict[int, bytes]] = {}
    for b in banks:
        regs = out.setdefault(b.name, {})
        for pcr, data in events:
            regs[pcr] = b.digest(regs.get(pcr, bytes(b.size)) + b.digest(data))
    return out


def nonce() -> bytes:
    return os.urandom(20)


__all__ = ["SoftAK", "build_log", "digest_of", "evidence", "make_attest", "nonce", "pcr_values", "replace",
           "replayed"]
