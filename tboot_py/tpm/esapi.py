"""The TPM backend over tpm2-pytss (ESAPI). The only module allowed to import tpm2_pytss.

tpm2_pytss has no type hints; everything it returns is converted to plain Python here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from tboot_py import algorithms
from tboot_py.algorithms import HashAlg
from tboot_py.errors import TPMError, TPMUnavailableError
from tboot_py.tpm import PCRValues, check_pcr_index, missing_banks

# The ESYS library logs every TPM error to stderr; tboot-py reports errors itself.
os.environ.setdefault("TSS2_LOG", "all+NONE")

try:  # pragma: no cover - import guard
    from tpm2_pytss import ESAPI, TSS2_Exception
    from tpm2_pytss.constants import ESYS_TR, TPM2_CAP
    from tpm2_pytss.types import (
        TPML_DIGEST_VALUES,
        TPML_PCR_SELECTION,
        TPMS_PCR_SELECTION,
        TPMT_HA,
        TPMU_HA,
    )
except ImportError as e:  # pragma: no cover
    raise TPMError(f"tpm2-pytss is not usable: {e}") from e

# DRTM PCRs are extendable only from higher localities (PC Client PTP, Table 3); tboot's
# measured launch extends PCR 18/19 from locality 2.
_EXTEND_LOCALITY = {17: 4, 18: 2, 19: 2, 20: 2, 21: 2, 22: 2}

# TPM2_PCR_Read returns at most 8 digests per call (TPML_DIGEST, TPM 2.0 Part 2, 10.9.2).
_MAX_READ = 8


@contextmanager
def tss_errors(what: str) -> Iterator[None]:
    """Turn TSS exceptions into TPMError that keeps the return code."""
    try:
        yield
    except TSS2_Exception as e:
        raise TPMError(f"{what}: {e}", rc=int(e.rc)) from e
    except TPMError:
        raise
    except Exception as e:  # tpm2_pytss raises bare RuntimeError/ValueError from the TCTI loader
        raise TPMError(f"{what}: {e}") from e


def _digest_union(alg: HashAlg, d: bytes) -> Any:
    # TPMU_HA is a union selected by name (DESIGN.md pitfalls); field names follow TPM 2.0 Part 2, 10.3.1.
    field = {"sha1": "sha1", "sha256": "sha256", "sha384": "sha384", "sha512": "sha512", "sm3_256": "sm3_256"}
    if alg.name not in field:
        raise TPMError(f"cannot extend bank {alg.name} through tpm2-pytss")
    return TPMT_HA(hashAlg=alg.alg_id, digest=TPMU_HA(**{field[alg.name]: d}))


class EsapiTPM:
    """A TPM reached through an ESAPI context (device, swtpm or mssim TCTI)."""

    def __init__(self, tcti: str) -> None:
        self.tcti = tcti
        try:
            self.esapi: Any = ESAPI(tcti)
        except Exception as e:  # TSS2_Exception, or loader errors for unknown TCTIs
            rc = int(getattr(e, "rc", 0) or 0)
            raise TPMUnavailableError(f"cannot open TPM {tcti!r}: {e}", rc=rc) from e
        self._banks: tuple[HashAlg, ...] | None = None

    def banks(self) -> tuple[HashAlg, ...]:
        if self._banks is None:
            with tss_errors("TPM2_GetCapability(PCRS)"):
                _more, cap = self.esapi.get_capability(TPM2_CAP.PCRS, 0, 1)
            out: list[HashAlg] = []
            for sel in cap.data.assignedPCR:
                alg = algorithms.by_id(int(sel.hash))
                # A bank is active when at least one PCR is allocated to it (TPM 2.0 Part 3, 22.5).
                if alg is not None and any(bytes(sel.pcrSelect)[: sel.sizeofSelect]):
                    out.append(alg)
            self._banks = tuple(out)
        return self._banks

    def read_pcrs(self, pcrs: Iterable[int], banks: Iterable[HashAlg] | None = None) -> PCRValues:
        wanted = sorted({check_pcr_index(i) for i in pcrs})
        sel_banks = tuple(self.banks() if banks is None else banks)
        active = {b.name for b in self.banks()}
        out: PCRValues = {}
        for b in sel_banks:
            if b.name not in active:
                raise TPMError(f"PCR bank {b.name} is not active on this TPM")
            got: dict[int, bytes] = {}
            todo = list(wanted)
            while todo:
                chunk = todo[:_MAX_READ]
                spec = f"{b.name}:{','.join(map(str, chunk))}"
                with tss_errors(f"TPM2_PCR_Read({spec})"):
                    _cnt, out_sel, digests = self.esapi.pcr_read(TPML_PCR_SELECTION.parse(spec))
                returned = _selected(out_sel)
                values = [bytes(d) for d in digests]
                if not returned or len(returned) != len(values):
                    raise TPMError(f"TPM2_PCR_Read({spec}) returned no usable values")
                got.update(zip(returned, values, strict=True))
                todo = [i for i in todo if i not in got]
            out[b.name] = {i: got[i] for i in wanted}
        return out

    def extend(self, pcr: int, digests: Mapping[str, bytes]) -> None:
        check_pcr_index(pcr)
        active = self.banks()
        missing = missing_banks(active, digests)
        if missing:
            raise TPMError(f"measurement lacks active banks: {', '.join(missing)}")
        values = TPML_DIGEST_VALUES([_digest_union(b, digests[b.name]) for b in active])
        locality = _EXTEND_LOCALITY.get(pcr, 0)
        with tss_errors(f"TPM2_PCR_Extend(PCR {pcr})"):
            if locality:
                # Only a TCTI with locality control (swtpm, mssim) can do this; a kernel device
                # refuses, and the TPM then answers TPM_RC_LOCALITY.
                self.esapi.tcti.set_locality(locality)
            try:
                self.esapi.pcr_extend(ESYS_TR.PCR0 + pcr, values)
            finally:
                if locality:
                    self.esapi.tcti.set_locality(0)

    def boot_counters(self) -> tuple[int, int]:
        with tss_errors("TPM2_ReadClock"):
            info = self.esapi.read_clock()
        return int(info.clockInfo.resetCount), int(info.clockInfo.restartCount)

    def close(self) -> None:
        esapi, self.esapi = self.esapi, None
        if esapi is not None:
            with tss_errors("closing TPM context"):
                esapi.close()


def _selected(sel_list: Any) -> list[int]:
    """PCR indices a TPML_PCR_SELECTION selects, in ascending order (one bank)."""
    out: list[int] = []
    for sel in sel_list:
        s: TPMS_PCR_SELECTION = sel
        bits = bytes(s.pcrSelect)[: s.sizeofSelect]
        out.extend(i for i in range(len(bits) * 8) if bits[i // 8] >> (i % 8) & 1)
    return out
