"""EAT Attestation Results (draft-ietf-rats-ear) as JWTs signed with ES256 (RFC 7518, 3.4).

Claims (draft-ietf-rats-ear, section 3): ``eat_profile``, ``iat``, ``ear.verifier-id``,
``submods`` with one submodule, ``tboot-py``, carrying ``ear.status`` (affirming or
contraindicated), ``ear.appraisal-policy-id`` (``sha256:<policy digest>``) and the
``ear.trustworthiness-vector`` (AR4SI, draft-ietf-rats-ar4si: 2 = affirming, 96 =
contraindicated); ``eat_nonce`` (RFC 9711, 4.1) is the verifier's nonce in hex. tboot-py
adds ``tboot-py.pcr-digest`` (the verified quote's pcrDigest), ``tboot-py.host`` and
``tboot-py.result-id`` to the submodule, and ``exp`` for relying parties that want a bound.

Verification (:func:`verify_ear`) needs only PyJWT and a public key (PEM or a JWKS), so
a relying party checks an EAR offline.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tboot_py.errors import InputError, VerificationError

PROFILE = "tag:github.com,2023:veraison/ear"
SUBMOD = "tboot-py"
AFFIRMING, CONTRAINDICATED = "affirming", "contraindicated"
_TV = {AFFIRMING: 2, CONTRAINDICATED: 96}


class EARError(VerificationError):
    """An EAR whose signature, profile, nonce or age does not check out."""


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_id(public: ec.EllipticCurvePublicKey) -> str:
    """A key id: SHA-256 of the SubjectPublicKeyInfo DER, first 16 bytes, hex."""
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:32]


def jwk(public: ec.EllipticCurvePublicKey) -> dict[str, Any]:
    from jwt.algorithms import ECAlgorithm

    d: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(public))
    d.update({"kid": key_id(public), "alg": "ES256", "use": "sig"})
    return d


def sign_ear(key: ec.EllipticCurvePrivateKey, *, allowed: bool, nonce: bytes, host: str, policy_digest: str | None,
             pcr_digest: str | None, result_id: int, ttl: int = 3600, now: float | None = None) -> str:
    import jwt

    iat = int(time.time() if now is None else now)
    status = AFFIRMING if allowed else CONTRAINDICATED
    submod: dict[str, Any] = {
        "ear.status": status,
        "ear.trustworthiness-vector": {"executables": _TV[status], "instance-identity": 2},
        "tboot-py.host": host,
        "tboot-py.result-id": result_id,
    }
    if policy_digest is not None:
        submod["ear.appraisal-policy-id"] = f"sha256:{policy_digest}"
    if pcr_digest is not None:
        submod["tboot-py.pcr-digest"] = pcr_digest
    claims = {"eat_profile": PROFILE, "iat": iat, "exp": iat + ttl, "eat_nonce": nonce.hex(),
              "ear.verifier-id": {"developer": "tboot-py", "build": "tboot-py server"},
              "submods": {SUBMOD: submod}}
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": key_id(key.public_key())})


@dataclass(frozen=True)
class EAR:
    """A verified EAR's claims."""

    status: str
    host: str | None
    nonce: str
    issued_at: int
    policy_id: str | None
    pcr_digest: str | None
    claims: Mapping[str, Any]

    @property
    def affirming(self) -> bool:
        return self.status == AFFIRMING


def load_verification_keys(data: bytes) -> dict[str, ec.EllipticCurvePublicKey]:
    """Public keys by kid from a PEM public key or a JWKS document."""
    from jwt.algorithms import ECAlgorithm

    text = data.strip()
    out: dict[str, ec.EllipticCurvePublicKey] = {}
    if text.startswith(b"{"):
        try:
            doc = json.loads(text)
            for k in doc.get("keys", []) if isinstance(doc, dict) else []:
                pub = ECAlgorithm.from_jwk(k)
                if isinstance(pub, ec.EllipticCurvePublicKey):
                    out[key_id(pub)] = pub
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise InputError(f"not a usable JWKS: {e}") from e
    else:
        try:
            pem = serialization.load_pem_public_key(text)
        except ValueError as e:
            raise InputError(f"not a PEM public key: {e}") from e
        if not isinstance(pem, ec.EllipticCurvePublicKey):
            raise InputError("the EAR key must be an EC P-256 public key")
        out[key_id(pem)] = pem
    if not out:
        raise InputError("no EC public key found")
    return out


