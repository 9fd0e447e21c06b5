"""The policy model: frozen dataclasses only, no I/O and no serialization.

A :class:`Policy` is a mode plus a tree of rules that the top level combines with
all-of. Serialization lives in :mod:`tboot_py.policy._serialize`, file I/O and
signature checks in :mod:`tboot_py.policy.io`, evaluation in :mod:`tboot_py.policy.engine`
(python-tuf keeps model, serialization and I/O apart the same way).
"""

from __future__ import annotations

import datetime as _dt
import enum
from dataclasses import dataclass, field
from typing import NoReturn, Union

SCHEMA_VERSION = 1

#: The PCRs that a dynamic launch (Intel TXT / AMD SKINIT) resets and extends.
#: TCG PC Client Platform Firmware Profile 2.0 (section 3.3.4, "PCR usage"):
#: PCR 17-22 are the DRTM PCRs; they read all-FF before a dynamic launch and are
#: reset to zero by it, so neither value can be the result of a measured launch.
DRTM_PCRS = frozenset(range(17, 23))


class Mode(enum.Enum):
    """What a failed check does. Mirrors tboot's verified-launch policy types.

    tboot docs (tb_policy.h, ``TB_POLTYPE_*``): HALT halts on any error,
    CONT_VERIFY_FAIL carries on after a verification failure, CONT_NON_FATAL
    ignores non-fatal errors.
    """

    #: Deny on any mismatch (the default). Every rule is still evaluated, so the verdict
    #: lists every reason.
    HALT = "halt"
    #: Record a mismatch and evaluate every later rule; the verdict still denies.
    CONTINUE = "continue"
    #: Audit only: record mismatches and allow. Fatal problems (missing input,
    #: unusable PCR values) still deny. Must be chosen explicitly.
    NONFATAL = "nonfatal"


class Component(enum.Enum):
    """What a reference value describes."""

    HYPERVISOR = "hypervisor"
    KERNEL = "kernel"
    INITRD = "initrd"
    #: The kernel's (dom0's) command line.
    CMDLINE = "cmdline"
    #: The hypervisor's own command line (Xen's), measured apart from the kernel's.
    HYPERVISOR_CMDLINE = "hypervisor-cmdline"

    @property
    def is_cmdline(self) -> bool:
        return self in (Component.CMDLINE, Component.HYPERVISOR_CMDLINE)


class DigestKind(enum.Enum):
    """How a reference digest was computed."""

    #: The plain hash of the file's bytes.
    FILE = "file"
    #: The Authenticode (PE/COFF) image digest, as firmware measures an EFI binary.
    PE = "pe"
    #: tboot's module hash: H(H(cmdline) || H(image)), with a gzip image gunzipped first.
    TBOOT_MODULE = "tboot-module"


@dataclass(frozen=True)
class ReferenceValue:
    """One allowed value of a component: digests per bank, a label, an optional expiry.

    ``cmdline`` is the literal command line: for a CMDLINE component it is the value
    compared; for a tboot-module value it records the command line the hash covers.
    """

    label: str
    digests: tuple[tuple[str, bytes], ...]  # (bank, digest), banks in order, no repeats
    kind: DigestKind = DigestKind.FILE
    version: str | None = None
    expires: _dt.date | None = None
    cmdline: str | None = None

    def digest(self, bank: str) -> bytes | None:
        for b, d in self.digests:
            if b == bank:
                return d
        return None

    @property
    def banks(self) -> tuple[str, ...]:
        return tuple(b for b, _ in self.digests)

    def expired(self, today: _dt.date) -> bool:
        """A value expires at the end of its ``expires`` day."""
        return self.expires is not None and today > self.expires


@dataclass(frozen=True)
class ReferenceRule:
    """The measured component must match one of ``values``."""

    component: Component
    values: tuple[ReferenceValue, ...]
    id: str | None = None
    type_name = "reference"


