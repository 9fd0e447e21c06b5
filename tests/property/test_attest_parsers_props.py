"""The TPMS_ATTEST / TPMT_SIGNATURE / TPMT_PUBLIC / tpm2-tools / evidence parsers raise only
ParseError on random and mutated input."""

from __future__ import annotations

import contextlib
import json

from hypothesis import given, settings
from hypothesis import strategies as hs

from tboot_py.errors import ParseError
from tboot_py.tpm import wire as st
from tboot_py.tpm.evidence import parse_evidence
from tboot_py.verify.tpm2_tools import parse_pcrs_serialized, write_pcrs_serialized

SEL = st.PCRSelection.of({"sha1": [0, 7], "sha256": [0, 1, 16]})
ATTEST = st.marshal_attest(st.Attest(st.TPM_GENERATED_VALUE, st.ST_ATTEST_QUOTE, b"\x00\x0b" + bytes(32),
                                     b"nonce", st.ClockInfo(1, 2, 3, True), 4, st.QuoteInfo(SEL, bytes(32)), b"",
                                     b""))
SIG_RSA = st.Signature(st.ALG_RSASSA, 0x0B, sig=bytes(256)).marshal()
SIG_ECC = st.Signature(st.ALG_ECDSA, 0x0B, r=bytes(32), s=bytes(32)).marshal()
PUB_RSA = st.rsa_template(0x50072, scheme=st.ALG_RSASSA, scheme_hash=0x0B, unique=b"\x01" * 256).marshal()
PUB_ECC = st.ecc_template(0x50072, st.CURVE_NIST_P256, scheme=st.ALG_ECDSA, scheme_hash=0x0B,
                          unique_size=32).marshal()
PCRS = write_pcrs_serialized(SEL, {"sha1": {0: bytes(20), 7: bytes(20)},
                                   "sha256": {0: bytes(32), 1: bytes(32), 16: bytes(32)}})
SEEDS = [ATTEST, SIG_RSA, SIG_ECC, PUB_RSA, PUB_ECC]


def _parse_all(data: bytes) -> None:
    for parser in (st.parse_attest, st.parse_signature, st.parse_public, st.parse_pcr_selection):
        with contextlib.suppress(ParseError):
            parser(data)
    with contextlib.suppress(ParseError):
        parse_pcrs_serialized(data)


@settings(max_examples=200, deadline=None)
@given(hs.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    _parse_all(data)


def _mutate(seed: bytes, edits: list[tuple[int, int]], cut: int, extra: bytes) -> bytes:
    b = bytearray(seed)
    for pos, val in edits:
        if b:
            b[pos % len(b)] = val
    return bytes(b[: len(b) - (cut % (len(b) + 1))]) + extra


@settings(max_examples=200, deadline=None)
@given(hs.sampled_from([*SEEDS, PCRS]), hs.lists(hs.tuples(hs.integers(0, 10_000), hs.integers(0, 255)),
                                               max_size=6), hs.integers(0, 50), hs.binary(max_size=4))
def test_mutated_structures(seed: bytes, edits: list[tuple[int, int]], cut: int, extra: bytes) -> None:
    _parse_all(_mutate(seed, edits, cut, extra))


@settings(max_examples=200, deadline=None)
@given(hs.recursive(hs.none() | hs.booleans() | hs.integers() | hs.text(max_size=20),
                    lambda c: hs.lists(c, max_size=4) | hs.dictionaries(hs.text(max_size=10), c, max_size=4),
                    max_leaves=20),
       hs.sampled_from(["attest", "signature", "pcrs", "event_logs", "ak_public", "ek_certificate"]))
def test_evidence_json(value: object, key: str) -> None:
    doc = {"format": "tboot-py-evidence/1", "attest": "", "signature": "", "pcrs": {}, "event_logs": []}
    doc[key] = value
    with contextlib.suppress(ParseError):
        parse_evidence(json.dumps(doc))


def test_seeds_parse() -> None:
    assert st.parse_attest(ATTEST).quote is not None
    assert st.parse_signature(SIG_RSA).sig == bytes(256)
    assert st.parse_public(PUB_ECC).curve == st.CURVE_NIST_P256
    assert parse_pcrs_serialized(PCRS)[0] == SEL
