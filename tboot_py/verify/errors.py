"""Why a quote or evidence did not verify: one narrow class per failure.

All derive from :class:`tboot_py.errors.VerificationError` (exit code 1, "denied").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from tboot_py.errors import VerificationError

T = TypeVar("T")


@dataclass(frozen=True)
class CheckResult(Generic[T]):
    """What a ``check_*`` function returns (python-tuf style: it never raises): the
    verified value on success, else the error that ``verify_*`` would have raised."""

    verified: T | None
    error: VerificationError | None = None

    @property
    def ok(self) -> bool:
        return self.verified is not None

    @property
    def reason(self) -> str:
        return "" if self.error is None else self.error.diagnostics()


class QuoteError(VerificationError):
    """Base class of quote verification failures."""


class MalformedQuoteError(QuoteError):
    """TPMS_ATTEST, TPMT_SIGNATURE or the AK public area does not parse."""


class AKNotAttestationKeyError(QuoteError):
    """The AK is not a restricted signing key, so it could sign forged TPMS_ATTEST data."""


class AKMismatchError(QuoteError):
    """The AK public area carried in the evidence is not the AK the verifier trusts."""


class SchemeNotAllowedError(QuoteError):
    """The signature's scheme or hash is not the one the AK's public area fixes."""


class BadSignatureError(QuoteError):
    """The signature does not verify with the AK over the TPMS_ATTEST bytes."""


class NotTPMGeneratedError(QuoteError):
    """magic is not TPM_GENERATED_VALUE (TPM 2.0 Part 2, 10.12.12)."""


class WrongAttestTypeError(QuoteError):
    """type is not TPM_ST_ATTEST_QUOTE."""


class SignerNameMismatchError(QuoteError):
    """qualifiedSigner does not name the AK (nameAlg || H(TPMT_PUBLIC))."""


class NonceTooShortError(QuoteError):
    """The expected nonce is empty or shorter than the verifier requires: no freshness."""


class RequiredBankError(QuoteError):
    """A bank that policy or trust configuration requires is not in the quote."""


class NonceMismatchError(QuoteError):
    """extraData is not the verifier's nonce: a stale or replayed quote."""


class SelectionMismatchError(QuoteError):
    """The quoted PCR selection is not the requested one (reduced, changed or swapped)."""


class PCRValuesError(QuoteError):
    """The supplied PCR values do not cover the quoted selection, or cover more than it."""


class PCRDigestMismatchError(QuoteError):
    """pcrDigest does not equal the hash of the supplied PCR values."""


class ReplayedQuoteError(QuoteError):
    """The quote is not newer than the AK's previous attestation (counters or clock)."""


class CounterRollbackError(ReplayedQuoteError):
    """resetCount/restartCount/clock went backwards against the previous attestation."""


class EventLogError(VerificationError):
    """An event log does not parse or does not replay to the verified PCRs."""


class EventLogBankNotQuotedError(EventLogError):
    """A log extends a bank (or PCR) that the verified quote does not cover."""


class EventLogBankNotReplayedError(EventLogError):
    """A quoted bank cannot be replayed because a log carries no digests for it."""


class EventLogMismatchError(EventLogError):
    """A log replays to a value other than the verified PCR; carries the first bad event."""
