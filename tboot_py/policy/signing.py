"""Policy signatures: DSSE envelopes signed with Ed25519 or ECDSA P-256.

DSSE v1 (secure-systems-lab/dsse, "protocol.md"): the signature covers
``PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`` where LEN is the
ASCII decimal byte length and SP one space. The envelope is JSON:
``{"payload": b64(body), "payloadType": type, "signatures": [{"keyid": ..., "sig": b64}]}``.
A keyid here is the hex SHA-256 of the public key's SubjectPublicKeyInfo DER; it only
selects which trusted key to try first, it is not trusted itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tboot_py import jsonin
from tboot_py.errors import InputError, PolicyError, PolicySignatureError

PAYLOAD_TYPE = "application/vnd.tboot-py.policy+json"
MAX_ENVELOPE = 4 << 20
MAX_SIGNATURES = 16
KEY_TYPES = ("ed25519", "ecdsa-p256")

PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE pre-authentication encoding."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


def keyid(public: PublicKey) -> str:
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    def to_json(self) -> str:
        return json.dumps({
            "payload": base64.b64encode(self.payload).decode(),
            "payloadType": self.payload_type,
            "signatures": [{"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode()} for s in self.signatures],
        }, indent=2) + "\n"


def looks_like_envelope(doc: object) -> bool:
    return isinstance(doc, dict) and "payloadType" in doc and "payload" in doc


def parse_envelope(doc: object) -> Envelope:
    """Validate a decoded DSSE envelope. Raises PolicyError naming the bad field."""
    if not isinstance(doc, dict):
        raise PolicyError("envelope: expected a JSON object")
    extra = set(doc) - {"payload", "payloadType", "signatures"}
    if extra:
        raise PolicyError(f"envelope.{sorted(extra)[0]}: unknown field")
    ptype = doc.get("payloadType")
    if not isinstance(ptype, str):
        raise PolicyError("envelope.payloadType: expected a string")
    if ptype != PAYLOAD_TYPE:
        raise PolicyError(f"envelope.payloadType: {ptype!r} is not a tboot-py policy ({PAYLOAD_TYPE})")
    payload = _b64(doc.get("payload"), "envelope.payload")
    sigs_raw = doc.get("signatures", [])
    if not isinstance(sigs_raw, list):
        raise PolicyError("envelope.signatures: expected an array")
    if len(sigs_raw) > MAX_SIGNATURES:
        raise PolicyError(f"envelope.signatures: more than {MAX_SIGNATURES} signatures")
    sigs = []
    for i, s in enumerate(sigs_raw):
        p = f"envelope.signatures[{i}]"
        if not isinstance(s, dict) or set(s) - {"keyid", "sig"}:
            raise PolicyError(f"{p}: expected an object with 'keyid' and 'sig'")
        kid = s.get("keyid", "")
        if not isinstance(kid, str) or len(kid) > 256:
            raise PolicyError(f"{p}.keyid: expected a string")
        sigs.append(Signature(kid, _b64(s.get("sig"), f"{p}.sig")))
    return Envelope(ptype, payload, tuple(sigs))


def _b64(v: object, path: str) -> bytes:
    if not isinstance(v, str):
        raise PolicyError(f"{path}: expected a base64 string")
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError) as e:
        raise PolicyError(f"{path}: not valid base64") from e


# ---------------------------------------------------------------- keys

def generate_key(key_type: str = "ed25519") -> PrivateKey:
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    raise InputError(f"unknown key type {key_type!r} (known: {', '.join(KEY_TYPES)})")


def write_keypair(key: PrivateKey, path: Path) -> Path:
    """Write KEY (PKCS#8 PEM, mode 0600) and KEY.pub (SPKI PEM); return the .pub path."""
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    from tboot_py.fileio import write_atomic

    write_atomic(path, priv, 0o600, what="private key")
    pub_path = path.with_name(path.name + ".pub")
    write_atomic(pub_path, pub, 0o644, what="public key")
    return pub_path


def load_private_key(path: Path) -> PrivateKey:
    data = _read_small(path, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise InputError(f"{path}: not an unencrypted PEM private key") from e
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise InputError(f"{path}: only Ed25519 and ECDSA P-256 keys can sign policies")


def load_public_key(path: Path) -> PublicKey:
    data = _read_small(path, "trusted key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise PolicyError(f"trusted key {path}: not a PEM public key") from e
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise PolicyError(f"trusted key {path}: only Ed25519 and ECDSA P-256 keys are accepted")


def _read_small(path: Path, what: str) -> bytes:
    from tboot_py.fileio import read_input

    return read_input(path, what, 65536)


# ---------------------------------------------------------------- sign / verify

def sign_payload(payload: bytes, keys: Sequence[PrivateKey], payload_type: str = PAYLOAD_TYPE) -> Envelope:
    if not keys:
        raise InputError("no signing key given")
    msg = pae(payload_type, payload)
    sigs = []
    for k in keys:
        sig = k.sign(msg) if isinstance(k, ed25519.Ed25519PrivateKey) else k.sign(msg, ec.ECDSA(hashes.SHA256()))
        sigs.append(Signature(keyid(k.public_key()), sig))
    return Envelope(payload_type, payload, tuple(sigs))


def _verify_one(pub: PublicKey, sig: bytes, msg: bytes) -> bool:
    try:
        if isinstance(pub, ed25519.Ed25519PublicKey):
            pub.verify(sig, msg)
        else:
            pub.verify(sig, msg, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_envelope(env: Envelope, trusted: Sequence[PublicKey]) -> tuple[str, ...]:
    """Return the key ids of the trusted keys with a valid signature; raise
    PolicySignatureError when there is none."""
    if not trusted:
        raise PolicySignatureError("no trusted keys were given to verify the policy with")
    if not env.signatures:
        raise PolicySignatureError("the policy envelope carries no signatures")
    msg = pae(env.payload_type, env.payload)
    by_id = {keyid(k): k for k in trusted}
    good: list[str] = []
    for s in env.signatures:
        # The keyid is an unauthenticated hint: try the named key first, then every key.
        order = ([by_id[s.keyid]] if s.keyid in by_id else []) + [k for i, k in by_id.items() if i != s.keyid]
        for k in order:
            if _verify_one(k, s.sig, msg):
                kid = keyid(k)
                if kid not in good:
                    good.append(kid)
                break
    if not good:
        known = ", ".join(s.keyid[:16] or "(none)" for s in env.signatures)
        raise PolicySignatureError(f"no signature on the policy verifies with a trusted key "
                                   f"(signature key ids: {known})")
    return tuple(good)


def envelope_from_text(text: bytes) -> Envelope:
    if len(text) > MAX_ENVELOPE:
        raise PolicyError("signed policy is too large")
    try:
        doc: Any = jsonin.loads(text)
    except (ValueError, RecursionError) as e:
        raise PolicyError(f"signed policy is not valid JSON: {e}") from e
    return parse_envelope(doc)
