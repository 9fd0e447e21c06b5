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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tboot_py import algorithms
from tboot_py.errors import Error, ParseError, VerificationError
from tboot_py.tpm import wire as st
from tboot_py.tpm.evidence import Evidence
from tboot_py.verify import errors as ve
from tboot_py.verify.quote import AKPublic, QuoteHistory, VerifiedPCRs, verify_quote

_MINTING: contextvars.ContextVar[bool] = contextvars.ContextVar("_minting_boot", default=False)


@dataclass(frozen=True)
class VerifiedEvent:
    """An event whose PCR replays to a quoted value; ``log`` names the log it came from."""

    log: str
    seq: int
    pcr: int
    event_type: int
    digests: tuple[tuple[int, bytes], ...]
    data: bytes


@dataclass(frozen=True, eq=False)
class VerifiedBoot:
    """A verified quote plus the events that replay to it. Only :func:`verify_evidence`
    makes one."""

    pcrs: VerifiedPCRs
    events: tuple[VerifiedEvent, ...]
    replayed: Mapping[str, tuple[int, ...]]  # bank -> PCRs the logs reproduce
    ek_chain: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _MINTING.get():
            raise TypeError("VerifiedBoot can only be created by tboot_py.verify.verify_evidence")


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
                "ek_chain": list(self.verified.ek_chain)}


def _replay_all(logs: list[tuple[str, Any]], banks: list[str]) -> tuple[
        dict[str, dict[int, bytes]], dict[str, dict[int, list[tuple[str, Any, bytes]]]]]:
    """Replay every log in order. Returns ({bank: {pcr: value}}, {bank: {pcr: [(log, event,
    value after it)]}}) so a mismatch can be traced to an event."""
    from tboot_py.eventlog.replay import initial_value

    values: dict[str, dict[int, bytes]] = {}
    trail: dict[str, dict[int, list[tuple[str, Any, bytes]]]] = {}
    for name, log in logs:
        for e in log.events:
            if not e.extends:
                continue
            for bank in banks:
                alg = algorithms.by_name(bank)
                d = e.digest(alg.alg_id)
                if d is None:
                    if alg.alg_id in log.algorithms:
                        raise ve.EventLogError(
                            f"{name}: event {e.seq} (PCR {e.pcr}) has no {bank} digest; the bank cannot be replayed")
                    continue
                regs = values.setdefault(bank, {})
                old = regs.get(e.pcr)
                if old is None:
                    old = initial_value(log, e.pcr, alg.size)
                h = alg.new()
                h.update(old)
                h.update(d)
                regs[e.pcr] = bytes(h.digest())
                trail.setdefault(bank, {}).setdefault(e.pcr, []).append((name, e, regs[e.pcr]))
    return values, trail


