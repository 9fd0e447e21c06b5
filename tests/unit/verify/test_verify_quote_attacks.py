"""Quote and evidence tampering: each case must be rejected by its own, specific check."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from _softak import SoftAK, build_log, evidence, make_attest, pcr_values, replayed

from tboot_py import algorithms
from tboot_py.attest.keys import AK_ATTRS
from tboot_py.tpm import wire as st
from tboot_py.tpm.evidence import EventLogBlob, Evidence
from tboot_py.verify import errors as ve
from tboot_py.verify.evidence import check_evidence, verify_evidence
from tboot_py.verify.quote import QuoteHistory, VerifiedPCRs, check_quote, verify_quote

SEL = st.PCRSelection.of({"sha1": [0, 1, 2, 7], "sha256": [0, 1, 2, 7]})
NONCE = bytes(range(20))
BANKS = (algorithms.SHA1, algorithms.SHA256)


@pytest.fixture(scope="module")
def ak() -> SoftAK:
    return SoftAK.rsa()


@pytest.fixture(scope="module")
def other_ak() -> SoftAK:
    return SoftAK.rsa()


def good(ak: SoftAK) -> tuple[Evidence, dict[str, dict[int, bytes]]]:
    pcrs = pcr_values(SEL)
    return evidence(ak, make_attest(ak, SEL, pcrs, NONCE), pcrs), pcrs


def test_untampered_quote_verifies(ak: SoftAK) -> None:
    ev, pcrs = good(ak)
    v = verify_quote(ev, ak.trusted, NONCE, SEL)
    assert {b: dict(r) for b, r in v.pcrs.items()} == pcrs
    assert v.signer_checked and v.nonce == NONCE and v.sign_hash == "sha256"


def test_ecc_and_pss_quotes_verify() -> None:
    for ak in (SoftAK.ecc(), SoftAK.ecc(st.CURVE_NIST_P384, algorithms.SHA384.alg_id),
               SoftAK.rsa(st.ALG_RSAPSS)):
        ev, _ = good(ak)
        assert verify_quote(ev, ak.trusted, NONCE, SEL).signer_checked


def test_verified_pcrs_cannot_be_forged(ak: SoftAK) -> None:
    v = verify_quote(good(ak)[0], ak.trusted, NONCE)
    with pytest.raises(TypeError):
        VerifiedPCRs(v.pcrs, v.selection, v.nonce, v.ak_name, True, v.clock_info, 0, "sha256")
    with pytest.raises(TypeError):
        replace(v, nonce=b"other")


@dataclass
class Case:
    name: str
    make: Callable[[SoftAK, SoftAK], dict[str, Any]]
    error: type[Exception]
    message: str


def _resigned(ak: SoftAK, **changes: Any) -> Callable[[SoftAK, SoftAK], dict[str, Any]]:
    def make(ak: SoftAK, _other: SoftAK) -> dict[str, Any]:
        pcrs = pcr_values(SEL)
        a = replace(make_attest(ak, SEL, pcrs, NONCE), **changes)
        return {"evidence": evidence(ak, a, pcrs)}
    return make


def _with_sel(sel: st.PCRSelection, expected: st.PCRSelection) -> Callable[[SoftAK, SoftAK], dict[str, Any]]:
    def make(ak: SoftAK, _other: SoftAK) -> dict[str, Any]:
        pcrs = pcr_values(sel)
        return {"evidence": evidence(ak, make_attest(ak, sel, pcrs, NONCE), pcrs), "expected_selection": expected}
    return make


def _raw(mutate_attest: Callable[[bytes], bytes] | None = None,
         mutate_sig: Callable[[bytes], bytes] | None = None) -> Callable[[SoftAK, SoftAK], dict[str, Any]]:
    def make(ak: SoftAK, _other: SoftAK) -> dict[str, Any]:
        ev, _ = good(ak)
        a = ev.untrusted_attest if mutate_attest is None else mutate_attest(ev.untrusted_attest)
        s = ev.untrusted_signature if mutate_sig is None else mutate_sig(ev.untrusted_signature)
        return {"evidence": replace(ev, untrusted_attest=a, untrusted_signature=s)}
    return make


def _flip_bit(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at] ^= 0x01
    return bytes(b)


def _pcr_change(ak: SoftAK, _o: SoftAK) -> dict[str, Any]:
    ev, pcrs = good(ak)
    bad = {b: dict(r) for b, r in pcrs.items()}
    bad["sha256"][7] = bytes(32)
    return {"evidence": replace(ev, untrusted_pcrs=bad)}


def _pcr_missing(ak: SoftAK, _o: SoftAK) -> dict[str, Any]:
    ev, pcrs = good(ak)
    bad = {b: dict(r) for b, r in pcrs.items()}
    del bad["sha1"][2]
    return {"evidence": replace(ev, untrusted_pcrs=bad)}


def _pcr_extra(ak: SoftAK, _o: SoftAK) -> dict[str, Any]:
    ev, pcrs = good(ak)
    bad = {b: dict(r) for b, r in pcrs.items()}
    bad["sha256"][10] = bytes(32)
    return {"evidence": replace(ev, untrusted_pcrs=bad)}


def _wrong_digest(ak: SoftAK, _o: SoftAK) -> dict[str, Any]:
    pcrs = pcr_values(SEL)
    a = make_attest(ak, SEL, pcrs, NONCE)
    assert a.quote is not None
    a = replace(a, quote=replace(a.quote, pcr_digest=bytes(32)))
    return {"evidence": evidence(ak, a, pcrs)}


def _other_ak_signs(ak: SoftAK, other: SoftAK) -> dict[str, Any]:
    ev, _ = good(ak)
    return {"evidence": replace(ev, untrusted_signature=other.sign(ev.untrusted_attest))}


def _scheme(scheme: int, hash_id: int) -> Callable[[SoftAK, SoftAK], dict[str, Any]]:
    def make(ak: SoftAK, _o: SoftAK) -> dict[str, Any]:
        ev, _ = good(ak)
        return {"evidence": replace(ev, untrusted_signature=ak.sign(ev.untrusted_attest, scheme, hash_id))}
    return make


def _ecdsa_sig_on_rsa_ak(ak: SoftAK, _o: SoftAK) -> dict[str, Any]:
    ev, _ = good(ak)
    return {"evidence": replace(ev, untrusted_signature=SoftAK.ecc().sign(ev.untrusted_attest))}


def _history(**prev: int) -> Callable[[SoftAK, SoftAK], dict[str, Any]]:
    def make(ak: SoftAK, _o: SoftAK) -> dict[str, Any]:
        ev, _ = good(ak)  # clock 1000, reset 5, restart 2
        base = {"reset_count": 5, "restart_count": 2, "clock": 1000}
        base.update(prev)
        return {"evidence": ev, "history": QuoteHistory(**base)}
    return make


def _carried_other_ak(ak: SoftAK, other: SoftAK) -> dict[str, Any]:
    ev, _ = good(ak)
    return {"evidence": replace(ev, untrusted_ak_public=other.public.raw)}


def _unrestricted(_ak: SoftAK, _o: SoftAK) -> dict[str, Any]:
    weak = SoftAK.rsa(attrs=AK_ATTRS & ~st.OA_RESTRICTED)
    ev, _ = good(weak)
    return {"evidence": ev, "ak_public": weak.trusted}


def _dup_bank(ak: SoftAK, _o: SoftAK) -> dict[str, Any]:
    sel = st.PCRSelection((st.PCRBankSelection(algorithms.SHA256.alg_id, (0,)),
                           st.PCRBankSelection(algorithms.SHA256.alg_id, (1,))))
    pcrs = pcr_values(st.PCRSelection.of({"sha256": [0, 1]}))
    return {"evidence": evidence(ak, make_attest(ak, sel, pcrs, NONCE), pcrs)}


ATTEST_TYPE_CERTIFY = st.ST_ATTEST_CERTIFY

CASES = [
    Case("wrong nonce", lambda ak, o: {"evidence": good(ak)[0], "nonce": b"\x01" * 20},
         ve.NonceMismatchError, "nonce"),
    Case("empty nonce expected", lambda ak, o: {"evidence": good(ak)[0], "nonce": b""},
         ve.NonceTooShortError, "empty"),
    Case("replayed quote (same counters and clock)", _history(), ve.ReplayedQuoteError, "replayed"),
    Case("resetCount went back", _history(reset_count=6), ve.CounterRollbackError, "resetCount"),
    Case("restartCount went back", _history(restart_count=3), ve.CounterRollbackError, "restartCount"),
    Case("clock went back", _history(clock=2000), ve.CounterRollbackError, "clock"),
    Case("flipped signature bit", _raw(mutate_sig=lambda s: _flip_bit(s, 40)), ve.BadSignatureError,
         "does not verify"),
    Case("flipped attest byte (unsigned)", _raw(mutate_attest=lambda a: _flip_bit(a, 50)), ve.BadSignatureError,
         "does not verify"),
    Case("signature by another AK", _other_ak_signs, ve.BadSignatureError, "does not verify"),
    Case("changed PCR value", _pcr_change, ve.PCRDigestMismatchError, "pcrDigest"),
    Case("missing PCR value", _pcr_missing, ve.PCRValuesError, "no value supplied"),
    Case("PCR value the quote does not cover", _pcr_extra, ve.PCRValuesError, "not covered"),
    Case("reduced selection", _with_sel(st.PCRSelection.of({"sha1": [0], "sha256": [0, 1]}), SEL),
         ve.SelectionMismatchError, "not the requested"),
    Case("changed selection", _with_sel(st.PCRSelection.of({"sha1": [0, 1, 2, 8], "sha256": [0, 1, 2, 7]}), SEL),
         ve.SelectionMismatchError, "not the requested"),
    Case("swapped bank", _with_sel(st.PCRSelection.of({"sha384": [0, 1, 2, 7], "sha256": [0, 1, 2, 7]}), SEL),
         ve.SelectionMismatchError, "sha384"),
    Case("bank order swapped", _with_sel(st.PCRSelection.of([("sha256", [0, 1, 2, 7]), ("sha1", [0, 1, 2, 7])]),
                                         SEL), ve.SelectionMismatchError, "not the requested"),
    Case("bank listed twice", _dup_bank, ve.SelectionMismatchError, "twice"),
    Case("wrong pcrDigest", _wrong_digest, ve.PCRDigestMismatchError, "pcrDigest"),
    Case("wrong magic", _resigned(None, magic=0xFF544348), ve.NotTPMGeneratedError, "TPM_GENERATED_VALUE"),
    Case("wrong type", _resigned(None, type=ATTEST_TYPE_CERTIFY, quote=None, attested_raw=b"\x00" * 4),
         ve.WrongAttestTypeError, "TPM_ST_ATTEST_QUOTE"),
    Case("AK name mismatch", _resigned(None, qualified_signer=b"\x00\x0b" + bytes(32)),
         ve.SignerNameMismatchError, "qualifiedSigner"),
    Case("truncated attest", _raw(mutate_attest=lambda a: a[:-5]), ve.MalformedQuoteError, "parse error"),
    Case("trailing garbage byte on attest", _raw(mutate_attest=lambda a: a + b"\x00"), ve.MalformedQuoteError,
         "trailing"),
    Case("trailing garbage byte on signature", _raw(mutate_sig=lambda s: s + b"\x00"), ve.MalformedQuoteError,
         "trailing"),
    Case("truncated signature", _raw(mutate_sig=lambda s: s[:10]), ve.MalformedQuoteError, "parse error"),
    Case("RSA-PSS on an RSASSA-only AK", _scheme(st.ALG_RSAPSS, algorithms.SHA256.alg_id),
         ve.SchemeNotAllowedError, "allows only rsassa-sha256"),
    Case("SHA-1 on a SHA-256-only AK", _scheme(st.ALG_RSASSA, algorithms.SHA1.alg_id), ve.SchemeNotAllowedError,
         "allows only rsassa-sha256"),
    Case("ECDSA signature for an RSA AK", _ecdsa_sig_on_rsa_ak, ve.SchemeNotAllowedError, "ecdsa"),
    Case("evidence carries another AK", _carried_other_ak, ve.AKMismatchError, "different AK"),
    Case("AK is not restricted", _unrestricted, ve.AKNotAttestationKeyError, "restricted"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_tampered_quote_is_rejected(case: Case, ak: SoftAK, other_ak: SoftAK) -> None:
    kw = case.make(ak, other_ak)
    ev = kw.pop("evidence")
    ak_public = kw.pop("ak_public", ak.trusted)
    nonce = kw.pop("nonce", NONCE)
    with pytest.raises(case.error) as ei:
        verify_quote(ev, ak_public, nonce, **kw)
    assert type(ei.value) is case.error, f"{case.name}: got {type(ei.value).__name__}: {ei.value}"
    assert case.message in ei.value.diagnostics()
    r = check_quote(ev, ak_public, nonce, **kw)
    assert not r.ok and type(r.error) is case.error


def test_history_accepts_newer_quote(ak: SoftAK) -> None:
    first = verify_quote(good(ak)[0], ak.trusted, NONCE)
    pcrs = pcr_values(SEL)
    newer = evidence(ak, make_attest(ak, SEL, pcrs, NONCE, clock=1001), pcrs)
    assert verify_quote(newer, ak.trusted, NONCE, history=first).clock_info.clock == 1001
    rebooted = evidence(ak, make_attest(ak, SEL, pcrs, NONCE, clock=5000, reset=6, restart=0), pcrs)
    assert verify_quote(rebooted, ak.trusted, NONCE, history=first).clock_info.reset_count == 6


def test_clock_not_safe_after_a_power_cut_is_fresh_by_its_nonce(ak: SoftAK) -> None:
    """Power lost without TPM2_Shutdown: the next boot's quotes say safe = NO and Clock may be
    behind an earlier quote's. Freshness comes from the nonce, so the quote verifies; only a
    Clock comparison that the flag makes meaningless is skipped (TPM 2.0 Part 1, 36.7)."""
    pcrs = pcr_values(SEL)
    first = verify_quote(good(ak)[0], ak.trusted, NONCE)  # clock 1000, reset 5
    unsafe = evidence(ak, make_attest(ak, SEL, pcrs, NONCE, clock=900, reset=6, restart=0, safe=False), pcrs)
    v = verify_quote(unsafe, ak.trusted, NONCE)
    assert v.clock_info.safe is False
    assert verify_quote(unsafe, ak.trusted, NONCE, history=first).clock_info.reset_count == 6
    # Clock behind while safe, or behind without a TPM Reset, is still a rollback.
    safe_back = evidence(ak, make_attest(ak, SEL, pcrs, NONCE, clock=900, reset=6, restart=0), pcrs)
    with pytest.raises(ve.CounterRollbackError):
        verify_quote(safe_back, ak.trusted, NONCE, history=first)
    same_boot = evidence(ak, make_attest(ak, SEL, pcrs, NONCE, clock=900, reset=5, restart=3, safe=False), pcrs)
    with pytest.raises(ve.CounterRollbackError):
        verify_quote(same_boot, ak.trusted, NONCE, history=first)
    # A wrong nonce still fails, safe or not.
    with pytest.raises(ve.NonceMismatchError):
        verify_quote(unsafe, ak.trusted, b"\x01" * 32)


# --------------------------------------------------------------------------- event logs

EVENTS = [(0, b"crtm"), (0, b"bios"), (7, b"secureboot"), (2, b"optionrom"), (7, b"separator")]


def log_evidence(ak: SoftAK, quoted_events: list[tuple[int, bytes]], log_events: list[tuple[int, bytes]],
                 log_banks: tuple[algorithms.HashAlg, ...] = BANKS,
                 sel: st.PCRSelection = SEL) -> Evidence:
    pcrs = pcr_values(sel)
    truth = replayed(quoted_events, BANKS)
    for bank, regs in truth.items():
        if bank in pcrs:
            pcrs[bank].update({i: v for i, v in regs.items() if i in pcrs[bank]})
    blob = EventLogBlob("firmware", build_log(log_events, log_banks))
    return evidence(ak, make_attest(ak, sel, pcrs, NONCE), pcrs, (blob,))


def test_log_replays_to_quote(ak: SoftAK) -> None:
    vb = verify_evidence(log_evidence(ak, EVENTS, EVENTS), ak.trusted, NONCE, SEL)
    assert [(e.pcr, e.untrusted_data) for e in vb.events] == EVENTS
    assert vb.replayed == {"sha1": (0, 2, 7), "sha256": (0, 2, 7)}


LOG_CASES = [
    ("event removed", EVENTS[:1] + EVENTS[2:], ve.EventLogMismatchError, "PCR 0"),
    ("events reordered", [EVENTS[1], EVENTS[0], *EVENTS[2:]], ve.EventLogMismatchError, "PCR 0"),
    ("event inserted", [*EVENTS[:2], (0, b"evil"), *EVENTS[2:]], ve.EventLogMismatchError,
     "first diverging event is 'firmware' event 3"),
    ("event appended", [*EVENTS, (7, b"late")], ve.EventLogMismatchError,
     "first diverging event is 'firmware' event 6"),
    ("event changed", [*EVENTS[:4], (7, b"separatoR")], ve.EventLogMismatchError, "PCR 7"),
    ("log extends an unquoted PCR", [*EVENTS, (9, b"initrd")], ve.EventLogBankNotQuotedError, "PCR 9"),
]


@pytest.mark.parametrize(("name", "log_events", "error", "message"), LOG_CASES, ids=[c[0] for c in LOG_CASES])
def test_tampered_log_is_rejected(ak: SoftAK, name: str, log_events: list[tuple[int, bytes]],
                                  error: type[Exception], message: str) -> None:
    ev = log_evidence(ak, EVENTS, log_events)
    with pytest.raises(error) as ei:
        verify_evidence(ev, ak.trusted, NONCE, SEL)
    assert type(ei.value) is error
    assert message in ei.value.diagnostics(), ei.value.diagnostics()
    assert not check_evidence(ev, ak.trusted, NONCE, SEL).ok


def test_log_lacking_a_quoted_bank_is_rejected(ak: SoftAK) -> None:
    """Every bank the quote covers must replay: a log without sha1 digests cannot back the
    quoted sha1 bank."""
    ev = log_evidence(ak, EVENTS, EVENTS, log_banks=(algorithms.SHA256, algorithms.SHA384))
    with pytest.raises(ve.EventLogBankNotReplayedError, match="sha1"):
        verify_evidence(ev, ak.trusted, NONCE, SEL)


def test_log_bank_the_quote_does_not_cover_is_ignored(ak: SoftAK) -> None:
    """A log bank outside the quote is never replayed or trusted: its digests are dropped."""
    ev = log_evidence(ak, EVENTS, EVENTS, log_banks=(*BANKS, algorithms.SHA384))
    vb = verify_evidence(ev, ak.trusted, NONCE, SEL)
    assert vb.banks_ignored == ("sha384",)
    assert all({a for a, _ in e.digests} == {b.alg_id for b in BANKS} for e in vb.events)


def test_garbage_log_is_rejected(ak: SoftAK) -> None:
    ev = log_evidence(ak, EVENTS, EVENTS)
    ev = replace(ev, event_logs=(EventLogBlob("firmware", ev.event_logs[0].data[:-3]),))
    with pytest.raises(ve.EventLogError, match="does not parse"):
        verify_evidence(ev, ak.trusted, NONCE, SEL)


def test_two_logs_continue_each_other(ak: SoftAK) -> None:
    fw, own = EVENTS[:3], [(7, b"tboot-py"), (8, b"kernel")]
    sel = st.PCRSelection.of({"sha1": [0, 2, 7, 8], "sha256": [0, 2, 7, 8]})
    pcrs = pcr_values(sel)
    for bank, regs in replayed(fw + own, BANKS).items():
        pcrs[bank].update(regs)
    logs = (EventLogBlob("firmware", build_log(fw, BANKS)), EventLogBlob("tboot-py", build_log(own, BANKS)))
    ev = evidence(ak, make_attest(ak, sel, pcrs, NONCE), pcrs, logs)
    vb = verify_evidence(ev, ak.trusted, NONCE, sel)
    assert [e.log for e in vb.events] == ["firmware"] * 3 + ["tboot-py"] * 2
