"""TPM 2.0 structures for attestation: bounds-checked parsers and marshallers.

Parsers take hostile bytes and raise only :class:`~tboot_py.errors.ParseError` (with the
offset). Section numbers refer to TPM 2.0 Library Part 2 ("Structures"), rev. 1.59.
Every integer is big-endian (Part 1, 9.2 "Marshaling").
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tboot_py import algorithms
from tboot_py.algorithms import HashAlg
from tboot_py.errors import ParseError

# TPM_ALG_ID values (Part 2, 6.3).
ALG_RSA = 0x0001
ALG_KEYEDHASH = 0x0008
ALG_AES = 0x0006
ALG_XOR = 0x000A
ALG_HMAC = 0x0005
ALG_NULL = 0x0010
ALG_RSASSA = 0x0014
ALG_RSAES = 0x0015
ALG_RSAPSS = 0x0016
ALG_OAEP = 0x0017
ALG_ECDSA = 0x0018
ALG_ECDH = 0x0019
ALG_ECDAA = 0x001A
ALG_SM2 = 0x001B
ALG_ECSCHNORR = 0x001C
ALG_ECMQV = 0x001D
ALG_KDF1_SP800_56A = 0x0020
ALG_KDF2 = 0x0021
ALG_KDF1_SP800_108 = 0x0022
ALG_ECC = 0x0023
ALG_SYMCIPHER = 0x0025
ALG_CFB = 0x0043

SIG_SCHEME_NAMES = {ALG_RSASSA: "rsassa", ALG_RSAPSS: "rsapss", ALG_ECDSA: "ecdsa", ALG_ECDAA: "ecdaa",
                    ALG_SM2: "sm2", ALG_ECSCHNORR: "ecschnorr", ALG_HMAC: "hmac", ALG_NULL: "null"}

# TPM_ECC_CURVE (Part 2, 6.4).
CURVE_NIST_P256 = 0x0003
CURVE_NIST_P384 = 0x0004
CURVE_NIST_P521 = 0x0005
CURVES: dict[int, tuple[str, int]] = {CURVE_NIST_P256: ("P-256", 32), CURVE_NIST_P384: ("P-384", 48),
                                      CURVE_NIST_P521: ("P-521", 66)}

# TPM_GENERATED_VALUE and TPM_ST_ATTEST_* (Part 2, 6.2 and 6.9).
TPM_GENERATED_VALUE = 0xFF544347
ST_ATTEST_CERTIFY = 0x8017
ST_ATTEST_QUOTE = 0x8018
ST_ATTEST_SESSION_AUDIT = 0x8016
ST_ATTEST_COMMAND_AUDIT = 0x8015
ST_ATTEST_TIME = 0x8019
ST_ATTEST_CREATION = 0x801A
ST_ATTEST_NV = 0x8014

# TPMA_OBJECT bits (Part 2, 8.3).
OA_FIXED_TPM = 1 << 1
OA_ST_CLEAR = 1 << 2
OA_FIXED_PARENT = 1 << 4
OA_SENSITIVE_DATA_ORIGIN = 1 << 5
OA_USER_WITH_AUTH = 1 << 6
OA_ADMIN_WITH_POLICY = 1 << 7
OA_NO_DA = 1 << 10
OA_ENCRYPTED_DUPLICATION = 1 << 11
OA_RESTRICTED = 1 << 16
OA_DECRYPT = 1 << 17
OA_SIGN = 1 << 18

#: Hard caps: nothing in these structures is legitimately larger (Part 2, Table 1 sizes).
MAX_TPM2B = 1024
MAX_PCR_SELECT = 32  # sizeofSelect; PCR_SELECT_MAX is 3 on PC Client TPMs, allow more
MAX_SELECTIONS = 16  # HASH_COUNT (number of banks)


class Reader:
    """A bounds-checked cursor over untrusted bytes; every failure is a ParseError."""

    __slots__ = ("buf", "pos", "source")

    def __init__(self, buf: bytes, source: str | None = None) -> None:
        self.buf = bytes(buf)
        self.pos = 0
        self.source = source

    def fail(self, message: str, at: int | None = None) -> ParseError:
        return ParseError(message, self.pos if at is None else at, self.source)

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or n > len(self.buf) - self.pos:
            raise self.fail(f"{what}: needs {n} bytes, {len(self.buf) - self.pos} left")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        v: int = struct.unpack(">H", self.take(2, what))[0]
        return v

    def u32(self, what: str) -> int:
        v: int = struct.unpack(">I", self.take(4, what))[0]
        return v

    def u64(self, what: str) -> int:
        v: int = struct.unpack(">Q", self.take(8, what))[0]
        return v

    def tpm2b(self, what: str, cap: int = MAX_TPM2B) -> bytes:
        at = self.pos
        n = self.u16(f"{what} size")
        if n > cap:
            raise self.fail(f"{what}: size {n} exceeds the limit {cap}", at)
        return self.take(n, what)

    def end(self, what: str) -> None:
        if self.pos != len(self.buf):
            raise self.fail(f"{what}: {len(self.buf) - self.pos} trailing bytes")


def _u16(v: int) -> bytes:
    return struct.pack(">H", v)


def _u32(v: int) -> bytes:
    return struct.pack(">I", v)


def _b(data: bytes) -> bytes:
    return _u16(len(data)) + data


def tpm2b(data: bytes) -> bytes:
    """Marshal a TPM2B_* (UINT16 size then the bytes)."""
    return _b(data)


def strip_tpm2b(data: bytes, what: str) -> bytes:
    """The body of a TPM2B_* whose size field must cover exactly the rest of ``data``."""
    r = Reader(data, what)
    body = r.tpm2b(what, cap=len(data))
    r.end(what)
    return body


# --------------------------------------------------------------------------- PCR selection


@dataclass(frozen=True)
class PCRBankSelection:
    """TPMS_PCR_SELECTION (Part 2, 10.6.2): one bank and the PCRs selected in it."""

    alg_id: int
    pcrs: tuple[int, ...]
    size_of_select: int = 3

    @property
    def alg(self) -> HashAlg | None:
        return algorithms.by_id(self.alg_id)

    @property
    def bank(self) -> str:
        a = self.alg
        return a.name if a is not None else f"alg-0x{self.alg_id:04x}"


@dataclass(frozen=True)
class PCRSelection:
    """TPML_PCR_SELECTION (Part 2, 10.9.7): banks in order, each with ascending PCR indices."""

    banks: tuple[PCRBankSelection, ...]

    @classmethod
    def of(cls, spec: Mapping[str, Iterable[int]] | Iterable[tuple[str, Iterable[int]]]) -> PCRSelection:
        """Build from ``{"sha256": [0, 1, 7]}``; bank order is kept, PCRs are sorted."""
        items = spec.items() if isinstance(spec, Mapping) else spec
        out: list[PCRBankSelection] = []
        for name, pcrs in items:
            alg = algorithms.by_name(name)
            idx = tuple(sorted(set(pcrs)))
            size = max(3, (max(idx) // 8 + 1) if idx else 3)
            out.append(PCRBankSelection(alg.alg_id, idx, size))
        return cls(tuple(out))

    @classmethod
    def parse_spec(cls, spec: str) -> PCRSelection:
        """``sha1:0,1,2+sha256:0-7`` (the tpm2-tools syntax)."""
        from tboot_py.errors import InputError
        from tboot_py.tpm import parse_pcr_list

        items: list[tuple[str, list[int]]] = []
        for part in spec.split("+"):
            if ":" not in part:
                raise InputError(f"bad PCR selection {spec!r}: expected BANK:PCRS")
            name, lst = part.split(":", 1)
            items.append((name, parse_pcr_list(lst)))
        return cls.of(items)

    def as_dict(self) -> dict[str, tuple[int, ...]]:
        return {b.bank: b.pcrs for b in self.banks}

    def marshal(self) -> bytes:
        out = bytearray(_u32(len(self.banks)))
        for b in self.banks:
            bits = bytearray(b.size_of_select)
            for i in b.pcrs:
                bits[i // 8] |= 1 << (i % 8)
            out += _u16(b.alg_id) + bytes([b.size_of_select]) + bits
        return bytes(out)

    def __str__(self) -> str:
        return "+".join(f"{b.bank}:{','.join(map(str, b.pcrs))}" for b in self.banks)


def read_pcr_selection(r: Reader) -> PCRSelection:
    at = r.pos
    count = r.u32("TPML_PCR_SELECTION.count")
    if count > MAX_SELECTIONS:
        raise r.fail(f"TPML_PCR_SELECTION.count {count} exceeds {MAX_SELECTIONS}", at)
    banks: list[PCRBankSelection] = []
    for _ in range(count):
        alg_id = r.u16("TPMS_PCR_SELECTION.hash")
        at = r.pos
        size = r.u8("TPMS_PCR_SELECTION.sizeofSelect")
        if size > MAX_PCR_SELECT:
            raise r.fail(f"sizeofSelect {size} exceeds {MAX_PCR_SELECT}", at)
        bits = r.take(size, "TPMS_PCR_SELECTION.pcrSelect")
        pcrs = tuple(i for i in range(size * 8) if bits[i // 8] >> (i % 8) & 1)
        banks.append(PCRBankSelection(alg_id, pcrs, size))
    return PCRSelection(tuple(banks))


def parse_pcr_selection(data: bytes, source: str | None = None) -> PCRSelection:
    r = Reader(data, source)
    sel = read_pcr_selection(r)
    r.end("TPML_PCR_SELECTION")
    return sel


# --------------------------------------------------------------------------- TPMS_ATTEST


@dataclass(frozen=True)
class ClockInfo:
    """TPMS_CLOCK_INFO (Part 2, 10.11.1)."""

    clock: int
    reset_count: int
    restart_count: int
    safe: bool


@dataclass(frozen=True)
class QuoteInfo:
    """TPMS_QUOTE_INFO (Part 2, 10.12.4)."""

    pcr_select: PCRSelection
    pcr_digest: bytes


@dataclass(frozen=True)
class Attest:
    """TPMS_ATTEST (Part 2, 10.12.12). ``quote`` is set only for TPM_ST_ATTEST_QUOTE."""

    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    quote: QuoteInfo | None
    attested_raw: bytes
    raw: bytes = field(repr=False)


def parse_attest(data: bytes, source: str | None = None) -> Attest:
    """Parse a TPMS_ATTEST (the body of TPM2B_ATTEST, as ``tpm2_quote -m`` writes it)."""
    r = Reader(data, source)
    magic = r.u32("TPMS_ATTEST.magic")
    typ = r.u16("TPMS_ATTEST.type")
    signer = r.tpm2b("TPMS_ATTEST.qualifiedSigner", cap=2 + 64)
    extra = r.tpm2b("TPMS_ATTEST.extraData", cap=64)
    clock = r.u64("TPMS_CLOCK_INFO.clock")
    reset = r.u32("TPMS_CLOCK_INFO.resetCount")
    restart = r.u32("TPMS_CLOCK_INFO.restartCount")
    at = r.pos
    safe = r.u8("TPMS_CLOCK_INFO.safe")
    if safe > 1:  # TPMI_YES_NO (Part 2, 9.2)
        raise r.fail(f"TPMS_CLOCK_INFO.safe is {safe}, not YES/NO", at)
    fw = r.u64("TPMS_ATTEST.firmwareVersion")
    start = r.pos
    quote: QuoteInfo | None = None
    if typ == ST_ATTEST_QUOTE:
        sel = read_pcr_selection(r)
        digest = r.tpm2b("TPMS_QUOTE_INFO.pcrDigest", cap=64)
        quote = QuoteInfo(sel, digest)
        r.end("TPMS_ATTEST")
    attested = r.buf[start:]
    return Attest(magic, typ, signer, extra, ClockInfo(clock, reset, restart, bool(safe)), fw, quote, attested,
                  r.buf)


def marshal_attest(a: Attest) -> bytes:
    """Marshal back (used to build tampering cases in tests and to re-emit evidence)."""
    out = _u32(a.magic) + _u16(a.type) + _b(a.qualified_signer) + _b(a.extra_data)
    c = a.clock_info
    out += struct.pack(">QIIB", c.clock, c.reset_count, c.restart_count, int(c.safe)) + struct.pack(">Q",
                                                                                                     a.firmware_version)
    if a.quote is not None:
        out += a.quote.pcr_select.marshal() + _b(a.quote.pcr_digest)
    else:
        out += a.attested_raw
    return out


# --------------------------------------------------------------------------- TPMT_SIGNATURE


@dataclass(frozen=True)
class Signature:
    """TPMT_SIGNATURE (Part 2, 11.3.4). RSA: ``sig``; ECC: ``r`` and ``s``."""

    sig_alg: int
    hash_alg: int
    sig: bytes = b""
    r: bytes = b""
    s: bytes = b""

    @property
    def scheme_name(self) -> str:
        return SIG_SCHEME_NAMES.get(self.sig_alg, f"0x{self.sig_alg:04x}")

    def marshal(self) -> bytes:
        if self.sig_alg in (ALG_RSASSA, ALG_RSAPSS):
            return _u16(self.sig_alg) + _u16(self.hash_alg) + _b(self.sig)
        return _u16(self.sig_alg) + _u16(self.hash_alg) + _b(self.r) + _b(self.s)


def parse_signature(data: bytes, source: str | None = None) -> Signature:
    r = Reader(data, source)
    at = r.pos
    alg = r.u16("TPMT_SIGNATURE.sigAlg")
    if alg in (ALG_RSASSA, ALG_RSAPSS):  # TPMS_SIGNATURE_RSA (11.3.1)
        h = r.u16("TPMS_SIGNATURE_RSA.hash")
        sig = r.tpm2b("TPMS_SIGNATURE_RSA.sig", cap=512)
        r.end("TPMT_SIGNATURE")
        return Signature(alg, h, sig=sig)
    if alg in (ALG_ECDSA, ALG_ECDAA, ALG_SM2, ALG_ECSCHNORR):  # TPMS_SIGNATURE_ECC (11.3.2)
        h = r.u16("TPMS_SIGNATURE_ECC.hash")
        sr = r.tpm2b("TPMS_SIGNATURE_ECC.signatureR", cap=66)
        ss = r.tpm2b("TPMS_SIGNATURE_ECC.signatureS", cap=66)
        r.end("TPMT_SIGNATURE")
        return Signature(alg, h, r=sr, s=ss)
    raise r.fail(f"unsupported signature algorithm 0x{alg:04x}", at)


# --------------------------------------------------------------------------- TPMT_PUBLIC


@dataclass(frozen=True)
class Public:
    """TPMT_PUBLIC (Part 2, 12.2.4) for RSA, ECC, KEYEDHASH and SYMCIPHER objects.

    ``scheme``/``scheme_hash`` are the key's signing or decryption scheme (ALG_NULL when
    the key leaves it open). ``raw`` is the exact TPMT_PUBLIC the name is computed over.
    """

    type: int
    name_alg: int
    attributes: int
    auth_policy: bytes
    symmetric: tuple[int, int, int]  # (algorithm, keyBits, mode); (ALG_NULL, 0, 0) when none
    scheme: int
    scheme_hash: int
    rsa_bits: int = 0
    rsa_exponent: int = 0
    curve: int = 0
    kdf: tuple[int, int] = (ALG_NULL, 0)
    unique: bytes = b""  # RSA modulus, or keyed-hash/symcipher unique
    ecc_x: bytes = b""
    ecc_y: bytes = b""
    raw: bytes = field(default=b"", repr=False, compare=False)

    @cached_property
    def name(self) -> bytes:
        """The object's Name: nameAlg || H_nameAlg(TPMT_PUBLIC) (Part 1, 16 "Names")."""
        alg = algorithms.by_id(self.name_alg)
        if alg is None:
            raise ParseError(f"TPMT_PUBLIC.nameAlg 0x{self.name_alg:04x} is not a known hash", 2)
        return _u16(self.name_alg) + alg.digest(self.raw or self.marshal())

    def has(self, bit: int) -> bool:
        return bool(self.attributes & bit)

    @cached_property
    def crypto_key(self) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
        """The public key as a ``cryptography`` object (built once and cached)."""
        if self.type == ALG_RSA:
            e = self.rsa_exponent or 65537  # 0 means the default exponent (Part 2, 12.2.3.5)
            return rsa.RSAPublicNumbers(e, int.from_bytes(self.unique, "big")).public_key()
        if self.type == ALG_ECC:
            curve = {CURVE_NIST_P256: ec.SECP256R1(), CURVE_NIST_P384: ec.SECP384R1(),
                     CURVE_NIST_P521: ec.SECP521R1()}.get(self.curve)
            if curve is None:
                raise ParseError(f"unsupported ECC curve 0x{self.curve:04x}", 0)
            try:
                return ec.EllipticCurvePublicNumbers(int.from_bytes(self.ecc_x, "big"),
                                                     int.from_bytes(self.ecc_y, "big"), curve).public_key()
            except ValueError as e:
                raise ParseError(f"ECC point is not on the curve: {e}", 0) from e
        raise ParseError(f"object type 0x{self.type:04x} has no asymmetric public key", 0)

    def marshal(self) -> bytes:
        out = _u16(self.type) + _u16(self.name_alg) + _u32(self.attributes) + _b(self.auth_policy)
        if self.type in (ALG_RSA, ALG_ECC, ALG_SYMCIPHER):
            sa, sb, sm = self.symmetric
            out += _u16(sa) + (b"" if sa == ALG_NULL else _u16(sb) + _u16(sm))
        if self.type == ALG_SYMCIPHER:
            return out + _b(self.unique)
        out += _u16(self.scheme)
        if self.scheme != ALG_NULL:
            out += _u16(self.scheme_hash)
            if self.scheme == ALG_ECDAA:
                out += _u16(0)
        if self.type == ALG_RSA:
            return out + _u16(self.rsa_bits) + _u32(self.rsa_exponent) + _b(self.unique)
        if self.type == ALG_ECC:
            ka, kh = self.kdf
            out += _u16(self.curve) + _u16(ka) + (b"" if ka == ALG_NULL else _u16(kh))
            return out + _b(self.ecc_x) + _b(self.ecc_y)
        return out + _b(self.unique)  # KEYEDHASH


