"""TPM-side key, quote and credential operations over tpm2-pytss (ESAPI).

Everything crosses this module's boundary as plain bytes in TPM wire format (TPMT_PUBLIC,
TPM2B_PRIVATE, TPML_PCR_SELECTION, TPMS_ATTEST, TPMT_SIGNATURE), so the callers in
``tboot_py.attest`` never see a tpm2-pytss object. swtpm has no resource manager: every
transient object and session created here is flushed before the function returns
(DESIGN.md pitfalls, TPM_RC_OBJECT_MEMORY 0x902).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from tboot_py.errors import TPMError, TPMNoRoomError
from tboot_py.tpm.esapi import EsapiTPM, tss_errors

from tpm2_pytss import TSS2_Exception  # isort: skip
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_CAP, TPM2_HT, TPM2_RH, TPM2_SE  # isort: skip
from tpm2_pytss.types import (  # isort: skip
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPML_PCR_SELECTION,
    TPMT_SIG_SCHEME,
    TPMT_SYM_DEF,
)

# TPM_RC_HANDLE for a persistent handle that holds nothing (Part 2, 6.6.3), with any
# handle/parameter number bits, and TPM_RC_NV_DEFINED etc. are masked off by the caller.
_RC_HANDLE = 0x08B
#: TPM_RC_NV_SPACE (TPM 2.0 Part 2, 6.6.3): no room for another persistent object.
_RC_NV_SPACE = 0x14B


def _public_obj(tpmt_public: bytes) -> Any:
    obj, _ = TPM2B_PUBLIC.unmarshal(len(tpmt_public).to_bytes(2, "big") + tpmt_public)
    return obj


def _tpmt_bytes(tpm2b_public: Any) -> bytes:
    raw = bytes(tpm2b_public.marshal())
    return raw[2:]


def _tr_or_none(es: Any, handle: int, what: str) -> Any:
    """An ESYS_TR for a TPM handle, or None when nothing is defined there (TPM_RC_HANDLE)."""
    try:
        return es.tr_from_tpmpublic(handle)
    except TSS2_Exception as e:
        if int(e.rc) & 0xFFF in (_RC_HANDLE, 0x18B, 0x28B, 0x38B):
            return None
        raise TPMError(f"{what} 0x{handle:08x}: {e}", rc=int(e.rc)) from e


def nv_read_all(tpm: EsapiTPM, index: int) -> bytes | None:
    """The whole content of NV index ``index``; None when the index is not defined."""
    es = tpm.esapi
    tr = _tr_or_none(es, index, "NV index")
    if tr is None:
        return None
    try:
        with tss_errors(f"TPM2_NV_ReadPublic(0x{index:08x})"):
            nvpub, _name = es.nv_read_public(tr)
        size = int(nvpub.nvPublic.dataSize)
        # TPM2_NV_Read is limited to TPM_PT_NV_BUFFER_MAX per call (Part 3, 31.13); 512 is safe.
        chunk = 512
        with tss_errors("TPM2_GetCapability(TPM_PT_NV_BUFFER_MAX)"):
            _m, cap = es.get_capability(TPM2_CAP.TPM_PROPERTIES, 0x100 + 44, 1)  # TPM_PT_NV_BUFFER_MAX
        for p in cap.data.tpmProperties:
            if int(p.property) == 0x100 + 44 and int(p.value) > 0:
                chunk = min(int(p.value), 2048)
        out = bytearray()
        while len(out) < size:
            n = min(chunk, size - len(out))
            with tss_errors(f"TPM2_NV_Read(0x{index:08x})"):
                out += bytes(es.nv_read(tr, n, len(out), auth_handle=tr))
        return bytes(out)
    finally:
        with suppress(Exception):
            es.tr_close(tr)


@contextmanager
def _policy_secret_endorsement(tpm: EsapiTPM, hash_alg: int) -> Iterator[Any]:
    """A policy session satisfying PolicySecret(TPM_RH_ENDORSEMENT): the EK's authPolicy
    for the low-range templates (TCG EK Credential Profile 2.3, B.3.3 "PolicyA")."""
    es = tpm.esapi
    with tss_errors("TPM2_StartAuthSession(policy)"):
        sess = es.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY,
                                     TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), hash_alg)
    try:
        with tss_errors("TPM2_PolicySecret(TPM_RH_ENDORSEMENT)"):
            es.policy_secret(ESYS_TR.ENDORSEMENT, sess, b"", b"", b"", 0)
        yield sess
    finally:
        with suppress(Exception):
            es.flush_context(sess)


@dataclass
class Loaded:
    """A transient or persistent object handle inside one ESAPI context."""

    tr: Any
    public: bytes  # TPMT_PUBLIC
    persistent: bool = False


@contextmanager
def primary(tpm: EsapiTPM, template: bytes, hierarchy: str = "endorsement") -> Iterator[Loaded]:
    """TPM2_CreatePrimary from a TPMT_PUBLIC template; the key is flushed on exit."""
    es = tpm.esapi
    h = {"endorsement": ESYS_TR.ENDORSEMENT, "owner": ESYS_TR.OWNER}[hierarchy]
    with tss_errors(f"TPM2_CreatePrimary({hierarchy})"):
        tr, pub, _cd, _ch, _tk = es.create_primary(TPM2B_SENSITIVE_CREATE(), _public_obj(template), h)
    try:
        yield Loaded(tr, _tpmt_bytes(pub))
    finally:
        with suppress(Exception):
            es.flush_context(tr)


def create_child(tpm: EsapiTPM, parent: Loaded, template: bytes, parent_policy_hash: int | None) -> tuple[bytes, bytes]:
    """TPM2_Create under ``parent``; returns (TPM2B_PRIVATE bytes, TPMT_PUBLIC bytes).

    ``parent_policy_hash`` set means the parent is an EK whose authorisation is
    PolicySecret(endorsement) in a session of that hash.
    """
    es = tpm.esapi
    if parent_policy_hash is not None:
        with _policy_secret_endorsement(tpm, parent_policy_hash) as sess, tss_errors("TPM2_Create(AK)"):
            priv, pub, _cd, _ch, _tk = es.create(parent.tr, TPM2B_SENSITIVE_CREATE(), _public_obj(template),
                                                 session1=sess)
    else:
        with tss_errors("TPM2_Create"):
            priv, pub, _cd, _ch, _tk = es.create(parent.tr, TPM2B_SENSITIVE_CREATE(), _public_obj(template))
    return bytes(priv.marshal()), _tpmt_bytes(pub)


@contextmanager
def load_child(tpm: EsapiTPM, parent: Loaded, private: bytes, public: bytes,
               parent_policy_hash: int | None) -> Iterator[Loaded]:
    """TPM2_Load a child key; flushed on exit."""
    es = tpm.esapi
    try:
        priv, _ = TPM2B_PRIVATE.unmarshal(private)
    except Exception as e:
        raise TPMError(f"stored private blob is not a TPM2B_PRIVATE: {e}") from e
    if parent_policy_hash is not None:
        with _policy_secret_endorsement(tpm, parent_policy_hash) as sess, tss_errors("TPM2_Load"):
            tr = es.load(parent.tr, priv, _public_obj(public), session1=sess)
    else:
        with tss_errors("TPM2_Load"):
            tr = es.load(parent.tr, priv, _public_obj(public))
    try:
        yield Loaded(tr, public)
    finally:
        with suppress(Exception):
            es.flush_context(tr)


def read_persistent(tpm: EsapiTPM, handle: int) -> bytes | None:
    """TPMT_PUBLIC of the persistent object at ``handle``; None when the handle is empty."""
    es = tpm.esapi
    tr = _tr_or_none(es, handle, "persistent handle")
    if tr is None:
        return None
    try:
        with tss_errors(f"TPM2_ReadPublic(0x{handle:08x})"):
            pub, _n, _qn = es.read_public(tr)
        return _tpmt_bytes(pub)
    finally:
        with suppress(Exception):
            es.tr_close(tr)


def persistent_handles(tpm: EsapiTPM) -> list[int]:
    with tss_errors("TPM2_GetCapability(HANDLES)"):
        _more, cap = tpm.esapi.get_capability(TPM2_CAP.HANDLES, TPM2_HT.PERSISTENT << 24, 64)
    return [int(h) for h in cap.data.handle]


def persist(tpm: EsapiTPM, obj: Loaded, handle: int) -> None:
    """TPM2_EvictControl(TPM_RH_OWNER) of a loaded object to persistent ``handle`` (Part 3, 28.5)."""
    es = tpm.esapi
    try:
        with tss_errors(f"TPM2_EvictControl(0x{handle:08x})"):
            tr = es.evict_control(ESYS_TR.OWNER, obj.tr, handle)
    except TPMError as e:
        if e.rc & 0xFFF == _RC_NV_SPACE:
            raise TPMNoRoomError(f"the TPM has no room to persist a key at 0x{handle:08x} (TPM_RC_NV_SPACE): "
                                 "evict an unused persistent object (tpm2_evictcontrol) or reuse one with --handle",
                                 rc=e.rc) from e
        raise
    with suppress(Exception):
        es.tr_close(tr)


def evict(tpm: EsapiTPM, handle: int) -> None:
    """Remove the persistent object at ``handle``."""
    es = tpm.esapi
    with tss_errors(f"persistent handle 0x{handle:08x}"):
        tr = es.tr_from_tpmpublic(handle)
    with tss_errors(f"TPM2_EvictControl(0x{handle:08x})"):
        es.evict_control(ESYS_TR.OWNER, tr, handle)


@contextmanager
def persistent(tpm: EsapiTPM, handle: int) -> Iterator[Loaded]:
    """An ESYS handle for a persistent object (closed, not flushed, on exit)."""
    es = tpm.esapi
    with tss_errors(f"persistent handle 0x{handle:08x}"):
        tr = es.tr_from_tpmpublic(handle)
    try:
        with tss_errors(f"TPM2_ReadPublic(0x{handle:08x})"):
            pub, _n, _qn = es.read_public(tr)
        yield Loaded(tr, _tpmt_bytes(pub), persistent=True)
    finally:
        with suppress(Exception):
            es.tr_close(tr)


def quote(tpm: EsapiTPM, key: Loaded, selection: bytes, nonce: bytes) -> tuple[bytes, bytes]:
    """TPM2_Quote (Part 3, 18.4) with the key's own scheme; returns (TPMS_ATTEST, TPMT_SIGNATURE)."""
    es = tpm.esapi
    try:
        sel, _ = TPML_PCR_SELECTION.unmarshal(selection)
    except Exception as e:
        raise TPMError(f"bad PCR selection: {e}") from e
    with tss_errors("TPM2_Quote"):
        attest, sig = es.quote(key.tr, sel, nonce, TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL))
    return bytes(attest.marshal())[2:], bytes(sig.marshal())


def activate_credential(tpm: EsapiTPM, key: Loaded, ek: Loaded, ek_policy_hash: int, id_object: bytes,
                        encrypted_secret: bytes) -> bytes:
    """TPM2_ActivateCredential (Part 3, 12.5): the AK with a password session, the EK with
    PolicySecret(endorsement). ``id_object`` and ``encrypted_secret`` are TPM2B bodies."""
    es = tpm.esapi
    blob = TPM2B_ID_OBJECT(id_object)
    secret = TPM2B_ENCRYPTED_SECRET(encrypted_secret)
    with _policy_secret_endorsement(tpm, ek_policy_hash) as sess, tss_errors("TPM2_ActivateCredential"):
        cert_info = es.activate_credential(key.tr, ek.tr, blob, secret, session1=ESYS_TR.PASSWORD,
                                           session2=sess)
    return bytes(cert_info)


def hierarchy_name(h: str) -> int:
    return {"endorsement": int(TPM2_RH.ENDORSEMENT), "owner": int(TPM2_RH.OWNER)}[h]
