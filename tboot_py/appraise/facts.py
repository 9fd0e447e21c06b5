"""What verified evidence proves, extracted for the policy engine.

A matching replay proves each record's PCR, its digests in the quoted banks and its place in
the PCR's sequence. It proves nothing about a record's type (never extended) or its data,
unless the digest is the hash of that data (go-attestation's rule, attest/eventlog.go,
made stricter here). So everything below is read from *bound* data only:

- :func:`bind`: each verified event with the bytes its digests bind (every quoted bank),
  or none; type and unbound data stay ``untrusted_`` and display-only.
- :func:`launched`: tboot-py's records. Version 2 records bind every field; version 1
  records bind a command line only by its hash, and nothing else. A record that does not
  decode, or whose data was edited, is a finding that denies; so is any other event after
  tboot-py's first record on its PCR (a hidden or disguised measurement).
- :func:`boot_facts`: Secure Boot state from PCR 7, by content, in the order the PFP
  requires (3.3.4.8, 10.4.4): exactly one separator on each of PCR 0-7, each Secure Boot
  configuration variable measured once and before PCR 7's separator, nothing that looks
  like configuration after it. Computed over all the evidence's logs together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, NamedTuple

from tboot_py import algorithms
from tboot_py.errors import ParseError
from tboot_py.eventlog import efi
from tboot_py.eventlog.checks import Binding, binding
from tboot_py.eventlog.decode import decode_tboot_py, looks_like_tboot_py
from tboot_py.policy.inputs import BootFacts, FirmwareEvent, MeasuredComponent
from tboot_py.policy.model import Component, DigestKind, Reason
from tboot_py.verify.evidence import VerifiedEvent

#: What an EV_SEPARATOR extends (PFP 10.4.1; PC Client 1.21, 3.3.2.2): the UINT32 0
#: normally (FFFFFFFF on some older firmware), and 1 when the firmware hit an error (its
#: data then holds error information, and the digest is still of the value 1).
SEPARATOR_VALUES = (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff")
SEPARATOR_ERROR = b"\x01\x00\x00\x00"
_SEPARATOR_DATA = frozenset((*SEPARATOR_VALUES, SEPARATOR_ERROR))
#: The order in which firmware measures the Secure Boot configuration (PFP 10.4.4).
SB_ORDER = ("SecureBoot", "PK", "KEK", "db", "dbx")
#: The Secure Boot configuration variables and their vendor GUIDs (UEFI 2.10, 3.3 and 32.6.1).
SB_CONFIG = {"SecureBoot": efi.EFI_GLOBAL_VARIABLE, "PK": efi.EFI_GLOBAL_VARIABLE, "KEK": efi.EFI_GLOBAL_VARIABLE,
             "db": efi.EFI_IMAGE_SECURITY_DATABASE, "dbx": efi.EFI_IMAGE_SECURITY_DATABASE}
#: shim logs these as authority events, but they are configuration, not an image's signer.
NOT_AUTHORITIES = frozenset({"SbatLevel", "MokListTrusted"})
FIRMWARE_PCRS = range(8)


class BoundEvent(NamedTuple):
    """A verified event with what its digests bind."""

    event: VerifiedEvent
    #: The bytes every quoted-bank digest is the hash of, or None: the data is unbound.
    binding: Binding | None

    @property
    def pcr(self) -> int:
        return self.event.pcr

    @property
    def where(self) -> str:
        return f"{self.event.log!r} event {self.event.seq}"

    @property
    def whole(self) -> bytes | None:
        """The event data, when the digests bind all of it."""
        b = self.binding
        return b.data if b is not None and b.whole else None


def bind(events: Sequence[VerifiedEvent]) -> tuple[BoundEvent, ...]:
    """Each event with its binding (tboot_py.eventlog.checks.binding). The common case,
    data hashed whole, is checked here first without the general search."""
    out: list[BoundEvent] = []
    ctors: dict[int, Any] = {}
    for e in events:
        data, digests = e.untrusted_data, e.digests
        whole = bool(digests)
        for a, d in digests:
            ctor = ctors.get(a)
            if ctor is None:
                ctor = ctors[a] = _ctor(a)
            if ctor is False or ctor(data).digest() != d:
                whole = False
                break
        out.append(BoundEvent(e, Binding(data, "whole") if whole else binding(data, digests)))
    return tuple(out)


def _ctor(alg_id: int) -> Any:
    alg = algorithms.by_id(alg_id)
    return alg.ctor if alg is not None and alg.available else False


def _finding(check: str, message: str, **kw: object) -> Reason:
    return Reason(rule="appraisal", check=check, passed=False, message=message, fatal=True, **kw)  # type: ignore[arg-type]


def separator(e: BoundEvent) -> str | None:
    """"ok" or "error" when the event's digests are the hash of a separator value in every
    quoted bank; None otherwise. Recognised by digest (the type proves nothing), unless the
    data binds as something else: a variable whose value is 01000000 (BootOrder 1, 0) is
    no separator."""
    if e.binding is not None and not e.binding.whole:
        return None
    kinds = [_separator_digests(a).get(d) for a, d in e.event.digests]
    if not kinds or kinds[0] is None or any(k != kinds[0] for k in kinds):
        return None
    return kinds[0]


@cache
def _separator_digests(alg_id: int) -> dict[bytes, str]:
    """digest -> "ok" | "error" for the separator values in one bank."""
    alg = algorithms.by_id(alg_id)
    if alg is None or not alg.available:
        return {}
    return {alg.digest(SEPARATOR_VALUES[0]): "ok", alg.digest(SEPARATOR_VALUES[1]): "ok",
            alg.digest(SEPARATOR_ERROR): "error"}


def is_separator(e: BoundEvent) -> bool:
    return separator(e) is not None


# ---------------------------------------------------------------- tboot-py records

@dataclass(frozen=True)
class Launched:
    """tboot-py's records among the verified events."""

    measurements: tuple[MeasuredComponent, ...]
    #: The record data of each measurement, in replay order.
    records: tuple[bytes, ...]
    findings: tuple[Reason, ...]