def _read_sym(r: Reader) -> tuple[int, int, int]:
    alg = r.u16("TPMT_SYM_DEF_OBJECT.algorithm")
    if alg == ALG_NULL:
        return (ALG_NULL, 0, 0)
    return (alg, r.u16("TPMT_SYM_DEF_OBJECT.keyBits"), r.u16("TPMT_SYM_DEF_OBJECT.mode"))


def read_public(r: Reader) -> Public:
    start = r.pos
    typ = r.u16("TPMT_PUBLIC.type")
    name_alg = r.u16("TPMT_PUBLIC.nameAlg")
    attrs = r.u32("TPMT_PUBLIC.objectAttributes")
    policy = r.tpm2b("TPMT_PUBLIC.authPolicy", cap=64)
    kw: dict[str, Any] = {}
    sym = (ALG_NULL, 0, 0)
    scheme, scheme_hash = ALG_NULL, 0
    if typ == ALG_RSA:  # TPMS_RSA_PARMS (12.2.3.5)
        sym = _read_sym(r)
        scheme = r.u16("TPMT_RSA_SCHEME.scheme")
        if scheme != ALG_NULL:
            scheme_hash = r.u16("TPMT_RSA_SCHEME.details.hashAlg")
        kw["rsa_bits"] = r.u16("TPMS_RSA_PARMS.keyBits")
        kw["rsa_exponent"] = r.u32("TPMS_RSA_PARMS.exponent")
        kw["unique"] = r.tpm2b("TPM2B_PUBLIC_KEY_RSA", cap=512)
    elif typ == ALG_ECC:  # TPMS_ECC_PARMS (12.2.3.6)
        sym = _read_sym(r)
        scheme = r.u16("TPMT_ECC_SCHEME.scheme")
        if scheme != ALG_NULL:
            scheme_hash = r.u16("TPMT_ECC_SCHEME.details.hashAlg")
            if scheme == ALG_ECDAA:
                r.u16("TPMS_SCHEME_ECDAA.count")
        kw["curve"] = r.u16("TPMS_ECC_PARMS.curveID")
        ka = r.u16("TPMT_KDF_SCHEME.scheme")
        kw["kdf"] = (ka, 0 if ka == ALG_NULL else r.u16("TPMT_KDF_SCHEME.details.hashAlg"))
        kw["ecc_x"] = r.tpm2b("TPMS_ECC_POINT.x", cap=66)
        kw["ecc_y"] = r.tpm2b("TPMS_ECC_POINT.y", cap=66)
    elif typ == ALG_KEYEDHASH:  # TPMS_KEYEDHASH_PARMS (12.2.3.3)
        scheme = r.u16("TPMT_KEYEDHASH_SCHEME.scheme")
        if scheme == ALG_HMAC:
            scheme_hash = r.u16("TPMS_SCHEME_HMAC.hashAlg")
        elif scheme == ALG_XOR:
            scheme_hash = r.u16("TPMS_SCHEME_XOR.hashAlg")
            kw["kdf"] = (r.u16("TPMS_SCHEME_XOR.kdf"), 0)
        elif scheme != ALG_NULL:
            raise r.fail(f"unknown keyed-hash scheme 0x{scheme:04x}")
        kw["unique"] = r.tpm2b("TPM2B_DIGEST", cap=64)
    elif typ == ALG_SYMCIPHER:  # TPMS_SYMCIPHER_PARMS (12.2.3.4)
        sym = _read_sym(r)
        kw["unique"] = r.tpm2b("TPM2B_DIGEST", cap=64)
    else:
        raise r.fail(f"unsupported object type 0x{typ:04x}", start)
    return Public(typ, name_alg, attrs, policy, sym, scheme, scheme_hash, raw=r.buf[start : r.pos], **kw)


