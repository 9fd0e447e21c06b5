"""Evidence verification: a verified quote, then the event logs replayed against it.

``verify_evidence(...) -> VerifiedBoot`` is the only way to get a :class:`VerifiedBoot`.
Following go-attestation (attest/eventlog.go): parse, verify, then extract; the result
holds only events whose PCRs replay to values a verified quote vouches for.

Several logs (the firmware's, then tboot-py's own) are replayed as one sequence: a later
log continues the PCR values the earlier logs left, as the TPM saw them.
"""

from __future__ import annotations

import contextvars
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from tboot_py import algorithms
from tboot_py.errors import Error, ParseError, VerificationError
from tboot_py.tpm import wire as st
from tboot_py.tpm.evidence import Evidence
from tboot_py.verify import errors as ve
from tboot_py.verify.quote import AKPublic, QuoteHistory, VerifiedPCRs, verify_quote

if TYPE_CHECKING:
    from pathlib import Path

    from tboot_py.algorithms import HashAlg
    from tboot_py.eventlog.replay import BankReplay

_MINTING: contextvars.ContextVar[bool] = contextvars.ContextVar("_minting_boot", default=False)

#: Banks that must be quoted and replay unless the caller (policy or trust configuration)
#: says otherwise (DESIGN.md, "What a quote proves").
DEFAULT_REQUIRED_BANKS: tuple[str, ...] = ("sha256",)


class VerifiedEvent(NamedTuple):
    """A record whose PCR replays, in every quoted bank, to the verified quote.

    The replay proves ``pcr`` and ``digests`` (quoted banks only) and the record's place in
    the PCR's sequence. It proves nothing about the record's type (never extended) or its
    data, unless the digest is the hash of that data: hence the ``untrusted_`` fields. The
    appraisal core decides which data a digest binds (tboot_py.appraise).
    """

    log: str  # untrusted: the name the bundle gives the log
    log_index: int
    seq: int
    pcr: int
    digests: tuple[tuple[int, bytes], ...]  # (TPM_ALG_ID, digest) for each quoted bank
    untrusted_type: int
    untrusted_data: bytes

    def digest(self, alg_id: int) -> bytes | None:
        for a, d in self.digests:
            if a == alg_id:
                return d
        return None


@dataclass(frozen=True, eq=False)
class VerifiedBoot:
    """A verified quote plus the events that replay to it, in replay order (the order of
    the logs, then of their records). Only :func:`verify_evidence` makes one."""

    pcrs: VerifiedPCRs
    events: tuple[VerifiedEvent, ...]
    replayed: Mapping[str, tuple[int, ...]]  # bank -> PCRs the logs reproduce
    ek_chain: tuple[str, ...] = ()
    #: Firmware quirks the replay needed to match the quote, by registry name.
    quirks: tuple[str, ...] = ()
    #: Whether the quote is fresh: its nonce is the verifier's, of the required length.
    fresh: bool = True
    #: Log banks that the quote does not cover: never replayed, never trusted.
    banks_ignored: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _MINTING.get():
            raise TypeError("VerifiedBoot can only be created by tboot_py.verify.verify_evidence")

    @property
    def backed_pcrs(self) -> frozenset[int]:
        """PCRs whose every record replayed, in every quoted bank."""
        replayed = [set(p) for p in self.replayed.values()]
        return frozenset(set.intersection(*replayed)) if replayed else frozenset()


@dataclass(frozen=True)
class EvidenceCheck(ve.CheckResult[VerifiedBoot]):
    """Result of :func:`check_evidence` (never raises)."""

    @property
    def verified_pcrs(self) -> VerifiedPCRs | None:
        return None if self.verified is None else self.verified.pcrs

    def summary(self) -> dict[str, Any]:
        if self.verified is None:
            return {}
        return {"events_verified": len(self.verified.events),
                "replayed": {b: list(p) for b, p in self.verified.replayed.items()},
                "ek_chain": list(self.verified.ek_chain), "quirks": list(self.verified.quirks)}


def check_nonce(nonce: bytes, min_bytes: int) -> None:
    """An empty nonce never makes a quote fresh; a short one only when the caller allows it
    (legacy quotes). TPM 2.0 Part 3, 18.4: qualifyingData is the verifier's freshness."""
    if not nonce:
        raise ve.NonceTooShortError("the nonce is empty: a quote over no nonce proves no freshness")
    if len(nonce) < min_bytes:
        raise ve.NonceTooShortError(f"the nonce has {len(nonce)} bytes; at least {min_bytes} are required "
                                    "(a short nonce can be guessed or replayed)")


