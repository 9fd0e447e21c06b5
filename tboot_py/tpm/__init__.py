"""TPM access: one backend protocol, three implementations.

* :class:`~tboot_py.tpm.esapi.EsapiTPM` talks to a real TPM (``/dev/tpmrm0``) or to swtpm
  through a TCTI string (``swtpm:host=127.0.0.1,port=2321``). It is the only module that
  imports ``tpm2_pytss``.
* :class:`~tboot_py.tpm.fake.FakeTPM` is an in-memory TPM for unit tests only.

PCR values are exchanged as ``{bank_name: {pcr_index: digest_bytes}}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

from tboot_py.algorithms import HashAlg
from tboot_py.errors import InputError

PCRValues = dict[str, dict[int, bytes]]

#: The number of PCRs of a PC Client TPM (PC Client Platform TPM Profile, 4.6).
NUM_PCRS = 24


@runtime_checkable
class TPM(Protocol):
    """What tboot-py needs from a TPM for measuring."""

    def banks(self) -> tuple[HashAlg, ...]:
        """The active PCR banks, in the TPM's order."""
        ...

    def read_pcrs(self, pcrs: Iterable[int], banks: Iterable[HashAlg] | None = None) -> PCRValues:
        """Read the selection; ``banks=None`` reads every active bank."""
        ...

    def extend(self, pcr: int, digests: Mapping[str, bytes]) -> None:
        """Extend one measurement into ``pcr``. ``digests`` must cover every active bank."""
        ...

    def boot_counters(self) -> tuple[int, int]:
        """(resetCount, restartCount) from TPM2_ReadClock (TPM 2.0 Part 2, 10.11.1): they
        change whenever the PCRs are reset, so they name the current boot's PCR state."""
        ...

    def close(self) -> None: ...


def check_pcr_index(pcr: int) -> int:
    if not 0 <= pcr < NUM_PCRS:
        raise InputError(f"PCR index {pcr} out of range 0..{NUM_PCRS - 1}")
    return pcr


def parse_pcr_list(spec: str) -> list[int]:
    """``"0,1,7"`` or ``"0-7,9"`` (the tpm2-tools syntax) -> PCR indices; InputError if bad or empty."""
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                out.extend(range(lo, hi + 1))
            elif part:
                out.append(int(part))
        except ValueError as e:
            raise InputError(f"bad PCR list {spec!r}") from e
    if not out:
        raise InputError(f"bad PCR list {spec!r}: no PCR given")
    return [check_pcr_index(i) for i in out]


def missing_banks(tpm_banks: Iterable[HashAlg], digests: Mapping[str, bytes]) -> list[str]:
    """Active banks a measurement does not cover; extending then would leave a bank stale."""
    return [b.name for b in tpm_banks if b.name not in digests]


def open_tpm(spec: str) -> TPM:
    """Open a TPM from a TCTI-like spec.

    ``/dev/tpmrm0`` or ``device:/dev/tpmrm0``: a kernel TPM device (resource manager).
    ``swtpm:host=H,port=P``: swtpm over TCP. ``mssim:...`` is accepted for the reference
    simulator. Any failure raises :class:`~tboot_py.errors.TPMError`.
    """
    from tboot_py.tpm.esapi import EsapiTPM

    spec = spec.strip()
    if not spec:
        raise InputError("empty TPM specification")
    if spec.startswith("/"):
        spec = f"device:{spec}"
    name = spec.split(":", 1)[0]
    if name not in ("device", "swtpm", "mssim", "tabrmd"):
        raise InputError(f"unsupported TPM specification {spec!r}: use device:/dev/tpmrm0 or swtpm:host=H,port=P")
    return EsapiTPM(spec)