def _banks(e: VerifiedEvent) -> tuple[tuple[str, bytes], ...]:
    return tuple((name, d) for a, d in e.digests if (name := _bank_name(a)) is not None)


@cache
def _bank_name(alg_id: int) -> str | None:
    alg = algorithms.by_id(alg_id)
    return alg.name if alg is not None else None


def launched(events: Sequence[BoundEvent]) -> Launched:
    """The launched artifacts, from tboot-py's records; every doubt is a finding."""
    out: list[MeasuredComponent] = []
    records: list[bytes] = []
    findings: list[Reason] = []
    first_on: dict[int, int] = {}
    claims = [looks_like_tboot_py(be.event.untrusted_data) for be in events]
    for i, be in enumerate(events):
        if claims[i]:
            first_on.setdefault(be.pcr, i)
    for i, be in enumerate(events):
        e = be.event
        if not claims[i]:
            start = first_on.get(e.pcr)
            if start is not None and i > start:
                findings.append(_finding(
                    "tboot-py-record", f"{be.where} on PCR {e.pcr} comes after tboot-py's records there but is "
                    "not one: a hidden or disguised measurement", pcr=e.pcr))
            continue
        m = _record(be, findings)
        if m is not None:
            out.append(m)
            records.append(e.untrusted_data)
    return Launched(tuple(out), tuple(records), tuple(findings))


