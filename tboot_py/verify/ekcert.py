"""EK certificates: NV padding, key match, chain validation against a CA directory.

Real EK certificates are quirky (TCG EK Credential Profile 2.3, 3.2): NV indices are often
larger than the DER and padded with 0x00 or 0xFF; the subject is empty and the TPM
identity sits in a critical SubjectAltName directoryName (2.23.133.2.x attributes) that
generic path validators reject; the EKU is tcg-kp-EKCertificate (2.23.133.8.1). So the chain
is checked here directly: each signature over the original TBS bytes with the issuer key.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from tboot_py.errors import InputError, ParseError, VerificationError
from tboot_py.fileio import SMALL, read_file
from tboot_py.tpm import wire as st


class EKCertificateError(VerificationError):
    """An EK certificate that does not chain to a trusted CA or does not match the EK."""


def strip_der_padding(data: bytes) -> bytes:
    """Cut an NV blob to the length its outer DER SEQUENCE header announces (X.690, 8.1.3)."""
    if len(data) < 2 or data[0] != 0x30:
        raise ParseError("EK certificate is not a DER SEQUENCE", 0)
    first = data[1]
    if first < 0x80:
        total = 2 + first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or len(data) < 2 + n:
            raise ParseError("EK certificate has a bad DER length", 1)
        total = 2 + n + int.from_bytes(data[2 : 2 + n], "big")
    if total > len(data):
        raise ParseError(f"EK certificate is truncated: DER says {total} bytes, {len(data)} present", len(data))
    rest = data[total:]
    if rest.strip(b"\x00") and rest.strip(b"\xff"):
        raise ParseError("EK certificate is followed by bytes that are not NV padding", total)
    return data[:total]


def load_certificate(data: bytes) -> x509.Certificate:
    """A certificate from DER (padding tolerated) or PEM."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(strip_der_padding(data))
    except ValueError as e:
        raise ParseError(f"not a usable X.509 certificate: {e}", 0) from e


def public_matches_certificate(pub: st.Public, cert_der: bytes) -> bool:
    """Whether the TPM public area holds the same key as the certificate."""
    cert_key = load_certificate(cert_der).public_key()
    key = pub.crypto_key
    if isinstance(key, rsa.RSAPublicKey) and isinstance(cert_key, rsa.RSAPublicKey):
        return key.public_numbers() == cert_key.public_numbers()
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(cert_key, ec.EllipticCurvePublicKey):
        return key.public_numbers() == cert_key.public_numbers()
    return False


