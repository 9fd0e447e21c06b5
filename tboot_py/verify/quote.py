"""Quote verification: ``verify_quote(...) -> VerifiedPCRs`` (raises) and ``check_quote``
(never raises). :class:`VerifiedPCRs` can only be made by this module.

The checks follow TPM 2.0 Part 3, 18.4 (TPM2_Quote) and Part 2, 10.12 (TPMS_ATTEST):
a signature by a restricted signing key over a TPM-generated TPMS_ATTEST of type
TPM_ST_ATTEST_QUOTE names the signer, echoes the nonce in extraData and binds the PCR
values through pcrDigest = H_sign(PCR values in selection order).
"""

from __future__ import annotations

import base64
import contextvars
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tboot_py import algorithms, jsonin
from tboot_py.errors import Error, ParseError, VerificationError
from tboot_py.tpm import wire as st
from tboot_py.tpm.evidence import Evidence
from tboot_py.verify import errors as ve

if TYPE_CHECKING:
    from pathlib import Path


@dataclass(frozen=True)
class TrustedAK:
    """An AK the verifier trusts: its public area and, when known, its Qualified Name.

    TPM2_Quote puts the signing key's Qualified Name in qualifiedSigner (Part 2, 10.12.12;
    Part 1, 16), which depends on the AK's parent. Without it, qualifiedSigner can only be
    matched against the AK as a primary key of the endorsement or owner hierarchy.
    """

    public: st.Public
    qualified_name: bytes | None = None

    @classmethod
    def under_ek(cls, ak: st.Public, ek: st.Public) -> TrustedAK:
        """An AK created as a child of the EK (as tboot-py and tpm2_createak do)."""
        ek_qn = st.qualified_name(st.hierarchy_qualified_name(st.RH_ENDORSEMENT), ek)
        return cls(ak, st.qualified_name(ek_qn, ak))

    def signer_names(self) -> tuple[bytes, ...]:
        if self.qualified_name is not None:
            return (self.qualified_name,)
        return tuple(st.qualified_name(st.hierarchy_qualified_name(h), self.public)
                     for h in (st.RH_ENDORSEMENT, st.RH_OWNER))


#: A trusted AK: TrustedAK, its TPMT_PUBLIC (parsed, or bytes of TPMT_PUBLIC / TPM2B_PUBLIC),
#: or a bare public key (PEM input). A bare key cannot be checked against qualifiedSigner
#: or its attributes.
AKPublic = TrustedAK | st.Public | bytes | rsa.RSAPublicKey | ec.EllipticCurvePublicKey

_MINTING: contextvars.ContextVar[bool] = contextvars.ContextVar("_minting", default=False)

_CRYPTO_HASH: dict[int, type[hashes.HashAlgorithm]] = {
    algorithms.SHA1.alg_id: hashes.SHA1,
    algorithms.SHA256.alg_id: hashes.SHA256,
    algorithms.SHA384.alg_id: hashes.SHA384,
    algorithms.SHA512.alg_id: hashes.SHA512,
}


@dataclass(frozen=True, eq=False)
class VerifiedPCRs:
    """PCR values backed by a verified quote. Only :func:`verify_quote` can create one."""

    pcrs: Mapping[str, Mapping[int, bytes]]
    selection: st.PCRSelection
    nonce: bytes
    ak_name: bytes  # the AK's Name; empty when the AK was a bare key
    signer_checked: bool  # whether qualifiedSigner was matched to the AK's Qualified Name
    clock_info: st.ClockInfo
    firmware_version: int
    sign_hash: str

    def __post_init__(self) -> None:
        if not _MINTING.get():
            raise TypeError("VerifiedPCRs can only be created by tboot_py.verify.verify_quote")

    def value(self, bank: str, pcr: int) -> bytes:
        return self.pcrs[bank][pcr]


@dataclass(frozen=True)
class QuoteCheck(ve.CheckResult[VerifiedPCRs]):
    """Result of :func:`check_quote`: ``verified`` on success, else ``error``."""


@dataclass(frozen=True)
class QuoteHistory:
    """The AK's previous attestation: counters and clock of its last verified quote."""

    reset_count: int
    restart_count: int
    clock: int

    @classmethod
    def of(cls, v: VerifiedPCRs | st.ClockInfo) -> QuoteHistory:
        c = v.clock_info if isinstance(v, VerifiedPCRs) else v
        return cls(c.reset_count, c.restart_count, c.clock)


@lru_cache(maxsize=256)
def _parse_ak_cached(raw: bytes) -> st.Public:
    return st.parse_public(raw, source="AK public")


@dataclass(frozen=True)
class _AK:
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    public: st.Public | None = field(default=None)
    trusted: TrustedAK | None = None