def record_coverage(events: Sequence[BoundEvent], quoted: Mapping[str, Mapping[int, bytes]],
                    record_pcrs: tuple[int, ...]) -> list[Reason]:
    """Every record must be seen. A verifier sees only the records in the logs it is given and
    on the PCRs the quote covers, so: each record PCR must be quoted in every quoted bank; a
    record PCR no log extends must hold its reset value (else a log was dropped); and a
    record on any other PCR denies (records forged there could stand in for hidden ones)."""
    out: list[Reason] = []
    extended = {be.pcr for be in events}
    for pcr in record_pcrs:
        missing = [b for b, regs in quoted.items() if pcr not in regs]
        if missing or not quoted:
            out.append(_finding("record-pcrs", f"PCR {pcr} holds tboot-py's records but the quote does not cover it"
                                f"{' in ' + ', '.join(missing) if missing else ''}: records there are unseen", pcr=pcr))
            continue
        if pcr in extended:
            continue  # the replay matched the quote: every extend is in the logs
        for bank, regs in quoted.items():
            v = regs[pcr]
            reset = b"\xff" * len(v) if 17 <= pcr <= 22 else b"\x00" * len(v)
            if v != reset:
                out.append(_finding("record-pcrs", f"PCR {pcr} ({bank}) was extended but no log of the evidence "
                                    "explains it: a log of records was left out", pcr=pcr, bank=bank))
                break
    for be in events:
        if be.pcr not in record_pcrs and looks_like_tboot_py(be.event.untrusted_data):
            out.append(_finding("record-pcrs", f"{be.where} is a tboot-py record on PCR {be.pcr}, which is not a "
                                f"record PCR ({', '.join(map(str, record_pcrs))}; policy record_pcrs)", pcr=be.pcr))
            break
    return out


def _record(be: BoundEvent, findings: list[Reason]) -> MeasuredComponent | None:
    e = be.event
    info = decode_tboot_py(e.untrusted_data)
    if info is None:
        findings.append(_finding("tboot-py-record", f"{be.where} on PCR {e.pcr} claims to be a tboot-py record "
                                 "but does not decode", pcr=e.pcr))
        return None
    if info.version not in (1, 2):
        findings.append(_finding("tboot-py-record", f"{be.where}: unknown tboot-py record version {info.version}",
                                 pcr=e.pcr))
        return None
    try:
        comp, kind = Component(info.component), DigestKind(info.kind)
    except ValueError:
        findings.append(_finding("tboot-py-record", f"{be.where} names an unknown component or kind "
                                 f"({info.component!r}, {info.kind!r})", pcr=e.pcr))
        return None
    if info.version == 2:
        if be.whole is None:
            findings.append(_finding(
                "tboot-py-record", f"{be.where}: the {info.component} record's data was edited: its digest is not "
                "the hash of the data, so nothing in it is proven", component=info.component, pcr=e.pcr))
            return None
        if comp.is_cmdline and info.cmdline is None:
            findings.append(_finding("tboot-py-record", f"{be.where}: a {comp.value} record without a command line",
                                     component=comp.value, pcr=e.pcr))
            return None
        return MeasuredComponent(comp, kind, info.artifact_digests, cmdline=info.cmdline, name=info.file)
    # Version 1: the digest is the artifact's; the fields are not bound. A command line is
    # proven by hashing it (it is what was extended); a module's command line is not.
    digests = _banks(e)
    if comp.is_cmdline:
        raw = (info.cmdline or "").encode()
        if info.cmdline is None or any(algorithms.by_name(b).digest(raw) != d for b, d in digests):
            findings.append(_finding(
                "tboot-py-record", f"{be.where}: the command line in the record does not hash to its digest: "
                "it is not the command line that was measured", component=comp.value, pcr=e.pcr))
            return None
        return MeasuredComponent(comp, kind, digests, cmdline=info.cmdline, name=info.file)
    return MeasuredComponent(comp, kind, digests, cmdline=info.cmdline, name=info.file,
                             cmdline_bound=info.cmdline is None)


# ---------------------------------------------------------------- firmware events

def firmware_events(events: Sequence[BoundEvent]) -> tuple[FirmwareEvent, ...]:
    """Every verified event, for event rules: data only where bound."""
    names: dict[int, str | None] = {}
    out = []
    for be in events:
        e = be.event
        b = be.binding
        banks = []
        for a, d in e.digests:
            name = names[a] if a in names else names.setdefault(a, _bank_name(a))
            if name is not None:
                banks.append((name, d))
        out.append(FirmwareEvent(e.pcr, e.untrusted_type, tuple(banks),
                                 b.data if b is not None else e.untrusted_data, e.seq, b is not None))
    return tuple(out)


