"""Consistency checks on a log: digests against event data, and log-to-log differences.

The digest, not the data, is what the TPM extended. When a record's data does not hash to
its digest, the decoded data of that record cannot be trusted even if the replay matches a
quote (PFP 10.4.3: for most event types the digest is the hash of the event data).
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from tboot_py import algorithms
from tboot_py.eventlog import model as m
from tboot_py.eventlog.decode import TbootPyEventData, decode_tboot_py
from tboot_py.eventlog.model import Event, EventLog


class DigestStatus(enum.Enum):
    OK = "ok"  # every computable digest equals H(data) (or an accepted form of it)
    MISMATCH = "mismatch"  # a digest does not match the data its type says it hashes
    NOT_CHECKABLE = "not-checkable"  # the digest covers something else (an image, a blob)


# Types whose digest is H(event data) (PFP 10.4.1 Table 9, 10.4.4).
_HASH_OF_DATA = {
    m.EV_SEPARATOR, m.EV_EFI_ACTION, m.EV_ACTION, m.EV_EFI_VARIABLE_DRIVER_CONFIG,
    m.EV_EFI_VARIABLE_AUTHORITY, m.EV_EFI_VARIABLE_BOOT, m.EV_EFI_VARIABLE_BOOT2, m.EV_EFI_GPT_EVENT,
    m.EV_EFI_GPT_EVENT2, m.EV_IPL,
}
# grub logs "<prefix><string>" and extends H(<string>) (grub-core/commands/tpm.c behaviour).
# Older grub (2.02 distro patches) writes "grub_cmd <string>" without the colon.
_GRUB_PREFIXES = (b"grub_cmd: ", b"kernel_cmdline: ", b"module_cmdline: ", b"grub_cmd ", b"kernel_cmdline ",
                  b"module_cmdline ", b"grub_kernel_cmdline ")


@dataclass(frozen=True, slots=True)
class DigestCheck:
    seq: int
    pcr: int
    event_type: str
    status: DigestStatus
    detail: str = ""


def _accepted_preimages(e: Event) -> list[bytes] | None:
    """What the digest may be the hash of; None when the type's digest covers other bytes."""
    d = e.data
    forms = [d]
    if e.event_type == m.EV_IPL:
        text = d.rstrip(b"\x00")
        for p in _GRUB_PREFIXES:
            if text.startswith(p):  # newer grub hashes the string without its NUL, older with it
                return [text[len(p):], d[len(p):], text]
        if e.pcr in (8, 12):  # command lines (grub, systemd-boot UTF-16): the string itself
            return [d, text, d.rstrip(b"\x00") + b"\x00" if len(d) % 2 else d[:-2] if d.endswith(b"\x00\x00") else d]
        return None  # PCR 9 paths and the like: the digest is of the file
    if e.event_type in (m.EV_EFI_VARIABLE_BOOT, m.EV_EFI_VARIABLE_DRIVER_CONFIG, m.EV_EFI_VARIABLE_AUTHORITY):
        # PFP 10.4.4 (EV_EFI_VARIABLE_BOOT): the digest covers VariableData only; EDK2 also
        # does so for some DRIVER_CONFIG variables on older firmware.
        from tboot_py.errors import ParseError
        from tboot_py.eventlog.efi import variable_data

        with contextlib.suppress(ParseError):
            forms.append(variable_data(d).data)
    return forms


@dataclass(frozen=True, slots=True)
class Binding:
    """What an event's digests are the hash of: ``data``, bytes derived from the event data
    in one standard ``form``: "whole" (the data itself), "text" (without trailing NULs),
    "grub" (after a grub prefix) or "variable-value" (a UEFI_VARIABLE_DATA's value only)."""

    data: bytes
    form: str

    @property
    def whole(self) -> bool:
        return self.form == "whole"


def _forms(d: bytes) -> list[tuple[bytes, str]]:
    """Standard preimages a digest may cover, derived from event data (never from its type,
    which no digest binds): the string without its NULs (grub, systemd-boot UTF-16 command
    lines), the string after a grub prefix, and the value of a UEFI_VARIABLE_DATA (PFP 10.4.4,
    EV_EFI_VARIABLE_BOOT)."""
    forms: list[tuple[bytes, str]] = []
    text = d.rstrip(b"\x00")
    if text != d:
        forms.append((text, "text"))
        if d.endswith(b"\x00\x00"):
            forms.append((d[:-2], "text"))
    for p in _GRUB_PREFIXES:
        if text.startswith(p):  # newer grub hashes the string without its NUL, older with it
            forms += [(text[len(p):], "grub"), (d[len(p):], "grub")]
            break
    if len(d) >= 32:  # UEFI_VARIABLE_DATA: GUID, two UINT64 lengths, name
        from tboot_py.errors import ParseError
        from tboot_py.eventlog.efi import variable_data

        with contextlib.suppress(ParseError):
            forms.append((variable_data(d).data, "variable-value"))
    return forms


