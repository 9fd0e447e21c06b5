"""Boot state extracted from a log, for the policy engine.

Everything here is read from event *data*, which is untrusted twice over: the log must be
backed by a verified quote (replay == quoted PCRs), and event data is not what the TPM
extended (the digest is). The Secure Boot configuration (SecureBoot, PK, KEK, db, dbx) is
taken only from records whose data hashes to their digest; for everything else, callers
that need the data to be trustworthy should also consult
:func:`tboot_py.eventlog.checks.check_digests`, which flags events whose data does not hash to
their digest. Fields a log does not show are None or empty: absence is never "enabled".

Sources: PFP 10.4.4 (PCR 7 Secure Boot policy and authority events), 10.4.3 and 3.3.4.5
(PCR 4 boot-manager image digests are the PE Authenticode digests), 10.4.4 and 3.3.4.2
(EV_SEPARATOR ends the pre-OS phase of PCRs 0-7).
"""

from __future__ import annotations

from dataclasses import dataclass

from tboot_py.eventlog import efi
from tboot_py.eventlog import model as m
from tboot_py.eventlog.checks import DigestStatus, check_event
from tboot_py.eventlog.decode import (
    EfiVariableEvent,
    SeparatorData,
    TbootPyEventData,
    TextData,
    decode_event,
)
from tboot_py.eventlog.model import Event, EventLog, bank_name

# Linux EFI stub: the initrd is measured into PCR 9 as EV_EVENT_TAG with this tag
# (drivers/firmware/efi/libstub, INITRD_EVENT_TAG_ID); the kernel command line in PCR 12
# (systemd-boot / systemd-stub) is a UTF-16 EV_IPL.
LINUX_INITRD_TAG = 0x8F3B22EC


@dataclass(frozen=True, slots=True)
class Authority:
    """An EV_EFI_VARIABLE_AUTHORITY event: which database entry verified an image."""

    seq: int
    variable: str  # db, Shim, MokList, SbatLevel...
    owner: str | None
    subject: str | None
    issuer: str | None
    sha256: str | None  # certificate fingerprint, or digest of the raw data when not a cert


@dataclass(frozen=True, slots=True)
class LoadedImage:
    """An EFI image measured by the firmware (or shim) into PCR 2 or 4."""

    seq: int
    pcr: int
    event_type: str
    #: ``(bank name, hex digest)``: for PE images this is the Authenticode digest (PFP 3.3.4.5).
    digests: tuple[tuple[str, str], ...]
    device_path: str | None
    length: int | None
    #: Authority events logged since the previous image load (PFP 10.4.4: firmware logs an
    #: authority only the first time it verifies an image, so a later image verified by the
    #: same certificate has none here).
    authorities: tuple[Authority, ...]

    def digest(self, bank: str) -> str | None:
        for b, d in self.digests:
            if b == bank:
                return d
        return None


@dataclass(frozen=True, slots=True)
class SignatureDb:
    """Contents of PK, KEK, db or dbx as measured into PCR 7."""

    certificates: tuple[efi.CertInfo, ...]
    hashes: tuple[tuple[str, str], ...]  # (hash type, hex)
    other: int  # entries of types neither X.509 nor hash