def verify_ear(token: str, keys: Mapping[str, ec.EllipticCurvePublicKey], nonce: bytes | None = None,
               max_age: float | None = None, host: str | None = None, now: float | None = None,
               check_expiry: bool = True) -> EAR:
    """Check an EAR's ES256 signature and claims; raise :class:`EARError` otherwise.
    ``check_expiry=False`` only to audit an archived EAR (its signature and claims still count)."""
    import jwt

    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as e:
        raise EARError(f"not a JWT: {e}") from e
    if header.get("alg") != "ES256":
        raise EARError(f"EAR algorithm is {header.get('alg')!r}, expected ES256")
    kid = header.get("kid")
    cands = [keys[kid]] if isinstance(kid, str) and kid in keys else list(keys.values())
    claims: dict[str, Any] | None = None
    last: Exception | None = None
    for pub in cands:
        try:
            claims = jwt.decode(token, pub, algorithms=["ES256"],
                                options={"require": ["iat", "exp"], "verify_exp": check_expiry}, leeway=5)
            break
        except jwt.ExpiredSignatureError as e:
            raise EARError("EAR has expired") from e
        except jwt.PyJWTError as e:
            last = e
    if claims is None:
        raise EARError(f"EAR signature does not verify with the given key: {last}")
    if claims.get("eat_profile") != PROFILE:
        raise EARError(f"EAR profile is {claims.get('eat_profile')!r}, expected {PROFILE}")
    sub = claims.get("submods", {}).get(SUBMOD) if isinstance(claims.get("submods"), dict) else None
    if not isinstance(sub, dict) or sub.get("ear.status") not in _TV:
        raise EARError("EAR carries no tboot-py submodule with a status")
    ear = EAR(str(sub["ear.status"]), sub.get("tboot-py.host"), str(claims.get("eat_nonce", "")),
              int(claims["iat"]), sub.get("ear.appraisal-policy-id"), sub.get("tboot-py.pcr-digest"), claims)
    t = time.time() if now is None else now
    if nonce is not None and ear.nonce != nonce.hex():
        raise EARError("EAR nonce does not match the expected nonce")
    if max_age is not None and t - ear.issued_at > max_age:
        raise EARError(f"EAR is {int(t - ear.issued_at)} s old, more than the {int(max_age)} s allowed")
    if host is not None and ear.host != host:
        raise EARError(f"EAR is for host {ear.host!r}, not {host!r}")
    return ear


def require_fresh_ear(server: str, key: Path | None, host: str, max_age: float, cacert: Path | None = None) -> EAR:
    """The relying party's check (``launch --require-ear``): fetch the host's latest EAR from
    the service and require it affirming, for this host, at most ``max_age`` seconds old,
    signed by ``key`` (PEM or JWKS file; default the service's published JWKS)."""
    from tboot_py.server.client import Client, ServerError

    client = Client([server], cacert=cacert)
    try:
        if key is not None:
            try:
                keys = load_verification_keys(key.read_bytes())
            except OSError as e:
                raise InputError(f"{key}: {e.strerror}") from e
        else:
            keys = load_verification_keys(client.request("GET", "/.well-known/jwks.json", raw=True))
        try:
            token = client.request("GET", f"/v1/hosts/{host}/ear")["ear"]
        except ServerError as e:
            raise EARError(f"no EAR for {host!r} from {server}: {e.diagnostics()}") from e
    finally:
        client.close()
    ear = verify_ear(str(token), keys, max_age=max_age, host=host)
    if not ear.affirming:
        raise EARError(f"the latest EAR for {host!r} is {ear.status}")
    return ear