@dataclass(frozen=True)
class PcrRule:
    """Verified PCR values must equal these, per bank: ``((bank, ((pcr, value), ...)), ...)``."""

    expected: tuple[tuple[str, tuple[tuple[int, bytes], ...]], ...]
    id: str | None = None
    type_name = "pcrs"

    def as_dict(self) -> dict[str, dict[int, bytes]]:
        return {bank: dict(values) for bank, values in self.expected}


@dataclass(frozen=True)
class SecureBootRule:
    """UEFI Secure Boot must be ``enabled`` (or disabled) per the firmware log."""

    enabled: bool = True
    id: str | None = None
    type_name = "secure-boot"


@dataclass(frozen=True)
class SignatureDbRule:
    """Entries of the UEFI signature databases and the image authorities.

    Each entry is a string: ``sha256:<hex>`` for an EFI_CERT_SHA256 entry, or
    ``x509:<hex sha256 of the certificate DER>`` for an EFI_CERT_X509 entry (UEFI 2.10,
    section 32.4.1, EFI_SIGNATURE_LIST). ``db_allow``: each entry must be in db;
    ``db_forbid``: none may be in db; ``dbx_require``: each must be in dbx (a revocation
    that must be present); ``authorities_allow``: every authority that verified a loaded
    image must be in the list; ``authorities_forbid``: none may have been used.
    """

    db_allow: tuple[str, ...] = ()
    db_forbid: tuple[str, ...] = ()
    dbx_require: tuple[str, ...] = ()
    authorities_allow: tuple[str, ...] = ()
    authorities_forbid: tuple[str, ...] = ()
    id: str | None = None
    type_name = "uefi-db"


@dataclass(frozen=True)
class EventMatcher:
    """Matches a firmware-log event. Every given field must match."""

    pcr: int | None = None
    event_type: int | None = None
    digest: tuple[str, bytes] | None = None  # (bank, digest)
    data_contains: str | None = None  # UTF-8 or UTF-16LE text in the event data
    description: str | None = None


@dataclass(frozen=True)
class EventRule:
    """``require``: each matcher must match an event; ``forbid``: none may match any event."""

    require: tuple[EventMatcher, ...] = ()
    forbid: tuple[EventMatcher, ...] = ()
    id: str | None = None
    type_name = "events"


class VlpModNum:
    """Special tboot module numbers (tb_policy.h)."""

    MAX = 127
    ANY = 129
    NV = 130
    NV_RAW = 131


#: tb_policy.h TB_POL_PCR_NONE: do not extend the measurement.
VLP_PCR_NONE = 255
VLP_MAX_PCR = 23


@dataclass(frozen=True)
class VlpEntry:
    """One tb_policy_entry_t: module number, PCR, hash type, allowed module hashes."""

    mod_num: int  # 0..127 or VlpModNum.ANY/NV/NV_RAW
    pcr: int  # 0..23 or VLP_PCR_NONE
    hash_any: bool  # TB_HTYPE_ANY (True) or TB_HTYPE_IMAGE (False)
    hashes: tuple[bytes, ...] = ()
    nv_index: int = 0


@dataclass(frozen=True)
class TbootVlpRule:
    """A tboot Verified Launch policy: the first entry whose mod_num matches wins.

    tboot docs / tb_policy.h ``find_policy_entry``: an entry applies to a module
    when its mod_num equals the module number or is TB_POL_MOD_NUM_ANY, first match
    in order. A module without an entry fails verification. Module numbers map to
    components through ``modules`` (default 0 hypervisor, 1 kernel, 2 initrd: the
    multiboot module order tboot sees for Xen).
    """

    bank: str
    entries: tuple[VlpEntry, ...]
    control: int = 1  # TB_POLCTL_EXTEND_PCR17
    reserved: int = 0
    modules: tuple[Component, ...] = (Component.HYPERVISOR, Component.KERNEL, Component.INITRD)
    id: str | None = None
    type_name = "tboot-vlp"