def _resolve_ak(ak: AKPublic) -> _AK:
    try:
        if isinstance(ak, bytes | bytearray):
            pub = _parse_ak_cached(bytes(ak))
            return _AK(pub.crypto_key, pub, TrustedAK(pub))
        if isinstance(ak, st.Public):
            return _AK(ak.crypto_key, ak, TrustedAK(ak))
        if isinstance(ak, TrustedAK):
            return _AK(ak.public.crypto_key, ak.public, ak)
    except ParseError as e:
        raise ve.MalformedQuoteError(f"AK public area: {e.diagnostics()}") from e
    if isinstance(ak, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return _AK(ak, None)
    raise ve.MalformedQuoteError(f"unsupported AK type {type(ak).__name__}")


def _check_scheme(ak: _AK, sig: st.Signature) -> type[hashes.HashAlgorithm]:
    """The hash to verify with, after checking the AK allows this scheme (Part 1, 25.2:
    a restricted signing key with a fixed scheme signs only with that scheme)."""
    h = _CRYPTO_HASH.get(sig.hash_alg)
    if h is None:
        raise ve.SchemeNotAllowedError(f"signature hash 0x{sig.hash_alg:04x} is not supported")
    is_rsa = isinstance(ak.key, rsa.RSAPublicKey)
    allowed = (st.ALG_RSASSA, st.ALG_RSAPSS) if is_rsa else (st.ALG_ECDSA,)
    if sig.sig_alg not in allowed:
        raise ve.SchemeNotAllowedError(
            f"signature scheme {sig.scheme_name} cannot be verified with an {'RSA' if is_rsa else 'ECC'} AK")
    pub = ak.public
    if pub is not None and pub.scheme != st.ALG_NULL and (pub.scheme, pub.scheme_hash) != (sig.sig_alg,
                                                                                             sig.hash_alg):
        fixed = algorithms.by_id(pub.scheme_hash)
        used = algorithms.by_id(sig.hash_alg)
        raise ve.SchemeNotAllowedError(
            f"the AK allows only {st.SIG_SCHEME_NAMES.get(pub.scheme, hex(pub.scheme))}-"
            f"{fixed.name if fixed else hex(pub.scheme_hash)}, the quote is signed with "
            f"{sig.scheme_name}-{used.name if used else hex(sig.hash_alg)}")
    return h


def _check_signature(ak: _AK, sig: st.Signature, h: type[hashes.HashAlgorithm], message: bytes) -> None:
    try:
        if isinstance(ak.key, rsa.RSAPublicKey):
            if sig.sig_alg == st.ALG_RSASSA:
                ak.key.verify(sig.sig, message, padding.PKCS1v15(), h())
            else:
                # The TPM's PSS salt length varies by implementation (digest size or maximum).
                ak.key.verify(sig.sig, message, padding.PSS(padding.MGF1(h()), padding.PSS.AUTO), h())
        else:
            der = encode_dss_signature(int.from_bytes(sig.r, "big"), int.from_bytes(sig.s, "big"))
            ak.key.verify(der, message, ec.ECDSA(h()))
    except InvalidSignature as e:
        raise ve.BadSignatureError("quote signature does not verify with the AK") from e


def _norm(sel: st.PCRSelection) -> tuple[tuple[int, tuple[int, ...]], ...]:
    return tuple((b.alg_id, b.pcrs) for b in sel.banks if b.pcrs)


def _describe(sel: st.PCRSelection) -> str:
    return str(st.PCRSelection(tuple(b for b in sel.banks if b.pcrs))) or "(nothing)"


def verify_quote(evidence: Evidence, ak_public: AKPublic, nonce: bytes,
                 expected_selection: st.PCRSelection | None = None,
                 history: QuoteHistory | VerifiedPCRs | None = None, *,
                 exact_selection: bool = True, allow_empty_nonce: bool = False) -> VerifiedPCRs:
    """Verify the quote in ``evidence`` and return the PCR values it vouches for.

    ``expected_selection``: the quote must select exactly these PCRs, or with
    ``exact_selection=False`` at least these (it may cover more).

    Raises a :class:`~tboot_py.verify.errors.QuoteError` subclass naming the failed check.
    ``history`` is the AK's previous attestation; the new quote must be strictly newer.
    An empty nonce never verifies, unless ``allow_empty_nonce`` (re-checking archived
    evidence whose quote carries none; such a quote proves no freshness).
    """
    if not nonce and not allow_empty_nonce:
        raise ve.NonceTooShortError("the nonce is empty: a quote over no nonce proves no freshness")
    ak = _resolve_ak(ak_public)
    if ak.public is not None:
        if not (ak.public.has(st.OA_RESTRICTED) and ak.public.has(st.OA_SIGN)):
            raise ve.AKNotAttestationKeyError("the AK is not a restricted signing key")
        if evidence.untrusted_ak_public is not None:
            try:
                carried = _parse_ak_cached(bytes(evidence.untrusted_ak_public))
            except ParseError as e:
                raise ve.MalformedQuoteError(f"evidence AK public area: {e.diagnostics()}") from e
            if carried.raw != ak.public.raw:
                raise ve.AKMismatchError("the evidence carries a different AK than the trusted one")
    try:
        untrusted_attest = st.parse_attest(evidence.untrusted_attest, source="TPMS_ATTEST")
        untrusted_sig = st.parse_signature(evidence.untrusted_signature, source="TPMT_SIGNATURE")
    except ParseError as e:
        raise ve.MalformedQuoteError(e.diagnostics()) from e

    h = _check_scheme(ak, untrusted_sig)
    _check_signature(ak, untrusted_sig, h, untrusted_attest.raw)
    attest = untrusted_attest  # signed by the AK from here on

    if attest.magic != st.TPM_GENERATED_VALUE:
        raise ve.NotTPMGeneratedError(f"magic is 0x{attest.magic:08x}, not TPM_GENERATED_VALUE (0xff544347)")
    if attest.type != st.ST_ATTEST_QUOTE or attest.quote is None:
        raise ve.WrongAttestTypeError(f"attestation type is 0x{attest.type:04x}, not TPM_ST_ATTEST_QUOTE (0x8018)")
    signer_checked = False
    if ak.trusted is not None:
        names = ak.trusted.signer_names()
        if any(hmac.compare_digest(attest.qualified_signer, n) for n in names):
            signer_checked = True
        elif ak.trusted.qualified_name is not None:
            raise ve.SignerNameMismatchError(f"qualifiedSigner {attest.qualified_signer.hex()} is not the AK's "
                                             f"qualified name {ak.trusted.qualified_name.hex()}")
        elif attest.qualified_signer[:2] != ak.trusted.public.name[:2] or len(attest.qualified_signer) != len(
                ak.trusted.public.name):
            raise ve.SignerNameMismatchError(
                f"qualifiedSigner {attest.qualified_signer.hex()} does not use the AK's name algorithm")
    if not hmac.compare_digest(attest.extra_data, nonce):
        raise ve.NonceMismatchError(f"quote nonce {attest.extra_data.hex() or '(empty)'} is not the expected "
                                    f"nonce {nonce.hex() or '(empty)'}")
    # clockInfo.safe = NO (TPM 2.0 Part 1, 36.7: the TPM lost power without TPM2_Shutdown and
    # Clock may be behind a value it reported before) says nothing about freshness, which the
    # nonce proves. It only weakens Clock comparisons against an earlier quote, so it is
    # weighed in _check_history, never a reason to refuse a launch after a power cut.

    quoted = attest.quote.pcr_select
    qn = _norm(quoted)
    if len({a for a, _ in qn}) != len(qn):
        raise ve.SelectionMismatchError(f"quoted selection {_describe(quoted)} names a bank twice")
    if not qn:
        raise ve.SelectionMismatchError("the quote covers no PCR")
    if expected_selection is not None and (qn != _norm(expected_selection) if exact_selection else not all(
            set(pcrs) <= set(dict(qn).get(alg, ())) for alg, pcrs in _norm(expected_selection))):
        raise ve.SelectionMismatchError(
            f"quoted selection {_describe(quoted)} is not {'' if exact_selection else 'a superset of '}"
            f"the requested {_describe(expected_selection)}")

    supplied = evidence.untrusted_pcrs
    values: dict[str, dict[int, bytes]] = {}
    for b in quoted.banks:
        alg = b.alg
        if alg is None:
            raise ve.SelectionMismatchError(f"quoted bank 0x{b.alg_id:04x} is unknown")
        regs = supplied.get(alg.name, {})
        missing = [i for i in b.pcrs if i not in regs]
        if missing:
            raise ve.PCRValuesError(f"no value supplied for quoted PCR(s) {alg.name}:{missing}")
        for i in b.pcrs:
            if len(regs[i]) != alg.size:
                raise ve.PCRValuesError(f"PCR {alg.name}:{i} value has {len(regs[i])} bytes, not {alg.size}")
        values[alg.name] = {i: bytes(regs[i]) for i in b.pcrs}
    for bank, regs in supplied.items():
        extra = sorted(set(regs) - set(values.get(bank, {})))
        if extra:
            raise ve.PCRValuesError(f"PCR values {bank}:{extra} are not covered by the quote")

    sign_alg = algorithms.by_id(untrusted_sig.hash_alg)
    assert sign_alg is not None  # _check_scheme accepted only known hashes
    dh = sign_alg.new()
    for b in quoted.banks:
        name = b.bank
        for i in b.pcrs:
            dh.update(values[name][i])
    digest = bytes(dh.digest())
    if not hmac.compare_digest(digest, attest.quote.pcr_digest):
        raise ve.PCRDigestMismatchError(
            f"pcrDigest {attest.quote.pcr_digest.hex()} is not {sign_alg.name}(supplied PCR values) {digest.hex()}")

    if history is not None:
        _check_history(QuoteHistory.of(history) if isinstance(history, VerifiedPCRs) else history,
                       attest.clock_info)

    token = _MINTING.set(True)
    try:
        return VerifiedPCRs(
            pcrs=MappingProxyType({b: MappingProxyType(v) for b, v in values.items()}),
            selection=st.PCRSelection(tuple(b for b in quoted.banks if b.pcrs)),
            nonce=bytes(nonce),
            ak_name=ak.public.name if ak.public is not None else b"",
            signer_checked=signer_checked,
            clock_info=attest.clock_info,
            firmware_version=attest.firmware_version,
            sign_hash=sign_alg.name,
        )
    finally:
        _MINTING.reset(token)


def _check_history(prev: QuoteHistory, cur: st.ClockInfo) -> None:
    """resetCount and restartCount never decrease for one TPM, and Clock only advances while
    safe (TPM 2.0 Part 1, 36.3-36.7); an identical triple is the same quote replayed."""
    if cur.reset_count < prev.reset_count:
        raise ve.CounterRollbackError(f"resetCount {cur.reset_count} is below the previous {prev.reset_count}")
    if cur.reset_count == prev.reset_count and cur.restart_count < prev.restart_count:
        raise ve.CounterRollbackError(
            f"restartCount {cur.restart_count} is below the previous {prev.restart_count}")
    if cur.clock < prev.clock and (cur.safe or cur.reset_count == prev.reset_count):
        # Not safe after a TPM Reset (power lost without TPM2_Shutdown): Clock restarts from
        # its last saved value and may be behind an earlier quote's (Part 1, 36.7).
        raise ve.CounterRollbackError(f"clock {cur.clock} is before the previous quote's {prev.clock}")
    if (cur.reset_count, cur.restart_count, cur.clock) == (prev.reset_count, prev.restart_count, prev.clock):
        raise ve.ReplayedQuoteError("the quote is not newer than the AK's previous attestation (replayed quote)")


def check_quote(evidence: Evidence, ak_public: AKPublic, nonce: bytes,
                expected_selection: st.PCRSelection | None = None,
                history: QuoteHistory | VerifiedPCRs | None = None, *,
                exact_selection: bool = True, allow_empty_nonce: bool = False) -> QuoteCheck:
    """Like :func:`verify_quote` but returns a :class:`QuoteCheck` and never raises."""
    try:
        return QuoteCheck(verify_quote(evidence, ak_public, nonce, expected_selection, history,
                                       exact_selection=exact_selection, allow_empty_nonce=allow_empty_nonce))
    except VerificationError as e:
        return QuoteCheck(None, e)
    except Error as e:
        return QuoteCheck(None, ve.MalformedQuoteError(e.diagnostics()))
    except Exception as e:  # fail closed on anything unexpected
        return QuoteCheck(None, ve.QuoteError(f"internal error while verifying: {type(e).__name__}: {e}"))


def load_trusted_ak(path: str | Path) -> AKPublic:
    """Read a trusted AK from a file: tboot-py's ``ak.json`` state (or the state directory),
    PEM (SubjectPublicKeyInfo), or binary TPMT_PUBLIC / TPM2B_PUBLIC (tpm2-tools ``-f tpmt``,
    ``tpm2_createak -u``). Raises InputError/ParseError."""
    from tboot_py.errors import InputError
    from tboot_py.fileio import SMALL, STDIN, read_input

    p = os.fspath(path)  # os.path, not pathlib: `verify` and `quote verify` load no pathlib
    if p != STDIN and os.path.isdir(p):
        p = os.path.join(p, "ak.json")
    data = read_input(p, "AK", SMALL)
    if data.lstrip().startswith(b"{"):
        try:
            rec = jsonin.loads(data)
            pub = st.parse_public(base64.b64decode(rec["public"], validate=True), source=p)
            qn = rec.get("qualified_name")
            return TrustedAK(pub, bytes.fromhex(qn) if qn else None)
        except (ValueError, KeyError, TypeError) as e:
            raise ParseError(f"not an AK state file: {e}", 0, p) from e
    if data.lstrip().startswith(b"-----BEGIN"):
        # Imported only here: cryptography's serialization package also loads its SSH and
        # cipher modules, which an ak.json or TPM2B_PUBLIC AK never needs.
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        try:
            key = load_pem_public_key(data)
        except ValueError as e:
            raise ParseError(f"bad PEM public key: {e}", 0, p) from e
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise InputError(f"{p}: AK must be an RSA or ECC key")
        return key
    return TrustedAK(st.parse_public(data, source=p))