def ordering(events: Sequence[BoundEvent]) -> dict[int, tuple[str, ...]]:
    """PCR 0-7 -> breaks of PFP 3.3.4.2 / 10.4.1: each of them holds exactly one
    EV_SEPARATOR, recognised by its digest, of value 0 (FFFFFFFF reports a firmware error)."""
    seps: dict[int, list[BoundEvent]] = {}
    seen: set[int] = set()
    for be in events:
        if be.pcr in FIRMWARE_PCRS:
            seen.add(be.pcr)
            if is_separator(be if be.pcr != 7 else BoundEvent(be.event, _pcr7_binding(be))):
                seps.setdefault(be.pcr, []).append(be)
    out: dict[int, tuple[str, ...]] = {}
    for pcr in sorted(seen):
        found = seps.get(pcr, [])
        problems: list[str] = []
        if not found:
            problems.append(f"PCR {pcr} has no separator (PFP 3.3.4.2: firmware ends its phase with one)")
        elif len(found) > 1:
            problems.append(f"PCR {pcr} has {len(found)} separators ({', '.join(s.where for s in found)}); the PFP "
                            "requires one, so events after the first may have been extended after boot")
        if any(separator(s) == "error" for s in found):
            problems.append(f"PCR {pcr}: the firmware's separator reports an error (value 1, PFP 10.4.1)")
        if problems:
            out[pcr] = tuple(problems)
    return out


# ---------------------------------------------------------------- Secure Boot state

def _pcr7_binding(be: BoundEvent) -> Binding | None:
    """PCR 7 holds variables (hashed whole, or by value on older firmware), separators and
    action strings (hashed whole): any other binding form there proves nothing. A value
    that is itself a UEFI_VARIABLE_DATA is a variable wrapped to look bound, and a value
    that is a separator's is a separator wrapped as a variable (no Secure Boot variable has
    a 4-byte value): both prove nothing but their digest."""
    b = be.binding
    if b is None or b.whole:
        return b
    if b.form == "variable-value" and _variable(b.data) is None and b.data not in _SEPARATOR_DATA:
        return b
    return None


@dataclass
class _Pcr7:
    findings: list[str] = field(default_factory=list)
    config: dict[str, efi.VariableData] = field(default_factory=dict)
    authorities: set[str] = field(default_factory=set)
    authorities_known: bool = True


def _variable(data: bytes | None) -> efi.VariableData | None:
    if data is None:
        return None
    try:
        return efi.variable_data(data)
    except ParseError:
        return None


def _is_config(var: efi.VariableData) -> bool:
    """A Secure Boot configuration variable under its own GUID whose value has the shape of
    one: a one-byte boolean, or signature lists (an authority entry is one signature datum)."""
    if SB_CONFIG.get(var.name) != var.guid:
        return False
    if var.name == "SecureBoot":
        return len(var.data) <= 1
    try:
        efi.signature_lists(var.data)
    except ParseError:
        return False
    return True


def _named_by_position(before: Sequence[BoundEvent]) -> tuple[dict[int, efi.VariableData], bool]:
    """The PFP fixes the order in which firmware measures the Secure Boot configuration
    before PCR 7's separator: SecureBoot, PK, KEK, db, dbx (10.4.4). Returns whether the
    first variable events claim exactly that order, and {index: variable} for those whose
    digest binds only the value: older firmware hashes only a configuration variable's
    value (the quirk go-attestation and tcglog-parser know), and their position proves
    their name."""
    claimed: list[tuple[int, efi.VariableData]] = []
    for i, be in enumerate(before):
        var = _variable(be.event.untrusted_data)
        if var is not None and be.binding is not None:
            claimed.append((i, var))
    if not claimed:
        return {}, True  # no configuration measured at all (BIOS, or Secure Boot not supported)
    first = claimed[:len(SB_ORDER)]
    if tuple(v.name for _, v in first) != SB_ORDER or any(SB_CONFIG[v.name] != v.guid for _, v in first):
        return {}, False
    out: dict[int, efi.VariableData] = {}
    for (i, var), name in zip(first, SB_ORDER, strict=True):
        b = before[i].binding
        if b is not None and not b.whole and b.data == var.data:
            out[i] = efi.VariableData(SB_CONFIG[name], name, var.data)
    return out, True