@dataclass(frozen=True)
class AllOf:
    rules: tuple[Rule, ...]
    id: str | None = None
    type_name = "all-of"


@dataclass(frozen=True)
class AnyOf:
    rules: tuple[Rule, ...]
    id: str | None = None
    type_name = "any-of"


Rule = Union[  # noqa: UP007 (a runtime alias used in isinstance checks)
    ReferenceRule, PcrRule, SecureBootRule, SignatureDbRule, EventRule, TbootVlpRule, AllOf, AnyOf
]
RULE_TYPES: tuple[type, ...] = (
    ReferenceRule, PcrRule, SecureBootRule, SignatureDbRule, EventRule, TbootVlpRule, AllOf, AnyOf
)


@dataclass(frozen=True)
class Policy:
    """A whole policy. The top-level rules combine with all-of."""

    rules: tuple[Rule, ...]
    mode: Mode = Mode.HALT
    name: str | None = None
    description: str | None = None
    version: int = SCHEMA_VERSION
    #: PCR banks the quote must cover and the logs must replay (None: sha256).
    banks: tuple[str, ...] | None = None
    #: The PCRs that hold tboot-py's records (None: PCR 9, the default mapping; tboot's
    #: mapping uses 18 and 19). Each must be quoted and fully explained by the logs, and a
    #: record anywhere else denies: no record can hide in a dropped log or unquoted PCR.
    record_pcrs: tuple[int, ...] | None = None
    #: Hex key ids of the keys whose signatures verified when it was loaded (empty: unsigned).
    signed_by: tuple[str, ...] = field(default=(), compare=False)
    #: Launch elements outside the gate's measurement that this policy accepts by name (the
    #: libvirt hook's ``qemu:commandline``, ``loader``...; tboot_py.launch.hooks.run).
    allow_launch: tuple[str, ...] = ()
    #: Warnings every decision under this policy repeats (an allow-all tboot VLP import).
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reason:
    """One finding of an evaluation.

    ``rule`` is the rule's path in the policy (``rules[2].rules[0]``, or its id), ``check``
    its type. ``expected`` lists the acceptable values (hex digests, or text), ``actual`` the
    value seen. ``fatal`` findings (missing input, unusable PCR values, unknown rule) deny
    in every mode, including nonfatal.
    """

    rule: str
    check: str
    passed: bool
    message: str
    component: str | None = None
    bank: str | None = None
    pcr: int | None = None
    expected: tuple[str, ...] = ()
    actual: str | None = None
    fatal: bool = False

    def as_json(self) -> dict[str, object]:
        return {
            "rule": self.rule, "check": self.check, "passed": self.passed, "message": self.message,
            "component": self.component, "bank": self.bank, "pcr": self.pcr,
            "expected": list(self.expected), "actual": self.actual, "fatal": self.fatal,
        }


@dataclass(frozen=True)
class Verdict:
    """The outcome of :func:`tboot_py.policy.evaluate`. Read ``.allowed``; never test it as a bool."""

    allowed: bool
    reasons: tuple[Reason, ...]
    mode: Mode
    quirks: tuple[str, ...] = ()
    policy_name: str | None = None
    #: The policy's own warnings (an UNSAFE import): every verdict under it carries them.
    warnings: tuple[str, ...] = ()

    def __bool__(self) -> NoReturn:
        raise TypeError("a Verdict has no truth value: read verdict.allowed")

    @property
    def failures(self) -> tuple[Reason, ...]:
        return tuple(r for r in self.reasons if not r.passed)

    def as_json(self) -> dict[str, object]:
        return {
            "allowed": self.allowed, "mode": self.mode.value, "policy": self.policy_name,
            "quirks": list(self.quirks), "warnings": list(self.warnings),
            "reasons": [r.as_json() for r in self.reasons],
        }