def parse_public(data: bytes, source: str | None = None) -> Public:
    """Parse a TPMT_PUBLIC, or a TPM2B_PUBLIC (detected by its size prefix)."""
    data = bytes(data)
    if len(data) >= 2 and int.from_bytes(data[:2], "big") == len(data) - 2:
        # TPM2B_PUBLIC: a TPMT_PUBLIC never starts with a type equal to its own remaining length
        # for the key types handled here (RSA=1, KEYEDHASH=8, ECC=0x23, SYMCIPHER=0x25).
        data = data[2:]
    r = Reader(data, source)
    pub = read_public(r)
    r.end("TPMT_PUBLIC")
    return pub


# --------------------------------------------------------------------------- templates


def rsa_template(attributes: int, *, name_alg: int = algorithms.SHA256.alg_id, policy: bytes = b"",
                 symmetric: tuple[int, int, int] = (ALG_NULL, 0, 0), scheme: int = ALG_NULL,
                 scheme_hash: int = 0, bits: int = 2048, unique: bytes = b"") -> Public:
    return Public(ALG_RSA, name_alg, attributes, policy, symmetric, scheme, scheme_hash, rsa_bits=bits,
                  rsa_exponent=0, unique=unique)


def ecc_template(attributes: int, curve: int, *, name_alg: int = algorithms.SHA256.alg_id, policy: bytes = b"",
                 symmetric: tuple[int, int, int] = (ALG_NULL, 0, 0), scheme: int = ALG_NULL,
                 scheme_hash: int = 0, unique_size: int = 0) -> Public:
    return Public(ALG_ECC, name_alg, attributes, policy, symmetric, scheme, scheme_hash, curve=curve,
                  ecc_x=bytes(unique_size), ecc_y=bytes(unique_size))


# --------------------------------------------------------------------------- names

#: TPM_RH_ENDORSEMENT and TPM_RH_OWNER; a hierarchy's Name and Qualified Name is its handle
#: (TPM 2.0 Part 1, 16 "Names").
RH_ENDORSEMENT = 0x4000000B
RH_OWNER = 0x40000001


def qualified_name(parent_qualified_name: bytes, child: Public) -> bytes:
    """QN_child = nameAlg || H_nameAlg(QN_parent || Name_child) (Part 1, 16 "Qualified Name")."""
    alg = algorithms.by_id(child.name_alg)
    if alg is None:
        raise ParseError(f"nameAlg 0x{child.name_alg:04x} is not a known hash", 2)
    return _u16(child.name_alg) + alg.digest(parent_qualified_name + child.name)


def hierarchy_qualified_name(handle: int) -> bytes:
    return _u32(handle)
