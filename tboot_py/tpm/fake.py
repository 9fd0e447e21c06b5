"""An in-memory TPM for unit tests only. It implements PCR extend semantics exactly
(TPM 2.0 Part 1, 17.2: PCR_new = H(PCR_old || digest)) and nothing else."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tboot_py import algorithms
from tboot_py.algorithms import HashAlg
from tboot_py.errors import TPMError
from tboot_py.tpm import NUM_PCRS, PCRValues, check_pcr_index, missing_banks


class FakeTPM:
    """PCR banks in memory. ``fail_after`` makes the n-th extend fail, to test error paths."""

    def __init__(
        self,
        banks: Iterable[HashAlg] = algorithms.DEFAULT_BANKS,
        *,
        locality: int = 0,
        fail_after: int | None = None,
    ) -> None:
        self._banks = tuple(banks)
        # PCR 17-22 reset to all-FF until a DRTM event (PC Client PTP, 4.6.2); locality 3/4
        # resets PCR 0 to the locality in its last byte (PC Client PFP, 10.4.5.3).
        self._pcrs: dict[str, list[bytes]] = {}
        for b in self._banks:
            vals = [b"\x00" * b.size] * NUM_PCRS
            for i in range(17, 23):
                vals[i] = b"\xff" * b.size
            if locality:
                vals[0] = b"\x00" * (b.size - 1) + bytes([locality])
            self._pcrs[b.name] = vals
        self._fail_after = fail_after
        self.extend_count = 0
        self.closed = False

    def banks(self) -> tuple[HashAlg, ...]:
        return self._banks

    def read_pcrs(self, pcrs: Iterable[int], banks: Iterable[HashAlg] | None = None) -> PCRValues:
        sel = tuple(self._banks if banks is None else banks)
        out: PCRValues = {}
        for b in sel:
            if b.name not in self._pcrs:
                raise TPMError(f"bank {b.name} is not active", rc=0x1C3)
            out[b.name] = {check_pcr_index(i): self._pcrs[b.name][i] for i in pcrs}
        return out

    def extend(self, pcr: int, digests: Mapping[str, bytes]) -> None:
        check_pcr_index(pcr)
        missing = missing_banks(self._banks, digests)
        if missing:
            raise TPMError(f"measurement lacks active banks: {', '.join(missing)}")
        if self._fail_after is not None and self.extend_count >= self._fail_after:
            raise TPMError("injected failure", rc=0x101)
        for b in self._banks:
            d = digests[b.name]
            if len(d) != b.size:
                raise TPMError(f"{b.name} digest has {len(d)} bytes, expected {b.size}", rc=0x1D5)
            self._pcrs[b.name][pcr] = b.digest(self._pcrs[b.name][pcr] + d)
        self.extend_count += 1

    def boot_counters(self) -> tuple[int, int]:
        return (0, 0)

    def close(self) -> None:
        self.closed = True