def verify_evidence(evidence: Evidence, ak_public: AKPublic, nonce: bytes,
                    expected_selection: st.PCRSelection | None = None,
                    history: QuoteHistory | VerifiedPCRs | None = None,
                    ek_ca: Path | None = None, *,
                    exact_selection: bool = True,
                    required_banks: Sequence[str] = DEFAULT_REQUIRED_BANKS,
                    min_nonce_bytes: int = 8,
                    fresh: bool = True,
                    quirks: Iterable[str] | None = None) -> VerifiedBoot:
    """Verify the quote, the optional EK certificate chain, then replay the event logs.

    1. The nonce is long enough (``fresh=False`` only re-checks archived evidence whose
       quote carries no nonce: the result is marked not fresh).
    2. The quote verifies (:func:`verify_quote`), then the EK chain and AK binding.
    3. Every ``required_banks`` bank is quoted.
    4. The logs replay as one sequence, in every quoted bank; every PCR they extend must be
       quoted and equal, with the named firmware quirks applied only where a quirk makes a
       PCR match. A log lacking a quoted bank's digests cannot replay that bank and fails.

    Raises a VerificationError subclass otherwise.
    """
    if fresh:
        check_nonce(nonce, min_nonce_bytes)
    elif nonce:
        raise ve.NonceMismatchError("a nonce was given for evidence checked without freshness")
    vp = verify_quote(evidence, ak_public, nonce, expected_selection, history, exact_selection=exact_selection,
                      allow_empty_nonce=not fresh)
    chain: tuple[str, ...] = ()
    if ek_ca is not None:
        from tboot_py.verify.ekcert import EKCertificateError, verify_ek_chain

        if evidence.ek_certificate is None:
            raise EKCertificateError("the evidence carries no EK certificate")
        chain = verify_ek_chain(evidence.ek_certificate, ek_ca)
        _check_ak_under_ek(evidence, ak_public, evidence.ek_certificate)
    for bank in required_banks:
        if bank not in vp.pcrs:
            raise ve.RequiredBankError(
                f"bank {bank} is required but the quote covers only {', '.join(vp.pcrs) or 'nothing'}")

    from tboot_py.eventlog import EventLog, parse_log
    from tboot_py.eventlog.quirks import match_pcr, quirks_allowed
    from tboot_py.eventlog.replay import replay_bank_logs

    names: list[str] = []
    logs: list[EventLog] = []
    for blob in evidence.event_logs:
        try:
            logs.append(parse_log(blob.data, source=blob.name))
        except ParseError as e:
            raise ve.EventLogError(f"event log {blob.name!r} does not parse: {e.diagnostics()}") from e
        names.append(blob.name)

    quoted = [algorithms.by_name(b) for b in vp.pcrs]
    ignored: list[str] = []
    for name, log in zip(names, logs, strict=True):
        extends = any(e.extends for e in log.events)
        for alg_id in log.algorithms:
            alg = algorithms.by_id(alg_id)
            if alg is None:
                raise ve.EventLogError(f"event log {name!r} carries unknown bank 0x{alg_id:04x}")
            if alg.name not in vp.pcrs and alg.name not in ignored:
                ignored.append(alg.name)  # not quoted: its digests are never trusted
        for alg in quoted:
            if extends and alg.alg_id not in log.algorithms:
                raise ve.EventLogBankNotReplayedError(
                    f"event log {name!r} carries no {alg.name} digests, so the quoted {alg.name} bank cannot be "
                    f"replayed (the log has {', '.join(log.bank_names)}); every quoted bank must replay")

    allowed = quirks_allowed(quirks)
    applied: list[str] = []
    replayed: dict[str, tuple[int, ...]] = {}
    for alg in quoted:
        r = replay_bank_logs(logs, alg)
        q = vp.pcrs[alg.name]
        for pcr in sorted(r.extends):
            if pcr in r.incomplete:
                x = r.incomplete[pcr]
                raise ve.EventLogError(f"{names[x.log]!r} event {x.event.seq} (PCR {pcr}) has no {alg.name} digest; "
                                       "the bank cannot be replayed")
            if pcr not in q:
                first = r.extends[pcr][0]
                raise ve.EventLogBankNotQuotedError(
                    f"event log {names[first.log]!r} extends PCR {pcr} ({alg.name}), which the quote does not cover "
                    f"(first event {first.event.seq})")
            value, quirk = match_pcr(logs, r, pcr, q[pcr], allowed)
            if value is None or not hmac.compare_digest(value, q[pcr]):
                raise ve.EventLogMismatchError(_divergence(alg, pcr, r, names, q[pcr]))
            if quirk is not None and quirk not in applied:
                applied.append(quirk)
        replayed[alg.name] = tuple(sorted(r.extends))

    ids = {a.alg_id for a in quoted}
    events = tuple(
        VerifiedEvent(names[i], i, e.seq, e.pcr, tuple((a, d) for a, d in e.digests if a in ids),
                      e.event_type, e.data)
        for i, log in enumerate(logs) for e in log.events if e.extends)
    token = _MINTING.set(True)
    try:
        return VerifiedBoot(vp, events, replayed, chain, tuple(applied), fresh, tuple(ignored))
    finally:
        _MINTING.reset(token)