def verify_evidence(evidence: Evidence, ak_public: AKPublic, nonce: bytes,
                    expected_selection: st.PCRSelection | None = None,
                    history: QuoteHistory | VerifiedPCRs | None = None,
                    ek_ca: Path | None = None, *, exact_selection: bool = True) -> VerifiedBoot:
    """Verify the quote, the optional EK certificate chain, then replay the event logs.

    Every PCR a log extends, in every bank the log carries, must be in the verified quote
    and equal to the replayed value. Raises a VerificationError subclass otherwise.
    """
    vp = verify_quote(evidence, ak_public, nonce, expected_selection, history, exact_selection=exact_selection)
    chain: tuple[str, ...] = ()
    if ek_ca is not None:
        from tboot_py.verify.ekcert import EKCertificateError, verify_ek_chain

        if evidence.ek_certificate is None:
            raise EKCertificateError("the evidence carries no EK certificate")
        chain = verify_ek_chain(evidence.ek_certificate, ek_ca)
        _check_ak_under_ek(evidence, ak_public, evidence.ek_certificate)

    from tboot_py.eventlog import parse_log

    untrusted_logs: list[tuple[str, Any]] = []
    for blob in evidence.event_logs:
        try:
            untrusted_logs.append((blob.name, parse_log(blob.data, source=blob.name)))
        except ParseError as e:
            raise ve.EventLogError(f"event log {blob.name!r} does not parse: {e.diagnostics()}") from e

    # Banks to replay: every bank a log carries must be covered by the quote.
    banks: list[str] = []
    for name, log in untrusted_logs:
        for alg_id in log.algorithms:
            alg = algorithms.by_id(alg_id)
            if alg is None:
                raise ve.EventLogError(f"event log {name!r} carries unknown bank 0x{alg_id:04x}")
            if alg.name not in vp.pcrs:
                if any(e.extends for e in log.events):
                    raise ve.EventLogBankNotQuotedError(
                        f"event log {name!r} extends bank {alg.name}, which the quote does not cover "
                        f"(quoted: {', '.join(vp.pcrs) or 'nothing'})")
                continue
            if alg.name not in banks:
                banks.append(alg.name)

    replayed, trail = _replay_all(untrusted_logs, banks)
    for bank, regs in replayed.items():
        quoted = vp.pcrs[bank]
        for pcr in sorted(regs):
            if pcr not in quoted:
                first = trail[bank][pcr][0]
                raise ve.EventLogBankNotQuotedError(
                    f"event log {first[0]!r} extends PCR {pcr} ({bank}), which the quote does not cover "
                    f"(first event {first[1].seq})")
            if not hmac.compare_digest(regs[pcr], quoted[pcr]):
                raise ve.EventLogMismatchError(_divergence(bank, pcr, trail[bank][pcr], quoted[pcr], regs[pcr]))

    events = tuple(VerifiedEvent(name, e.seq, e.pcr, e.event_type, e.digests, e.data)
                   for name, log in untrusted_logs for e in log.events
                   if e.extends and all(e.pcr in replayed.get(b, {}) for b in banks if e.digest(b) is not None))
    token = _MINTING.set(True)
    try:
        return VerifiedBoot(vp, events, {b: tuple(sorted(r)) for b, r in replayed.items()}, chain)
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


def _divergence(bank: str, pcr: int, trail: list[tuple[str, Any, bytes]], quoted: bytes, replayed: bytes) -> str:
    """Name the first event that diverges: when a prefix of the events reproduces the quoted
    value, the event after that prefix is the first one the TPM never saw."""
    for i, (_log, _e, value) in enumerate(trail):
        if value == quoted and i + 1 < len(trail):
            log, e, _ = trail[i + 1]
            return (f"PCR {pcr} ({bank}): the quote matches the replay up to event {trail[i][1].seq}; "
                    f"first diverging event is {log!r} event {e.seq} ({e.event_type_name}); "
                    f"expected {quoted.hex()}, replay gives {replayed.hex()}")
    log, e, _ = trail[0]
    return (f"PCR {pcr} ({bank}): replay of {len(trail)} events gives {replayed.hex()}, the quote says "
            f"{quoted.hex()}; no prefix matches, so the first diverging event is at or after {log!r} event "
            f"{e.seq} ({e.event_type_name})")


def check_evidence(evidence: Evidence, ak_public: AKPublic, nonce: bytes,
                   expected_selection: st.PCRSelection | None = None,
                   history: QuoteHistory | VerifiedPCRs | None = None,
                   ek_ca: Path | None = None, *, exact_selection: bool = True) -> EvidenceCheck:
    """Like :func:`verify_evidence` but returns an :class:`EvidenceCheck`; never raises."""
    try:
        return EvidenceCheck(verify_evidence(evidence, ak_public, nonce, expected_selection, history, ek_ca,
                                             exact_selection=exact_selection))
    except VerificationError as e:
        return EvidenceCheck(None, e)
    except Error as e:
        return EvidenceCheck(None, ve.QuoteError(e.diagnostics()))
    except Exception as e:  # fail closed
        return EvidenceCheck(None, ve.QuoteError(f"internal error while verifying: {type(e).__name__}: {e}"))
