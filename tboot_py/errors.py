"""The one error hierarchy of tboot-py.

Every failure that leaves the library is an :class:`Error`. Each class carries
the process exit code the CLI uses for it (see DESIGN.md, "Fail closed"):
0 allowed, 1 denied by policy or verification, 2 usage or input error,
3 TPM or internal error.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_DENIED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3


class Error(Exception):
    """Base class of every tboot-py error."""

    exit_code: int = EXIT_INTERNAL

    def diagnostics(self) -> str:
        """A one-line, human-readable explanation for the CLI."""
        return str(self) or type(self).__name__


class InputError(Error):
    """Bad user input: a missing file, a directory, an unknown bank, a bad argument."""

    exit_code = EXIT_USAGE


class UnknownAlgorithmError(InputError):
    """A hash algorithm (PCR bank) name or id that tboot-py does not know."""


class ParseError(InputError):
    """Untrusted bytes that do not parse. Carries the byte offset of the failure.

    This is the only exception a parser may raise (DESIGN.md, "Parsed input is hostile").
    """

    def __init__(self, message: str, offset: int = 0, source: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.source = source

    def diagnostics(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}parse error at offset {self.offset} (0x{self.offset:x}): {self.message}"


class EventLogAppendError(ParseError):
    """An existing event log that must not be appended to: its banks differ from the
    measurement's, or it is not a crypto-agile log. (A log that does not parse or ends in
    a half-written record raises plain ParseError.)"""


class TPMError(Error):
    """A TPM or TSS failure. ``rc`` keeps the TPM/TSS return code (0 when unknown)."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, rc: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.rc = rc

    def diagnostics(self) -> str:
        if self.rc:
            return f"TPM error (rc=0x{self.rc:x}): {self.message}"
        return f"TPM error: {self.message}"


class TPMUnavailableError(TPMError):
    """The TPM named by the user cannot be reached (no device, nothing listening).

    This is an input error (exit 2): the TCTI the user gave does not lead to a TPM.
    A TPM that fails mid-way raises plain TPMError (exit 3).
    """

    exit_code = EXIT_USAGE


class TPMNoRoomError(TPMError):
    """The TPM has no room for another persistent object (TPM_RC_NV_SPACE). Nothing was
    changed; the administrator must evict an unused object or name a handle (exit 2)."""

    exit_code = EXIT_USAGE


class VerificationError(Error):
    """Evidence that does not verify: a bad quote, a log that does not replay, a bad signature."""

    exit_code = EXIT_DENIED


class PolicyError(InputError):
    """A policy that cannot be read, parsed or validated. Always denies."""


class PolicySignatureError(VerificationError):
    """A policy that trusted keys are configured for, but that is unsigned, or whose
    signatures do not verify against any of those keys. Denies (exit 1)."""