def binding(data: bytes, digests: Iterable[tuple[int, bytes]]) -> Binding | None:
    """The bytes that every digest (in a bank this OpenSSL computes) is the hash of, or None
    when no standard form of ``data`` hashes to all of them, or no bank can be computed.
    A replay that matches a quote proves data only through such a binding."""
    pairs: list[tuple[Any, bytes]] = []
    for alg_id, d in digests:
        ctor = _hash_ctor(alg_id)
        if ctor is None:
            return None  # a bank nobody can recompute binds nothing
        pairs.append((ctor, d))
    if not pairs:
        return None
    first_ctor, first_d = pairs[0]
    if first_ctor(data).digest() == first_d:
        return Binding(data, "whole") if all(c(data).digest() == d for c, d in pairs[1:]) else None
    for f, form in _forms(data):
        if all(c(f).digest() == d for c, d in pairs):
            return Binding(f, form)
    return None


@cache
def _hash_ctor(alg_id: int) -> Any:
    alg = algorithms.by_id(alg_id)
    return alg.ctor if alg is not None and alg.available else None


def check_event(e: Event) -> DigestCheck:
    """Whether ``e``'s digests match its data (never raises)."""
    name = e.event_type_name
    if e.event_type == m.EV_NO_ACTION:
        return DigestCheck(e.seq, e.pcr, name, DigestStatus.NOT_CHECKABLE, "EV_NO_ACTION is not extended")
    tp = decode_tboot_py(e.data) if e.event_type == m.EV_IPL else None
    if isinstance(tp, TbootPyEventData):
        return DigestCheck(e.seq, e.pcr, name, DigestStatus.NOT_CHECKABLE, f"digest of {tp.component} ({tp.kind})")
    if e.event_type not in _HASH_OF_DATA:
        return DigestCheck(e.seq, e.pcr, name, DigestStatus.NOT_CHECKABLE)
    forms = _accepted_preimages(e)
    if forms is None:
        return DigestCheck(e.seq, e.pcr, name, DigestStatus.NOT_CHECKABLE)
    checked = 0
    for alg_id, digest in e.digests:
        alg = algorithms.by_id(alg_id)
        if alg is None or not alg.available:
            continue
        checked += 1
        if not any(alg.digest(f) == digest for f in forms):
            return DigestCheck(e.seq, e.pcr, name, DigestStatus.MISMATCH,
                               f"{alg.name} digest {digest.hex()} is not the hash of the event data")
    if not checked:
        return DigestCheck(e.seq, e.pcr, name, DigestStatus.NOT_CHECKABLE, "no computable bank")
    return DigestCheck(e.seq, e.pcr, name, DigestStatus.OK)


def check_digests(log: EventLog) -> tuple[DigestCheck, ...]:
    """One check per record; see :class:`DigestStatus`."""
    return tuple(check_event(e) for e in log.events)


def mismatched_events(log: EventLog) -> tuple[DigestCheck, ...]:
    return tuple(c for c in check_digests(log) if c.status is DigestStatus.MISMATCH)


@dataclass(frozen=True, slots=True)
class LogDiff:
    """The first difference between two logs (None fields: the logs are equal)."""

    index: int | None
    a: Event | None
    b: Event | None
    reason: str

    @property
    def equal(self) -> bool:
        return self.index is None


def _describe(e: Event) -> str:
    return f"event {e.seq} PCR {e.pcr} {e.event_type_name}"


def diff(a: EventLog, b: EventLog) -> LogDiff:
    """Compare two logs record by record and name the first diverging record."""
    if a.algorithms != b.algorithms:
        return LogDiff(0, a.events[0] if a.events else None, b.events[0] if b.events else None,
                       f"banks differ: {', '.join(a.bank_names)} vs {', '.join(b.bank_names)}")
    for i, (x, y) in enumerate(zip(a.events, b.events, strict=False)):
        if x.pcr != y.pcr:
            return LogDiff(i, x, y, f"PCR {x.pcr} vs {y.pcr}")
        if x.event_type != y.event_type:
            return LogDiff(i, x, y, f"type {x.event_type_name} vs {y.event_type_name}")
        if x.digests != y.digests:
            for (aa, da), (ab, db) in zip(x.digests, y.digests, strict=False):
                if aa != ab or da != db:
                    return LogDiff(i, x, y, f"{m.bank_name(aa)} digest {da.hex()} vs {db.hex()}")
            return LogDiff(i, x, y, "digest lists differ")
        if x.data != y.data:
            return LogDiff(i, x, y, "event data differs (same digests)")
    if len(a.events) != len(b.events):
        i = min(len(a.events), len(b.events))
        extra = a.events[i] if len(a.events) > i else b.events[i]
        side = "first" if len(a.events) > i else "second"
        return LogDiff(i, a.events[i] if side == "first" else None, b.events[i] if side == "second" else None,
                       f"only the {side} log has {_describe(extra)} and {abs(len(a.events) - len(b.events)) - 1} more")
    return LogDiff(None, None, None, "logs are equal")