@dataclass(frozen=True, slots=True)
class TbootPyMeasurement:
    seq: int
    pcr: int
    component: str
    kind: str
    file: str | None
    cmdline: str | None
    digests: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class BootState:
    #: The SecureBoot variable as measured (None: not measured, which a policy must treat as off).
    secure_boot: bool | None
    pk: SignatureDb | None
    kek: SignatureDb | None
    db: SignatureDb | None
    dbx: SignatureDb | None
    authorities: tuple[Authority, ...]
    #: EFI applications (PCR 4) and drivers (PCR 2), in load order.
    loaded_images: tuple[LoadedImage, ...]
    kernel_cmdlines: tuple[str, ...]
    #: Other PCR 7 / boot variables by name (last value wins), as ``(name, hex data)``.
    variables: tuple[tuple[str, str], ...]
    #: EV_EFI_ACTION strings in order ("Exit Boot Services Invocation", ...).
    efi_actions: tuple[str, ...]
    tboot_py: tuple[TbootPyMeasurement, ...]
    #: For each PCR, the records after its first EV_SEPARATOR.
    after_separator: tuple[tuple[int, tuple[Event, ...]], ...]
    #: PCRs 0-7 whose first separator is the error value FFFFFFFF or non-standard (PFP 10.4.1).
    separator_errors: tuple[int, ...]

    @property
    def boot_applications(self) -> tuple[LoadedImage, ...]:
        """The chain of EV_EFI_BOOT_SERVICES_APPLICATION images in PCR 4 (shim, grub, kernel...)."""
        return tuple(i for i in self.loaded_images if i.pcr == 4
                     and i.event_type == m.event_type_name(m.EV_EFI_BOOT_SERVICES_APPLICATION))

    def events_after_separator(self, pcr: int) -> tuple[Event, ...]:
        for p, evs in self.after_separator:
            if p == pcr:
                return evs
        return ()


def _sigdb(d: EfiVariableEvent) -> SignatureDb:
    certs: list[efi.CertInfo] = []
    hashes: list[tuple[str, str]] = []
    other = 0
    for s in d.signatures or ():
        if s.cert is not None:
            certs.append(s.cert)
        elif s.type in ("sha1", "sha224", "sha256", "sha384", "sha512") or s.type.startswith("x509_sha"):
            hashes.append((s.type, s.data.hex()))
        else:
            other += 1
    return SignatureDb(tuple(certs), tuple(hashes), other)


def _authority(seq: int, d: EfiVariableEvent) -> Authority:
    import hashlib

    a = d.authority
    cert = a.cert if a is not None else None
    owner = str(a.owner) if a is not None and a.owner is not None else None
    if cert is not None:
        return Authority(seq, d.name, owner, cert.subject, cert.issuer, cert.sha256)
    return Authority(seq, d.name, owner, None, None, hashlib.sha256(d.variable.data).hexdigest())


def _hexdigests(e: Event) -> tuple[tuple[str, str], ...]:
    return tuple((bank_name(a), d.hex()) for a, d in e.digests)


#: The Secure Boot configuration variables and their vendor GUIDs (UEFI 2.10, 3.3 and 32.6.1).
_SB_CONFIG_VARS = {
    "SecureBoot": efi.EFI_GLOBAL_VARIABLE, "PK": efi.EFI_GLOBAL_VARIABLE, "KEK": efi.EFI_GLOBAL_VARIABLE,
    "db": efi.EFI_IMAGE_SECURITY_DATABASE, "dbx": efi.EFI_IMAGE_SECURITY_DATABASE,
}


def _is_firmware_sb_config(e: Event, d: EfiVariableEvent, seen_sep: dict[int, list[Event]]) -> bool:
    """Whether ``e`` is the firmware's measurement of a Secure Boot configuration variable:
    EV_EFI_VARIABLE_DRIVER_CONFIG in PCR 7 under the variable's own GUID, before PCR 7's
    EV_SEPARATOR (PFP 3.3.4.8 and 10.4.4). Later look-alikes come from code that ran after
    the firmware and say nothing about the platform's Secure Boot state."""
    return (e.event_type == m.EV_EFI_VARIABLE_DRIVER_CONFIG and e.pcr == 7 and 7 not in seen_sep
            and _SB_CONFIG_VARS.get(d.name) == d.variable.guid)


_IMAGE_TYPES = (m.EV_EFI_BOOT_SERVICES_APPLICATION, m.EV_EFI_BOOT_SERVICES_DRIVER, m.EV_EFI_RUNTIME_SERVICES_DRIVER)