def _signature_db(var: efi.VariableData) -> frozenset[str] | None:
    """``x509:<sha256 of DER>`` / ``sha256:<hex>`` entries of a measured signature database."""
    try:
        entries = efi.signature_lists(var.data)
    except ParseError:
        return None
    out: set[str] = set()
    for s in entries:
        if s.cert is not None:
            out.add(f"x509:{s.cert.sha256}")
        elif s.type == "sha256":
            out.add(f"sha256:{s.data.hex()}")
    return frozenset(out)


def _authority(var: efi.VariableData) -> str | None:
    """The db entry an EV_EFI_VARIABLE_AUTHORITY names (its data is one EFI_SIGNATURE_DATA)."""
    a = efi.authority_data(var.data)
    if a.cert is not None:
        return f"x509:{a.cert.sha256}"
    if len(var.data) == 48:  # SignatureOwner GUID + a SHA-256 hash entry
        return f"sha256:{var.data[16:].hex()}"
    return None


def boot_facts(events: Sequence[BoundEvent], order: Mapping[int, tuple[str, ...]]) -> BootFacts | None:
    """Secure Boot state from the PCR 7 events of all logs, in replay order; None when the
    evidence has no PCR 7 events. Every break of the PFP's ordering is a finding."""
    pcr7 = [BoundEvent(be.event, _pcr7_binding(be)) for be in events if be.pcr == 7]
    if not pcr7:
        return None
    st = _Pcr7(findings=list(order.get(7, ())))
    seps = [i for i, be in enumerate(pcr7) if is_separator(be)]
    cut = seps[0] if seps else len(pcr7)
    by_position, in_order = _named_by_position(pcr7[:cut])
    if not in_order:
        st.findings.append("the first variables measured before PCR 7's separator are not SecureBoot, PK, KEK, "
                           "db, dbx in this order (PFP 10.4.4)")
    for i, be in enumerate(pcr7):
        if i in seps:
            continue
        var = _variable(be.whole)
        if var is None and i < cut and be.binding is not None and i in by_position:
            var = by_position[i]  # the digest binds the value; the PFP's order proves the name
        if be.binding is None:
            # Unbound data could hide configuration before the separator, or an authority anywhere.
            if i < cut:
                st.findings.append(f"{be.where} precedes PCR 7's separator but its data is not what was measured "
                                   "(the digest binds none of it), so the Secure Boot configuration is unknown")
            st.authorities_known = False
            continue
        if var is None:
            if i > cut and be.binding.form == "variable-value":
                # A variable hashed by its value only, after the separator: no position names
                # it, so it may be any signer.
                st.authorities_known = False
            continue  # bound, and not a UEFI variable: a string or a blob, neither configuration nor signer
        if _is_config(var):
            if i > cut:
                st.findings.append(f"{be.where}: Secure Boot variable {var.name} measured after PCR 7's separator "
                                   "(PFP 10.4.4: configuration is measured before it)")
            elif var.name in st.config:
                st.findings.append(f"{be.where}: Secure Boot variable {var.name} measured twice before PCR 7's "
                                   "separator (PFP 10.4.4: once)")
            else:
                st.config[var.name] = var
            continue
        if var.name in NOT_AUTHORITIES or var.guid == efi.EFI_GLOBAL_VARIABLE:
            continue  # configuration (SbatLevel, AuditMode, DeployedMode...), not an image's signer
        try:
            auth = _authority(var)
        except ParseError:
            auth = None
        if auth is None:
            st.authorities_known = False
        else:
            st.authorities.add(auth)
    sb = st.config.get("SecureBoot")
    return BootFacts(
        secure_boot=None if sb is None else (len(sb.data) == 1 and sb.data[0] == 1),
        db=_signature_db(st.config["db"]) if "db" in st.config else None,
        dbx=_signature_db(st.config["dbx"]) if "dbx" in st.config else None,
        authorities=frozenset(st.authorities) if st.authorities_known else None,
        findings=tuple(st.findings),
    )