def load_ca_dir(path: Path) -> list[x509.Certificate]:
    """Every certificate (PEM, possibly several per file, or DER) in a directory or file."""
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    if not path.exists():
        raise InputError(f"{path}: no such CA file or directory")
    out: list[x509.Certificate] = []
    for f in files:
        data = read_file(f, "CA certificate", SMALL)
        if b"-----BEGIN CERTIFICATE-----" in data:
            try:
                out.extend(x509.load_pem_x509_certificates(data))
            except ValueError as e:
                raise InputError(f"{f}: bad PEM certificate: {e}") from e
        elif f.suffix.lower() in (".der", ".cer", ".crt"):
            try:
                out.append(x509.load_der_x509_certificate(data))
            except ValueError as e:
                raise InputError(f"{f}: bad DER certificate: {e}") from e
    if not out:
        raise InputError(f"{path}: no CA certificates found")
    return out


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    key = issuer.public_key()
    h = cert.signature_hash_algorithm
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if h is None:
                return False
            pad: padding.AsymmetricPadding = padding.PKCS1v15()
            params = cert.signature_algorithm_parameters
            if isinstance(params, padding.PSS):
                pad = params
            key.verify(cert.signature, cert.tbs_certificate_bytes, pad, h)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if h is None:
                return False
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(h))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _valid_at(cert: x509.Certificate, now: _dt.datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


@dataclass(frozen=True)
class ChainResult:
    """Result of :func:`check_ek_chain`: ``ok`` and the chain's subjects, or the reason."""

    ok: bool
    chain: tuple[str, ...]
    reason: str = ""


def check_ek_chain(cert_der: bytes, cas: list[x509.Certificate], now: _dt.datetime | None = None,
                   max_depth: int = 5) -> ChainResult:
    """Walk from the EK certificate through the CA certificates to a self-signed root.

    Every certificate in ``cas`` is a candidate issuer; the chain must end at a self-signed
    certificate from ``cas`` (the trust anchors the operator chose). Never raises.
    """
    now = now or _dt.datetime.now(_dt.UTC)
    try:
        cert = load_certificate(cert_der)
    except ParseError as e:
        return ChainResult(False, (), e.diagnostics())
    chain = [cert.subject.rfc4514_string() or "(empty subject)"]
    if not _valid_at(cert, now):
        return ChainResult(False, tuple(chain), "EK certificate is outside its validity period")
    cur = cert
    for _ in range(max_depth):
        issuer = next((c for c in cas if _signed_by(cur, c)), None)
        if issuer is None:
            return ChainResult(False, tuple(chain),
                               f"no trusted CA signed {cur.subject.rfc4514_string() or 'the EK certificate'} "
                               f"(issuer {cur.issuer.rfc4514_string()})")
        chain.append(issuer.subject.rfc4514_string())
        if not _valid_at(issuer, now):
            return ChainResult(False, tuple(chain), f"CA {issuer.subject.rfc4514_string()} is outside its validity")
        try:
            bc = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
            is_ca = bc.ca
        except x509.ExtensionNotFound:
            is_ca = issuer.version == x509.Version.v1  # old v1 roots carry no extensions
        if not is_ca:
            return ChainResult(False, tuple(chain), f"{issuer.subject.rfc4514_string()} is not a CA")
        if _signed_by(issuer, issuer):
            return ChainResult(True, tuple(chain))
        cur = issuer
    return ChainResult(False, tuple(chain), "certificate chain is too long")


def verify_ek_chain(cert_der: bytes, ca: Path | list[x509.Certificate]) -> tuple[str, ...]:
    """Raise :class:`EKCertificateError` unless the EK certificate chains to a trusted root."""
    cas = load_ca_dir(ca) if isinstance(ca, Path) else ca
    r = check_ek_chain(cert_der, cas)
    if not r.ok:
        raise EKCertificateError(f"EK certificate rejected: {r.reason}")
    return r.chain


def ek_publics_for_certificate(cert_der: bytes) -> list[st.Public]:
    """The EK public areas a TPM derives from the TCG default templates (EK Credential
    Profile 2.3, B.3/B.4) for the certificate's key: the template with the certificate's
    key as ``unique``. Their Names tie an AK's Qualified Name to this EK."""
    import dataclasses

    from tboot_py.tpm.ek import EK_KINDS

    key = load_certificate(cert_der).public_key()
    out: list[st.Public] = []
    for kind in EK_KINDS.values():
        t = kind.template
        if isinstance(key, rsa.RSAPublicKey) and t.type == st.ALG_RSA and key.key_size == t.rsa_bits:
            nums = key.public_numbers()
            if nums.e == 65537:  # the templates leave the exponent 0: the default 2^16+1
                out.append(dataclasses.replace(t, unique=nums.n.to_bytes(t.rsa_bits // 8, "big")))
        elif isinstance(key, ec.EllipticCurvePublicKey) and t.type == st.ALG_ECC:
            curve, size = st.CURVES.get(t.curve, ("", 0))
            if key.curve.name == {"P-256": "secp256r1", "P-384": "secp384r1", "P-521": "secp521r1"}.get(curve):
                pt = key.public_numbers()
                out.append(dataclasses.replace(t, ecc_x=pt.x.to_bytes(size, "big"), ecc_y=pt.y.to_bytes(size, "big")))
    return out