def boot_state(log: EventLog) -> BootState:
    """Extract the boot state (never raises for odd event data; unknown data is skipped)."""
    secure_boot: bool | None = None
    dbs: dict[str, SignatureDb] = {}
    authorities: list[Authority] = []
    pending: list[Authority] = []
    images: list[LoadedImage] = []
    cmdlines: list[str] = []
    variables: dict[str, str] = {}
    actions: list[str] = []
    tpy: list[TbootPyMeasurement] = []
    seen_sep: dict[int, list[Event]] = {}
    sep_errors: list[int] = []
    unverified: set[str] = set()
    for e in log.events:
        if e.pcr in seen_sep and e.extends:
            seen_sep[e.pcr].append(e)
        et = e.event_type
        if et == m.EV_SEPARATOR and e.pcr not in seen_sep and e.extends:
            seen_sep[e.pcr] = []
            sd = decode_event(e)
            if e.pcr <= 7 and (not isinstance(sd, SeparatorData) or sd.is_error):
                sep_errors.append(e.pcr)
            continue
        if et in (m.EV_EFI_VARIABLE_DRIVER_CONFIG, m.EV_EFI_VARIABLE_BOOT, m.EV_EFI_VARIABLE_BOOT2,
                  m.EV_EFI_VARIABLE_AUTHORITY):
            d = decode_event(e)
            if not isinstance(d, EfiVariableEvent):
                continue
            if et == m.EV_EFI_VARIABLE_AUTHORITY:
                a = _authority(e.seq, d)
                authorities.append(a)
                pending.append(a)
            elif _is_firmware_sb_config(e, d, seen_sep):
                if check_event(e).status is not DigestStatus.OK:
                    # PFP 10.4.4: the digest covers the variable; data that does not hash to
                    # it is not what PCR 7 holds, so this variable's state is unknown.
                    unverified.add(d.name)
                elif d.name == "SecureBoot":
                    secure_boot = bool(d.enabled)
                elif d.signatures is not None:
                    dbs[d.name] = _sigdb(d)
                else:
                    dbs[d.name] = SignatureDb((), (), 0) if not d.variable.data else SignatureDb((), (), 1)
            else:
                variables[d.name] = d.variable.data.hex()
        elif et in _IMAGE_TYPES:
            d2 = decode_event(e)
            dp = d2.device_path if isinstance(d2, efi.ImageLoadData) else None
            length = d2.length if isinstance(d2, efi.ImageLoadData) else None
            images.append(LoadedImage(e.seq, e.pcr, e.event_type_name, _hexdigests(e), dp, length, tuple(pending)))
            pending = []
        elif et == m.EV_EFI_ACTION:
            t = decode_event(e)
            if isinstance(t, TextData):
                actions.append(t.text)
        elif et == m.EV_IPL:
            d3 = decode_event(e)
            if isinstance(d3, TbootPyEventData):
                tpy.append(TbootPyMeasurement(e.seq, e.pcr, d3.component, d3.kind, d3.file, d3.cmdline,
                                              _hexdigests(e)))
                if d3.cmdline is not None:
                    cmdlines.append(d3.cmdline)
            elif isinstance(d3, TextData):
                text = d3.text
                if text.startswith("kernel_cmdline: "):  # grub (PCR 8)
                    cmdlines.append(text[len("kernel_cmdline: "):])
                elif e.pcr == 12 and e.data[1:2] == b"\x00":  # systemd-stub UTF-16 command line
                    cmdlines.append(text)
    if "SecureBoot" in unverified:
        secure_boot = None
    for name in unverified:
        dbs.pop(name, None)
    return BootState(
        secure_boot=secure_boot,
        pk=dbs.get("PK"),
        kek=dbs.get("KEK"),
        db=dbs.get("db"),
        dbx=dbs.get("dbx"),
        authorities=tuple(authorities),
        loaded_images=tuple(images),
        kernel_cmdlines=tuple(cmdlines),
        variables=tuple(sorted(variables.items())),
        efi_actions=tuple(actions),
        tboot_py=tuple(tpy),
        after_separator=tuple((p, tuple(v)) for p, v in sorted(seen_sep.items())),
        separator_errors=tuple(sorted(sep_errors)),
    )
