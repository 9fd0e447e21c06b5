"""Credential activation: prove that an AK lives in the same TPM as an EK.

Verifier side: :func:`make_credential` is TPM2_MakeCredential done in software
(TPM 2.0 Part 1, 24 "Credential Protection"; Part 3, 12.6), with ``cryptography``:

* a seed is protected to the EK (Part 1, 24.4 and Annex B/C): RSA-OAEP with label
  "IDENTITY\\0" for an RSA EK; for an ECC EK an ephemeral ECDH key, seed = KDFe(nameAlg, Z,
  "IDENTITY", ephemeral x, EK x) and the encrypted secret is the ephemeral point;
* symKey = KDFa(nameAlg, seed, "STORAGE", AK name, "", EK symmetric key bits), and the
  TPM2B_DIGEST credential is AES-CFB encrypted with a zero IV (Part 1, 24.5);
* HMACkey = KDFa(nameAlg, seed, "INTEGRITY", "", "", digest bits) and the outer HMAC covers
  encIdentity || AK name (Part 1, 24.5).

TPM side: :func:`activate` runs TPM2_ActivateCredential, which returns the credential only
if the AK named in the blob is loaded in the TPM that holds the EK's private key.
"""

from __future__ import annotations

import hmac
import os
import struct
from typing import TYPE_CHECKING

from cryptography.hazmat.decrepit.ciphers.modes import CFB  # CFB left primitives in cryptography 47
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers import algorithms as cipher_algs

from tboot_py import algorithms
from tboot_py.errors import InputError
from tboot_py.tpm import wire as st

if TYPE_CHECKING:
    from tboot_py.attest.keys import AK, EK
    from tboot_py.tpm.esapi import EsapiTPM

_CRYPTO_HASH: dict[int, type[hashes.HashAlgorithm]] = {
    algorithms.SHA1.alg_id: hashes.SHA1, algorithms.SHA256.alg_id: hashes.SHA256,
    algorithms.SHA384.alg_id: hashes.SHA384, algorithms.SHA512.alg_id: hashes.SHA512,
}


def kdfa(hash_alg: algorithms.HashAlg, key: bytes, label: bytes, context_u: bytes, context_v: bytes,
         bits: int) -> bytes:
    """KDFa: SP 800-108 counter mode with HMAC (TPM 2.0 Part 1, 11.4.10.2)."""
    out = bytearray()
    counter = 0
    while len(out) * 8 < bits:
        counter += 1
        msg = struct.pack(">I", counter) + label + b"\x00" + context_u + context_v + struct.pack(">I", bits)
        out += hmac.new(key, msg, hash_alg.hashlib_name).digest()
    return _truncate_bits(bytes(out), bits)


def kdfe(hash_alg: algorithms.HashAlg, z: bytes, label: bytes, party_u: bytes, party_v: bytes, bits: int) -> bytes:
    """KDFe: SP 800-56A concatenation KDF (TPM 2.0 Part 1, 11.4.10.3)."""
    out = bytearray()
    counter = 0
    while len(out) * 8 < bits:
        counter += 1
        out += hash_alg.digest(struct.pack(">I", counter) + z + label + b"\x00" + party_u + party_v)
    return _truncate_bits(bytes(out), bits)


def _truncate_bits(data: bytes, bits: int) -> bytes:
    n = (bits + 7) // 8
    out = bytearray(data[:n])
    if bits % 8:
        out[0] &= (1 << (bits % 8)) - 1
    return bytes(out)


def _ek_hash(ek: st.Public) -> algorithms.HashAlg:
    alg = algorithms.by_id(ek.name_alg)
    if alg is None or ek.name_alg not in _CRYPTO_HASH:
        raise InputError(f"EK nameAlg 0x{ek.name_alg:04x} is not supported")
    return alg


def _seed_for(ek: st.Public, h: algorithms.HashAlg) -> tuple[bytes, bytes]:
    """(seed, TPM2B_ENCRYPTED_SECRET body) protecting a fresh seed to the EK."""
    key = ek.crypto_key
    if isinstance(key, rsa.RSAPublicKey):
        seed = os.urandom(h.size)
        hc = _CRYPTO_HASH[h.alg_id]
        enc = key.encrypt(seed, padding.OAEP(padding.MGF1(hc()), hc(), b"IDENTITY\x00"))
        return seed, enc
    size = st.CURVES[ek.curve][1]
    eph = ec.generate_private_key(key.curve)
    z = eph.exchange(ec.ECDH(), key)  # the x coordinate of the shared point (SP 800-56A 5.7.1.2)
    nums = eph.public_key().public_numbers()
    ex, ey = nums.x.to_bytes(size, "big"), nums.y.to_bytes(size, "big")
    seed = kdfe(h, z, b"IDENTITY", ex, ek.ecc_x, h.size * 8)
    return seed, st.tpm2b(ex) + st.tpm2b(ey)


def make_credential(ek: st.Public, ak_name: bytes, credential: bytes) -> tuple[bytes, bytes]:
    """Software TPM2_MakeCredential; returns (TPM2B_ID_OBJECT body, TPM2B_ENCRYPTED_SECRET body)."""
    if not 1 <= len(credential) <= 64:
        raise InputError("the credential must be 1..64 bytes (TPM2B_DIGEST)")
    sym_alg, sym_bits, sym_mode = ek.symmetric
    if (sym_alg, sym_mode) != (st.ALG_AES, st.ALG_CFB) or sym_bits not in (128, 192, 256):
        raise InputError("the EK is not a storage key with AES-CFB protection")
    h = _ek_hash(ek)
    seed, encrypted_secret = _seed_for(ek, h)
    sym_key = kdfa(h, seed, b"STORAGE", ak_name, b"", sym_bits)
    enc = Cipher(cipher_algs.AES(sym_key), CFB(bytes(16))).encryptor()
    enc_identity = enc.update(st.tpm2b(credential)) + enc.finalize()
    hmac_key = kdfa(h, seed, b"INTEGRITY", b"", b"", h.size * 8)
    outer = hmac.new(hmac_key, enc_identity + ak_name, h.hashlib_name).digest()
    return st.tpm2b(outer) + enc_identity, encrypted_secret


def activate(tpm: EsapiTPM, ak: AK, ek_kind: str, id_object: bytes, encrypted_secret: bytes) -> bytes:
    """TPM2_ActivateCredential with the persistent AK and the EK derived from its template."""
    from tboot_py.attest.keys import ek_kind as kind_of
    from tboot_py.tpm import keyops as ops

    k = kind_of(ek_kind)
    if not k.activatable:
        raise InputError(f"credential activation with the {ek_kind} EK is not supported (its policy needs "
                         "PolicyAuthorizeNV)")
    with ops.primary(tpm, k.template.marshal()) as ek_obj, ops.persistent(tpm, ak.handle) as key:
        return ops.activate_credential(tpm, key, ek_obj, k.policy_hash, id_object, encrypted_secret)


def challenge(tpm: EsapiTPM, ak: AK, ek: EK) -> bool:
    """Both sides in one call: a random credential made to ``ek`` for ``ak`` must come back."""
    secret = os.urandom(32)
    blob, enc = make_credential(ek.public, ak.name, secret)
    got = activate(tpm, ak, ek.kind, blob, enc)
    return hmac.compare_digest(got, secret)