def _check_ak_under_ek(evidence: Evidence, ak_public: AKPublic, cert_der: bytes) -> None:
    """A certified EK vouches for the AK only if the quote's signer is an AK under that EK:
    qualifiedSigner = QN(QN(EK), AK) (TPM 2.0 Part 1, 16), with the EK derived from its
    default template and the certificate's key. Without this, any genuine EK certificate
    (from another TPM) could be attached to a quote. Call after verify_quote succeeded."""
    from tboot_py.verify.ekcert import EKCertificateError, ek_publics_for_certificate
    from tboot_py.verify.quote import TrustedAK, _resolve_ak

    ak = _resolve_ak(ak_public).public
    if ak is None:
        raise EKCertificateError("a bare AK key cannot be tied to the EK certificate: give the AK's public area "
                                 "(ak.json, TPMT_PUBLIC or TPM2B_PUBLIC)")
    try:
        signer = st.parse_attest(evidence.untrusted_attest).qualified_signer  # verified by verify_quote
        names = [TrustedAK.under_ek(ak, ek).qualified_name for ek in ek_publics_for_certificate(cert_der)]
    except ParseError as e:
        raise EKCertificateError(f"EK certificate: {e.diagnostics()}") from e
    if not any(n is not None and hmac.compare_digest(signer, n) for n in names):
        raise EKCertificateError("the quote was not signed by an AK under the certified EK (qualifiedSigner "
                                 "is not QN(EK, AK)): the EK certificate does not vouch for this AK")


def _divergence(alg: HashAlg, pcr: int, r: BankReplay, names: Sequence[str], quoted: bytes) -> str:
    """Name the first event that diverges: when a prefix of the events reproduces the quoted
    value, the event after that prefix is the first one the TPM never saw."""
    from tboot_py.eventlog.replay import fold

    trail = r.extends[pcr]
    final = r.value(pcr)
    replayed = final.hex() if final is not None else "(incomplete)"
    value = r.start.initial(pcr, alg.size)
    for i, x in enumerate(trail):
        value = fold(alg, value, (x.digest,))
        if value == quoted and i + 1 < len(trail):
            nxt = trail[i + 1]
            return (f"PCR {pcr} ({alg.name}): the quote matches the replay up to event {x.event.seq}; "
                    f"first diverging event is {names[nxt.log]!r} event {nxt.event.seq} ({nxt.event.event_type_name}); "
                    f"expected {quoted.hex()}, replay gives {replayed}")
    first = trail[0]
    return (f"PCR {pcr} ({alg.name}): replay of {len(trail)} events gives {value.hex()}, the quote says "
            f"{quoted.hex()}; no prefix matches, so the first diverging event is at or after {names[first.log]!r} "
            f"event {first.event.seq} ({first.event.event_type_name})")


def check_evidence(evidence: Evidence, ak_public: AKPublic, nonce: bytes,
                   expected_selection: st.PCRSelection | None = None,
                   history: QuoteHistory | VerifiedPCRs | None = None,
                   ek_ca: Path | None = None, **options: Any) -> EvidenceCheck:
    """Like :func:`verify_evidence` (same options) but returns an :class:`EvidenceCheck`;
    never raises."""
    try:
        return EvidenceCheck(verify_evidence(evidence, ak_public, nonce, expected_selection, history, ek_ca,
                                             **options))
    except VerificationError as e:
        return EvidenceCheck(None, e)
    except Error as e:
        return EvidenceCheck(None, ve.QuoteError(e.diagnostics()))
    except Exception as e:  # fail closed
        return EvidenceCheck(None, ve.QuoteError(f"internal error while verifying: {type(e).__name__}: {e}"))
