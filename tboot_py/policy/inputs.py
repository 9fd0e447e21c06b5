"""What the engine evaluates: measurements, verified PCRs, boot state, firmware events.

These are plain frozen dataclasses so that the engine depends on no other stage. The
``from_*`` adapters accept the objects of :mod:`tboot_py.measure` and
:mod:`tboot_py.eventlog` by their attributes (duck typing), so the policy package does not
import those stages at start-up.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from tboot_py import algorithms
from tboot_py.errors import PolicyError
from tboot_py.policy.model import Component, DigestKind, Reason


@dataclass(frozen=True)
class MeasuredComponent:
    """One artifact that is about to be launched, as measured."""

    component: Component
    kind: DigestKind
    digests: tuple[tuple[str, bytes], ...]  # (bank, digest)
    cmdline: str | None = None
    name: str | None = None
    #: Whether ``cmdline`` is proven (measured by the gate, or bound by a verified record).
    #: A version 1 tboot module record carries a command line its digest does not bind.
    cmdline_bound: bool = True

    def digest(self, bank: str) -> bytes | None:
        for b, d in self.digests:
            if b == bank:
                return d
        return None


class FirmwareEvent(NamedTuple):
    """A firmware-log event, reduced to what rules look at. (A NamedTuple: an appraisal
    makes one per event of the evidence.)"""

    pcr: int
    #: Untrusted: the type field is never extended. Display only.
    event_type: int
    digests: tuple[tuple[str, bytes], ...]
    #: When ``bound``, exactly the bytes the digests are the hash of; else untrusted.
    data: bytes = b""
    seq: int | None = None
    bound: bool = False


@dataclass(frozen=True)
class BootFacts:
    """Boot state taken from the firmware log.

    Signature-database entries are ``sha256:<hex>`` (EFI_CERT_SHA256) or
    ``x509:<hex sha256 of the certificate DER>`` (EFI_CERT_X509), lower case.
    ``None`` means the log did not say (a rule that needs it then denies).
    """

    secure_boot: bool | None = None
    db: frozenset[str] | None = None
    dbx: frozenset[str] | None = None
    authorities: frozenset[str] | None = None
    #: Breaks of the PFP's PCR 7 ordering rules (separators, configuration measured once and
    #: before the separator): each denies every rule that reads this boot state.
    findings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Inputs:
    """Everything :func:`tboot_py.policy.evaluate` may look at. Anything left ``None`` is
    missing, and a rule that needs it denies with a fatal reason.

    ``pcrs`` must come from a verified quote (or the local TPM for a launch gate):
    ``{bank: {pcr: value}}``. ``quirks`` are the firmware quirks applied while parsing the
    log; the verdict lists them. ``today`` decides reference-value expiry (default: UTC today).
    """

    measurements: tuple[MeasuredComponent, ...] = ()
    pcrs: Mapping[str, Mapping[int, bytes]] | None = None
    boot: BootFacts | None = None
    events: tuple[FirmwareEvent, ...] | None = None
    quirks: tuple[str, ...] = ()
    today: _dt.date | None = None
    #: The PCRs whose events are complete and backed by a verified quote. ``None``: every
    #: PCR of ``events`` is. An event rule naming another PCR cannot be decided, and denies.
    event_pcrs: frozenset[int] | None = None
    #: Findings of the appraisal itself (forged, undecodable or hidden records); each denies.
    findings: tuple[Reason, ...] = ()
    #: PCR -> breaks of the PFP's ordering rules on it (separators); an event rule naming
    #: that PCR cannot be decided.
    ordering: Mapping[int, tuple[str, ...]] = field(default_factory=dict)


# ---------------------------------------------------------------- adapters

def _digest_pairs(obj: Any) -> tuple[tuple[str, bytes], ...]:
    """Accept a DigestSet (``as_dict()``), a mapping or pairs; banks by name."""
    if hasattr(obj, "as_dict"):
        obj = obj.as_dict()
    items: Iterable[Any] = obj.items() if isinstance(obj, Mapping) else obj
    out: list[tuple[str, bytes]] = []
    for bank, digest in items:
        if isinstance(bank, int):  # a TPM_ALG_ID, as event-log records carry them
            alg = algorithms.by_id(bank)
            if alg is None:
                continue
            name = alg.name
        else:
            name = bank if isinstance(bank, str) else getattr(bank, "name", str(bank))
        out.append((str(name).lower(), bytes(digest)))
    return tuple(out)


def _enum_value(v: Any) -> str:
    if isinstance(v, str):
        return v.lower()
    for attr in ("value", "name"):
        x = getattr(v, attr, None)
        if isinstance(x, str):
            return x.lower().replace("_", "-")
    return str(v).lower()


_KIND_ALIASES = {"file": DigestKind.FILE, "plain": DigestKind.FILE, "pe": DigestKind.PE,
                 "authenticode": DigestKind.PE, "tboot-module": DigestKind.TBOOT_MODULE,
                 "tboot": DigestKind.TBOOT_MODULE, "module": DigestKind.TBOOT_MODULE}
_COMPONENT_ALIASES = {"hypervisor": Component.HYPERVISOR, "xen": Component.HYPERVISOR,
                      "kernel": Component.KERNEL, "initrd": Component.INITRD,
                      "cmdline": Component.CMDLINE, "hypervisor-cmdline": Component.HYPERVISOR_CMDLINE}


def measured(m: Any, component: Component | str | None = None,
             kind: DigestKind | str | None = None) -> MeasuredComponent:
    """Adapt a ``tboot_py.measure.Measurement`` (or anything with ``digests`` and
    ``cmdline``). ``component``/``kind`` default to what the measurement says about itself
    (its ``component``/``kind``/``method`` attributes); if it does not say, raise PolicyError.
    """
    comp = _resolve(component, m, ("component", "kind", "role"), _COMPONENT_ALIASES, "component")
    dkind = _resolve(kind, m, ("method", "digest_kind", "hash_kind", "kind"), _KIND_ALIASES, "kind")
    cmd = getattr(m, "cmdline", None)
    name = getattr(m, "name", None)
    return MeasuredComponent(component=comp, kind=dkind, digests=_digest_pairs(m.digests),
                             cmdline=cmd if isinstance(cmd, str) else None,
                             name=str(name) if name is not None else None)


def _resolve(given: Any, m: Any, attrs: tuple[str, ...], table: Mapping[str, Any], what: str) -> Any:
    if given is not None:
        key = _enum_value(given)
        if key not in table:
            raise PolicyError(f"unknown {what} {given!r}")
        return table[key]
    for attr in attrs:
        if hasattr(m, attr):
            key = _enum_value(getattr(m, attr))
            if key in table:
                return table[key]
    raise PolicyError(f"cannot tell the {what} of measurement {getattr(m, 'name', m)!r}; pass {what}=")


def firmware_events(events: Iterable[Any]) -> tuple[FirmwareEvent, ...]:
    """Adapt ``tboot_py.eventlog`` events (``pcr``, ``event_type``, ``digests``, ``data``)."""
    out = []
    for e in events:
        et = getattr(e, "event_type", None)
        et_int = int(et) if et is not None else -1
        data = getattr(e, "data", b"")
        raw = data if isinstance(data, bytes | bytearray) else getattr(data, "raw", b"")
        out.append(FirmwareEvent(pcr=int(e.pcr), event_type=et_int, digests=_digest_pairs(e.digests),
                                 data=bytes(raw), seq=getattr(e, "seq", None)))
    return tuple(out)
