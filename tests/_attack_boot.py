"""A measured boot on a real swtpm, for attacks on the appraisal core.

``Boot.make(tpm)`` extends a firmware boot the way UEFI firmware does (PFP 10.4.4): a
separator on each of PCR 0-7, Secure Boot configuration (SecureBoot, PK, KEK, db, dbx) in
PCR 7 before its separator, an image authority after it, an EFI application in PCR 4, the
ExitBootServices actions in PCR 5, then tboot-py's own records (kernel, initrd, command
line) in PCR 9 through the measured-domain builder. ``quote()`` signs the PCRs with a real
AK. Attacks edit the logs of the bundle (the quote stays as the TPM signed it), or extend
more after boot, as root on the host could.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tboot_py.eventlog import NewEvent, encode_log, parse_log
from tboot_py.eventlog import model as m
from tboot_py.eventlog.efi import EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE
from tboot_py.tpm.evidence import EventLogBlob, Evidence

X509_GUID = uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")
SHA256_GUID = uuid.UUID("c1c41626-504c-4092-aca9-41f936934328")
OWNER = uuid.UUID("77fa9abd-0359-4d32-bd60-28f4e78f784b")
SEPARATOR = b"\x00\x00\x00\x00"
PCRS = list(range(10))
EBS = (b"Exit Boot Services Invocation", b"Exit Boot Services Returned with Success")


def cert(cn: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    c = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
         .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=3650))
         .sign(key, hashes.SHA256()))
    return c.public_bytes(serialization.Encoding.DER)


def variable(guid: uuid.UUID, name: str, value: bytes) -> bytes:
    """UEFI_VARIABLE_DATA (PFP 10.2.6)."""
    n = name.encode("utf-16-le")
    return guid.bytes_le + struct.pack("<QQ", len(n) // 2, len(value)) + n + value


def signature_list(kind: uuid.UUID, entries: Sequence[bytes]) -> bytes:
    size = 16 + max(len(e) for e in entries)
    body = b"".join(OWNER.bytes_le + e.ljust(size - 16, b"\0") for e in entries)
    return kind.bytes_le + struct.pack("<III", 28 + len(body), 0, size) + body


def x509_fingerprint(der: bytes) -> str:
    return f"x509:{hashlib.sha256(der).hexdigest()}"


@dataclass
class Boot:
    """The firmware events and tboot-py records extended into the TPM, and their logs."""

    banks: tuple[object, ...]
    firmware: list[NewEvent]
    tboot_py: bytes
    db_cert: bytes
    authority: bytes
    files: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def make(cls, tpm: object, tmp: Path, secure_boot: bool = True) -> Boot:
        from tboot_py.launch.builder import Artifact, extend_and_log

        banks = tpm.banks()  # type: ignore[attr-defined]
        db_cert, kek_cert, pk_cert = cert("db signer"), cert("KEK"), cert("PK")
        events: list[tuple[int, int, bytes]] = [
            (0, m.EV_S_CRTM_VERSION, "1.0".encode("utf-16-le") + b"\0\0"),
            (7, m.EV_EFI_VARIABLE_DRIVER_CONFIG, variable(EFI_GLOBAL_VARIABLE, "SecureBoot",
                                                          b"\x01" if secure_boot else b"\x00")),
            (7, m.EV_EFI_VARIABLE_DRIVER_CONFIG, variable(EFI_GLOBAL_VARIABLE, "PK",
                                                          signature_list(X509_GUID, [pk_cert]))),
            (7, m.EV_EFI_VARIABLE_DRIVER_CONFIG, variable(EFI_GLOBAL_VARIABLE, "KEK",
                                                          signature_list(X509_GUID, [kek_cert]))),
            (7, m.EV_EFI_VARIABLE_DRIVER_CONFIG, variable(EFI_IMAGE_SECURITY_DATABASE, "db",
                                                          signature_list(X509_GUID, [db_cert]))),
            (7, m.EV_EFI_VARIABLE_DRIVER_CONFIG, variable(EFI_IMAGE_SECURITY_DATABASE, "dbx",
                                                          signature_list(SHA256_GUID, [b"\x11" * 32]))),
            *[(p, m.EV_SEPARATOR, SEPARATOR) for p in range(8)],
            (4, m.EV_EFI_ACTION, b"Calling EFI Application from Boot Option"),
            (7, m.EV_EFI_VARIABLE_AUTHORITY, variable(EFI_IMAGE_SECURITY_DATABASE, "db", OWNER.bytes_le + db_cert)),
            (5, m.EV_EFI_ACTION, EBS[0]),
            (5, m.EV_EFI_ACTION, EBS[1]),
        ]
        fw: list[NewEvent] = []
        for pcr, etype, data in events:
            digests = {b.name: b.digest(data) for b in banks}
            tpm.extend(pcr, digests)  # type: ignore[attr-defined]
            fw.append(NewEvent(pcr, etype, digests, data))
        files = {"kernel": tmp / "vmlinuz", "initrd": tmp / "initrd.img"}
        files["kernel"].write_bytes(b"approved kernel " * 4096)
        files["initrd"].write_bytes(b"approved initrd " * 2048)
        log = tmp / "tboot-py.log"
        extend_and_log(tpm, log, [Artifact("kernel", files["kernel"], "vmlinuz"),  # type: ignore[arg-type]
                                  Artifact("initrd", files["initrd"], "initrd.img"),
                                  Artifact("cmdline", None, "cmdline", cmdline="console=hvc0 ro")])
        return cls(tuple(banks), fw, log.read_bytes(), db_cert, OWNER.bytes_le + db_cert, files)

    def firmware_log(self, events: Sequence[NewEvent] | None = None) -> bytes:
        return encode_log(list(self.firmware if events is None else events), self.banks)  # type: ignore[arg-type]


def quote(tpm: object, state: Path, logs: Sequence[tuple[str, bytes]], nonce: bytes | None = None,
          banks: Sequence[str] | None = None, pcrs: Sequence[int] = PCRS) -> tuple[Evidence, bytes, object]:
    """A real quote over ``pcrs`` (PCR 0-9; every active bank, or ``banks``) with a fresh nonce."""
    from tboot_py.attest.keys import load_or_create_ak
    from tboot_py.attest.quote import collect_evidence
    from tboot_py.tpm.wire import PCRSelection
    from tboot_py.verify.quote import TrustedAK

    names = list(banks) if banks is not None else [b.name for b in tpm.banks()]  # type: ignore[attr-defined]
    sel = PCRSelection.of([(b, list(pcrs)) for b in names])
    ak = load_or_create_ak(tpm, state)  # type: ignore[arg-type]
    n = os.urandom(32) if nonce is None else nonce
    ev = collect_evidence(tpm, ak, sel, n, [EventLogBlob(name, data) for name, data in logs])  # type: ignore[arg-type]
    return ev, n, TrustedAK(ak.public, ak.qualified_name)


def with_logs(ev: Evidence, logs: Sequence[tuple[str, bytes]]) -> Evidence:
    """The same signed quote with other logs: what an attacker who edits files can send."""
    return replace(ev, event_logs=tuple(EventLogBlob(n, d) for n, d in logs))


def edit(log: bytes, seq: int, *, event_type: int | None = None, data: bytes | None = None,
         pcr_banks: Sequence[object] | None = None) -> bytes:
    """Re-encode ``log`` with record ``seq`` retyped or its data replaced (digests kept)."""
    parsed = parse_log(log)
    out: list[NewEvent] = []
    for e in parsed.events[1:]:
        t, d = e.event_type, e.data
        if e.seq == seq:
            t = event_type if event_type is not None else t
            d = data if data is not None else d
        out.append(NewEvent(e.pcr, t, {m.bank_name(a): dg for a, dg in e.digests}, d))
    from tboot_py import algorithms

    banks = [algorithms.by_id(a) for a in parsed.algorithms]
    return encode_log(out, banks)  # type: ignore[arg-type]


def sha1_format(logs: Sequence[bytes]) -> bytes:
    """One TPM 1.2-style log (PFP 10.4.2 TCG_PCClientPCREvent records, SHA-1 only) of the
    records of ``logs``, as an attacker would rewrite them."""
    out = bytearray()
    for raw in logs:
        for e in parse_log(raw).events[1:]:
            d = e.digest("sha1")
            assert d is not None
            out += struct.pack("<II", e.pcr, e.event_type) + d + struct.pack("<I", len(e.data)) + e.data
    return bytes(out)


def policy_text(boot: Boot, *, forbid_authority: bool = False, extra: str = "") -> str:
    from tboot_py.measure import measure

    k = measure(boot.files["kernel"], banks=["sha256"]).digests.as_dict()["sha256"].hex()
    i = measure(boot.files["initrd"], banks=["sha256"]).digests.as_dict()["sha256"].hex()
    auth = x509_fingerprint(boot.db_cert)
    uefi = (f'authorities_forbid = ["{auth}"]' if forbid_authority else f'authorities_allow = ["{auth}"]')
    return f'''version = 1
mode = "continue"
[[rules]]
type = "reference"
component = "kernel"
values = [{{label = "k", digests = {{sha256 = "{k}"}}}}]
[[rules]]
type = "reference"
component = "initrd"
values = [{{label = "i", digests = {{sha256 = "{i}"}}}}]
[[rules]]
type = "reference"
component = "cmdline"
values = [{{label = "c", cmdline = "console=hvc0 ro"}}]
[[rules]]
type = "secure-boot"
enabled = true
[[rules]]
type = "uefi-db"
db_allow = ["{x509_fingerprint(boot.db_cert)}"]
{uefi}
{extra}
'''
