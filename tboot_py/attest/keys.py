"""Endorsement keys (EK) and attestation keys (AK).

* EK templates and certificate NV indices follow the TCG EK Credential Profile for TPM
  Family 2.0, version 2.3, section 2.2.1.4 (low range: L-1 RSA 2048 at 0x01c00002, L-2 ECC
  NIST P256 at 0x01c0000a; high range: H-3 ECC NIST P384 at 0x01c00016, which swtpm uses).
* The AK is a restricted signing key (TPM 2.0 Part 1, 25.2 "Attestation Keys") created
  under the RSA EK, made persistent with TPM2_EvictControl, and remembered in a state
  directory so the same AK is used across runs.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tboot_py import algorithms, jsonin
from tboot_py.errors import InputError, TPMError
from tboot_py.tpm import wire as st
from tboot_py.tpm.ek import EK_KINDS, EKKind

if TYPE_CHECKING:
    from tboot_py.tpm.esapi import EsapiTPM

def open_esapi(spec: str) -> EsapiTPM:
    """Open a real TPM (device or swtpm); key operations need ESAPI, not the fake TPM."""
    from tboot_py.tpm import open_tpm
    from tboot_py.tpm.esapi import EsapiTPM

    tpm = open_tpm(spec)
    if not isinstance(tpm, EsapiTPM):
        tpm.close()
        raise InputError(f"{spec}: key and quote operations need a real TPM or swtpm")
    return tpm


def ek_kind(name: str) -> EKKind:
    try:
        return EK_KINDS[name]
    except KeyError:
        raise InputError(f"unknown EK type {name!r} (known: {', '.join(EK_KINDS)})") from None


@dataclass(frozen=True)
class EK:
    """An EK as the TPM derived it from its template, and its certificate when provisioned."""

    kind: str
    public: st.Public
    certificate: bytes | None  # DER, NV padding stripped


def read_ek_certificate(tpm: EsapiTPM, kind: str = "rsa") -> bytes | None:
    """The EK certificate (DER, padding stripped) from its NV index; None when absent."""
    from tboot_py.tpm import keyops as ops
    from tboot_py.verify.ekcert import strip_der_padding

    raw = ops.nv_read_all(tpm, ek_kind(kind).nv_index)
    return None if raw is None else strip_der_padding(raw)


def create_ek(tpm: EsapiTPM, kind: str = "rsa") -> EK:
    """Derive the EK from its TCG default template (flushed afterwards) and read its certificate.

    Raises TPMError when a certificate is provisioned but its key is not the template's key.
    """
    from tboot_py.tpm import keyops as ops
    from tboot_py.verify.ekcert import public_matches_certificate

    k = ek_kind(kind)
    with ops.primary(tpm, k.template.marshal(), "endorsement") as obj:
        pub = st.parse_public(obj.public, source=f"EK {kind}")
    cert = read_ek_certificate(tpm, kind)
    if cert is not None and not public_matches_certificate(pub, cert):
        raise TPMError(f"the {kind} EK derived from the default template does not match the EK certificate "
                       f"at NV 0x{k.nv_index:08x}")
    return EK(kind, pub, cert)


# --------------------------------------------------------------------------- AK

AK_DEFAULT_HANDLE = 0x81010002
#: The launch gate's own AK (``tboot-py launch --handle``): distinct from ``attest``'s default
#: so the two never take each other's key.
GATE_AK_HANDLE = 0x81010003
# fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | restricted | sign (Part 1, 25.2)
AK_ATTRS = (st.OA_FIXED_TPM | st.OA_FIXED_PARENT | st.OA_SENSITIVE_DATA_ORIGIN | st.OA_USER_WITH_AUTH
            | st.OA_RESTRICTED | st.OA_SIGN)


def ak_template(alg: str) -> st.Public:
    """The AK template for ``rsa`` (RSASSA-SHA256), ``rsapss`` (RSAPSS-SHA256), ``ecc``
    (ECDSA P-256 SHA-256) or ``ecc384`` (ECDSA P-384 SHA-384)."""
    s256, s384 = algorithms.SHA256.alg_id, algorithms.SHA384.alg_id
    if alg == "rsa":
        return st.rsa_template(AK_ATTRS, scheme=st.ALG_RSASSA, scheme_hash=s256)
    if alg == "rsapss":
        return st.rsa_template(AK_ATTRS, scheme=st.ALG_RSAPSS, scheme_hash=s256)
    if alg == "ecc":
        return st.ecc_template(AK_ATTRS, st.CURVE_NIST_P256, scheme=st.ALG_ECDSA, scheme_hash=s256)
    if alg == "ecc384":
        return st.ecc_template(AK_ATTRS, st.CURVE_NIST_P384, scheme=st.ALG_ECDSA, scheme_hash=s384)
    raise InputError(f"unknown AK algorithm {alg!r} (known: rsa, rsapss, ecc, ecc384)")


AK_ALGS = ("rsa", "rsapss", "ecc", "ecc384")


@dataclass(frozen=True)
class AK:
    """A persistent AK: its handle and public area (the parent is the RSA EK)."""

    handle: int
    alg: str
    public: st.Public
    qualified_name: bytes  # what the TPM puts in TPMS_ATTEST.qualifiedSigner

    @property
    def name(self) -> bytes:
        return self.public.name


_STATE_FILE = "ak.json"


def _write_atomic(path: Path, data: bytes) -> None:
    from tboot_py.fileio import write_atomic

    # Never writable by others, whatever the umask (the gate trusts this state).
    write_atomic(path, data, 0o644, what="AK state")


def _load_state(state: Path) -> dict[str, Any] | None:
    f = state / _STATE_FILE
    if not f.exists():
        return None
    from tboot_py.fileio import SMALL, read_file

    try:
        rec = jsonin.loads(read_file(f, "AK state", SMALL))
        return {"handle": int(rec["handle"], 16), "alg": str(rec["alg"]),
                "public": base64.b64decode(rec["public"], validate=True),
                "private": base64.b64decode(rec["private"], validate=True),
                "qualified_name": bytes.fromhex(rec.get("qualified_name", ""))}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{f}: unreadable AK state: {e}") from e


def _save_state(state: Path, ak: AK, private: bytes) -> None:
    from cryptography.hazmat.primitives import serialization

    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    rec = {"handle": f"0x{ak.handle:08x}", "alg": ak.alg, "name": ak.name.hex(),
           "qualified_name": ak.qualified_name.hex(),
           "public": base64.b64encode(ak.public.raw).decode(), "private": base64.b64encode(private).decode()}
    _write_atomic(state / _STATE_FILE, json.dumps(rec, indent=2).encode())
    # Verifier-side copies: TPM2B_PUBLIC (tpm2-tools format) and PEM.
    _write_atomic(state / "ak.pub", st.tpm2b(ak.public.raw))
    pem = ak.public.crypto_key.public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    _write_atomic(state / "ak.pem", pem)


def load_or_create_ak(tpm: EsapiTPM, state: Path | None = None, alg: str | None = "rsa",
                      handle: int = AK_DEFAULT_HANDLE) -> AK:
    """Return the AK persisted at ``handle``, creating it under the RSA EK when needed.

    ``alg=None``: the algorithm recorded in ``state``, or rsa for a new AK.

    With ``state``: the AK recorded there is used. When the TPM has lost the persistent
    copy, the saved blob is reloaded under the EK and persisted again (this fails on
    another TPM, as it must). A handle holding a different key is an error, never
    overwritten.
    """
    from tboot_py.tpm import keyops as ops

    rec = _load_state(state) if state is not None else None
    if alg is None:
        alg = str(rec["alg"]) if rec is not None else "rsa"
    template = ak_template(alg)
    if not 0x81000000 <= handle <= 0x81FFFFFF:
        raise InputError(f"AK handle 0x{handle:08x} is not a persistent handle (0x81xxxxxx)")
    ek = EK_KINDS["rsa"]

    def make(pub: st.Public, ek_pub: bytes) -> AK:
        ek_qn = st.qualified_name(st.hierarchy_qualified_name(st.RH_ENDORSEMENT), st.parse_public(ek_pub))
        return AK(handle, alg, pub, st.qualified_name(ek_qn, pub))

    if rec is not None:
        if rec["alg"] != alg:
            raise InputError(f"{state}: holds a {rec['alg']} AK, not {alg}")
        handle = rec["handle"]
        stored = st.parse_public(rec["public"], source="AK state")
        current = ops.read_persistent(tpm, handle)
        if current is not None:
            if current != stored.raw:
                raise InputError(f"persistent handle 0x{handle:08x} holds a different key than the AK recorded in "
                                 f"{state}: another tool took it; evict it or use a fresh state directory")
            if rec["qualified_name"]:
                return AK(handle, alg, stored, rec["qualified_name"])
            with ops.primary(tpm, ek.template.marshal()) as parent:
                return make(stored, parent.public)
        with ops.primary(tpm, ek.template.marshal()) as parent, \
                ops.load_child(tpm, parent, rec["private"], stored.raw, ek.policy_hash) as obj:
            ops.persist(tpm, obj, handle)
            return make(stored, parent.public)

    current = ops.read_persistent(tpm, handle)
    if current is not None:
        pub = st.parse_public(current, source=f"0x{handle:08x}")
        if state is None and _is_ak_like(pub, template):
            # An AK persisted without a state directory; assume it lives under the RSA EK.
            with ops.primary(tpm, ek.template.marshal()) as parent:
                return make(pub, parent.public)
        raise InputError(f"persistent handle 0x{handle:08x} is already in use by another key; choose another "
                         "--handle or evict it")
    with ops.primary(tpm, ek.template.marshal()) as parent:
        private, public = ops.create_child(tpm, parent, template.marshal(), ek.policy_hash)
        with ops.load_child(tpm, parent, private, public, ek.policy_hash) as obj:
            ops.persist(tpm, obj, handle)
        ak = make(st.parse_public(public, source="new AK"), parent.public)
    if state is not None:
        _save_state(state, ak, private)
    return ak


def _is_ak_like(pub: st.Public, template: st.Public) -> bool:
    """Same type, attributes and scheme as the template: an AK of the requested kind."""
    return (pub.type, pub.attributes, pub.scheme, pub.scheme_hash, pub.curve, pub.rsa_bits) == (
        template.type, template.attributes, template.scheme, template.scheme_hash, template.curve, template.rsa_bits)
