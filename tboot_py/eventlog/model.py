"""The one event-log model for TPM 1.2 SHA1 logs, crypto-agile logs and DRTM logs.

Every record of a log, the Spec ID header included, becomes one :class:`Event`. Digests are
kept as ``(TPM_ALG_ID, digest)`` pairs in the order the record carries them, so algorithms
tboot-py cannot compute (or does not know) survive a parse. Event data stays raw bytes;
:mod:`tboot_py.eventlog.decode` interprets it lazily and never fails.

Everything here comes from untrusted input until a verified quote backs it (DESIGN.md).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from tboot_py import algorithms
from tboot_py.algorithms import HashAlg
from tboot_py.errors import UnknownAlgorithmError

# Event types, TCG PC Client Platform Firmware Profile (PFP) 1.05, 10.4.1 Table 9.
EV_PREBOOT_CERT = 0x00000000
EV_POST_CODE = 0x00000001
EV_UNUSED = 0x00000002
EV_NO_ACTION = 0x00000003
EV_SEPARATOR = 0x00000004
EV_ACTION = 0x00000005
EV_EVENT_TAG = 0x00000006
EV_S_CRTM_CONTENTS = 0x00000007
EV_S_CRTM_VERSION = 0x00000008
EV_CPU_MICROCODE = 0x00000009
EV_PLATFORM_CONFIG_FLAGS = 0x0000000A
EV_TABLE_OF_DEVICES = 0x0000000B
EV_COMPACT_HASH = 0x0000000C
EV_IPL = 0x0000000D
EV_IPL_PARTITION_DATA = 0x0000000E
EV_NONHOST_CODE = 0x0000000F
EV_NONHOST_CONFIG = 0x00000010
EV_NONHOST_INFO = 0x00000011
EV_OMIT_BOOT_DEVICE_EVENTS = 0x00000012
EV_POST_CODE2 = 0x00000013
EV_EFI_EVENT_BASE = 0x80000000
EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
EV_EFI_VARIABLE_BOOT = 0x80000002
EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
EV_EFI_BOOT_SERVICES_DRIVER = 0x80000004
EV_EFI_RUNTIME_SERVICES_DRIVER = 0x80000005
EV_EFI_GPT_EVENT = 0x80000006
EV_EFI_ACTION = 0x80000007
EV_EFI_PLATFORM_FIRMWARE_BLOB = 0x80000008
EV_EFI_HANDOFF_TABLES = 0x80000009
EV_EFI_PLATFORM_FIRMWARE_BLOB2 = 0x8000000A
EV_EFI_HANDOFF_TABLES2 = 0x8000000B
EV_EFI_VARIABLE_BOOT2 = 0x8000000C
EV_EFI_GPT_EVENT2 = 0x8000000D
EV_EFI_HCRTM_EVENT = 0x80000010
EV_EFI_VARIABLE_AUTHORITY = 0x800000E0
EV_EFI_SPDM_FIRMWARE_BLOB = 0x800000E1
EV_EFI_SPDM_FIRMWARE_CONFIG = 0x800000E2
EV_EFI_SPDM_DEVICE_POLICY = 0x800000E3
EV_EFI_SPDM_DEVICE_AUTHORITY = 0x800000E4

# Intel TXT DRTM event types (Intel TXT Software Development Guide, Appendix "TPM event
# log"; tboot include/txt/heap.h). Linux Secure Launch adds 0x502..0x504.
EV_TXT_BASE = 0x00000400
EV_TXT_PCR_MAPPING = 0x00000401
EV_TXT_HASH_START = 0x00000402
EV_TXT_COMBINED_HASH = 0x00000403
EV_TXT_MLE_HASH = 0x00000404
EV_TXT_BIOSAC_REG_DATA = 0x0000040A
EV_TXT_CPU_SCRTM_STAT = 0x0000040B
EV_TXT_LCP_CONTROL_HASH = 0x0000040C
EV_TXT_ELEMENTS_DIGEST = 0x0000040D
EV_TXT_STM_HASH = 0x0000040E
EV_TXT_OSSINITDATA_CAP_HASH = 0x0000040F
EV_TXT_SINIT_PUBKEY_HASH = 0x00000410
EV_TXT_LCP_HASH = 0x00000411
EV_TXT_LCP_DETAILS_HASH = 0x00000412
EV_TXT_LCP_AUTHORITIES_HASH = 0x00000413
EV_TXT_NV_INFO_HASH = 0x00000414
EV_TXT_COLD_BOOT_BIOS_HASH = 0x00000415
EV_TXT_KM_HASH = 0x00000416
EV_TXT_BPM_HASH = 0x00000417
EV_TXT_KM_INFO_HASH = 0x00000418
EV_TXT_BPM_INFO_HASH = 0x00000419
EV_TXT_BOOT_POL_HASH = 0x0000041A
EV_TXT_RANDOM_VALUE = 0x000004FE
EV_TXT_CAP_VALUE = 0x000004FF
EV_SLAUNCH = 0x00000502
EV_SLAUNCH_START = 0x00000503
EV_SLAUNCH_END = 0x00000504

#: A record whose PCR index is this is never extended (Windows WBCL log-only events).
PCR_INDEX_NONE = 0xFFFFFFFF

EVENT_TYPE_NAMES: dict[int, str] = {
    v: k for k, v in sorted(globals().items())
    if k.startswith("EV_") and isinstance(v, int) and k not in ("EV_EFI_EVENT_BASE", "EV_TXT_BASE")
}


def event_type_name(event_type: int) -> str:
    """``EV_SEPARATOR`` for 4; unknown types as ``EV_UNKNOWN_0x...`` (never fails)."""
    name = EVENT_TYPE_NAMES.get(event_type)
    if name is not None:
        return name
    if EV_TXT_BASE <= event_type <= 0x5FF:
        return f"EV_TXT_0x{event_type:x}"
    return f"EV_UNKNOWN_0x{event_type:08x}"


def is_drtm_event_type(event_type: int) -> bool:
    """Intel TXT / Secure Launch event types (0x400-0x5FF), written only after a DRTM launch."""
    return EV_TXT_BASE <= event_type <= 0x5FF


def bank_name(alg_id: int) -> str:
    """The bank name of a TPM_ALG_ID (``sha256``), or ``alg_0x1234`` for an unknown one."""
    alg = algorithms.by_id(alg_id)
    return alg.name if alg is not None else f"alg_0x{alg_id:04x}"


def _alg_id(alg: int | str | HashAlg) -> int | None:
    if isinstance(alg, HashAlg):
        return alg.alg_id
    if isinstance(alg, int):
        return alg
    name = alg.strip().lower()
    if name.startswith("alg_0x"):
        try:
            return int(name[6:], 16)
        except ValueError:
            return None
    try:
        return algorithms.by_name(name).alg_id
    except UnknownAlgorithmError:
        return None


class LogFormat(enum.Enum):
    """Record layout of a log.

    ``SHA1``: every record is a TCG_PCClientPCREvent (PFP 10.4.2) with one SHA1 digest:
    TPM 1.2 logs and SHA1-format logs written by TPM 2.0 firmware.
    ``CRYPTO_AGILE``: a Spec ID Event03 header (PFP 10.4.5.1) followed by TCG_PCR_EVENT2
    records (PFP 10.4.3) carrying one digest per bank.
    """

    SHA1 = "sha1"
    CRYPTO_AGILE = "crypto-agile"


@dataclass(frozen=True, slots=True)
class SpecIdEvent:
    """TCG_EfiSpecIDEvent ("Spec ID Event03"), PFP 10.4.5.1."""

    platform_class: int
    spec_version_major: int
    spec_version_minor: int
    spec_errata: int
    uintn_size: int
    #: ``(TPM_ALG_ID, digest size)`` for every bank the log carries, in header order.
    algorithms: tuple[tuple[int, int], ...]
    vendor_info: bytes = b""

    @property
    def bank_names(self) -> tuple[str, ...]:
        return tuple(bank_name(a) for a, _ in self.algorithms)

    def digest_size(self, alg_id: int) -> int | None:
        for a, size in self.algorithms:
            if a == alg_id:
                return size
        return None


@dataclass(frozen=True, slots=True)
class Event:
    """One record of a log.

    ``seq`` is the record's position in the file (the header record is 0), ``offset`` its
    byte offset. ``digests`` holds ``(TPM_ALG_ID, digest)`` pairs as recorded.
    """

    seq: int
    offset: int
    pcr: int
    event_type: int
    digests: tuple[tuple[int, bytes], ...]
    data: bytes

    def digest(self, alg: int | str | HashAlg) -> bytes | None:
        """The digest for a bank (TPM_ALG_ID, bank name or HashAlg); None if not recorded."""
        alg_id = _alg_id(alg)
        for a, d in self.digests:
            if a == alg_id:
                return d
        return None

    @property
    def event_type_name(self) -> str:
        return event_type_name(self.event_type)

    @property
    def extends(self) -> bool:
        """Whether a replay extends this record: not EV_NO_ACTION (PFP 10.4.5) and not PCR
        index 0xFFFFFFFF (log-only records)."""
        return self.event_type != EV_NO_ACTION and self.pcr != PCR_INDEX_NONE


@dataclass(frozen=True, slots=True)
class EventLog:
    """A parsed log. ``events`` includes every record, the Spec ID header record too."""

    format: LogFormat
    spec_id: SpecIdEvent | None
    events: tuple[Event, ...]
    source: str | None = field(default=None, compare=False)

    @property
    def algorithms(self) -> tuple[int, ...]:
        """The TPM_ALG_IDs of the banks this log carries."""
        if self.spec_id is not None:
            return tuple(a for a, _ in self.spec_id.algorithms)
        return (algorithms.SHA1.alg_id,)

    @property
    def bank_names(self) -> tuple[str, ...]:
        return tuple(bank_name(a) for a in self.algorithms)

    @property
    def is_drtm(self) -> bool:
        """Whether the log records a dynamic launch: an Intel TXT / Secure Launch event type
        extending one of the DRTM PCRs 17-22. (Some server firmware logs a 0x40E event in
        PCR 0 during a static boot; that is no dynamic launch.)"""
        return any(is_drtm_event_type(e.event_type) and 17 <= e.pcr <= 22 for e in self.events)

    def pcrs(self) -> tuple[int, ...]:
        """The PCRs this log extends, sorted."""
        return tuple(sorted({e.pcr for e in self.events if e.extends}))

    def events_for(self, pcr: int) -> tuple[Event, ...]:
        """The records that extend ``pcr``, in order."""
        return tuple(e for e in self.events if e.pcr == pcr and e.extends)
