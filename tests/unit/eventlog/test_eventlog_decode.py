"""Event-data decoders and the extracted boot state.

Structures are packed here from the PFP / UEFI layouts; certificates are made with
``cryptography`` for the test, so nothing is checked against tboot-py's own output.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import struct
import uuid

import pytest
from conftest import CORPUS as CORPUS_ROOT
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tboot_py.eventlog import model as m
from tboot_py.eventlog import parse_log, read_log
from tboot_py.eventlog import state as state_mod
from tboot_py.eventlog.decode import (
    EfiVariableEvent,
    RawData,
    SeparatorData,
    SP800155Data,
    StartupLocalityData,
    TaggedEventData,
    TbootPyEventData,
    TextData,
    decode_event,
)
from tboot_py.eventlog.efi import FirmwareBlob, GptData, HandoffTables, ImageLoadData
from tboot_py.eventlog.model import Event
from tboot_py.eventlog.state import boot_state

CORPUS = CORPUS_ROOT / "logs"
GLOBAL = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
SECDB = uuid.UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
X509 = uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")
SHA256_T = uuid.UUID("c1c41626-504c-4092-aca9-41f936934328")
OWNER = uuid.UUID("77fa9abd-0359-4d32-bd60-28f4e78f784b")


def ev(etype: int, data: bytes, pcr: int = 7) -> Event:
    return Event(1, 0, pcr, etype, ((0x0B, hashlib.sha256(data).digest()),), data)


def var(guid: uuid.UUID, name: str, value: bytes) -> bytes:
    n = name.encode("utf-16-le")
    return guid.bytes_le + struct.pack("<QQ", len(name), len(value)) + n + value


def make_cert(cn: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(4660).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def esl(sig_type: uuid.UUID, entries: list[bytes]) -> bytes:
    size = 16 + len(entries[0])
    body = b"".join(OWNER.bytes_le + e for e in entries)
    return sig_type.bytes_le + struct.pack("<III", 28 + len(body), 0, size) + body


def test_secure_boot_and_signature_databases() -> None:
    der = make_cert("Test DB Key")
    d = decode_event(ev(m.EV_EFI_VARIABLE_DRIVER_CONFIG, var(GLOBAL, "SecureBoot", b"\x01")))
    assert isinstance(d, EfiVariableEvent) and d.name == "SecureBoot" and d.enabled is True
    db = var(SECDB, "db", esl(X509, [der]) + esl(SHA256_T, [b"\x11" * 32, b"\x22" * 32]))
    d = decode_event(ev(m.EV_EFI_VARIABLE_DRIVER_CONFIG, db))
    assert isinstance(d, EfiVariableEvent) and d.signatures is not None
    assert [s.type for s in d.signatures] == ["x509", "sha256", "sha256"]
    c = d.signatures[0].cert
    assert c is not None and c.subject == "CN=Test DB Key" and c.serial == "1234"
    assert c.sha256 == hashlib.sha256(der).hexdigest()
    assert d.signatures[2].data == b"\x22" * 32 and d.signatures[2].owner == OWNER


def test_bad_signature_list_is_kept_with_a_note() -> None:
    bad = var(SECDB, "db", X509.bytes_le + struct.pack("<III", 0xFFFFFFF0, 0, 100))
    d = decode_event(ev(m.EV_EFI_VARIABLE_DRIVER_CONFIG, bad))
    assert isinstance(d, EfiVariableEvent) and d.signatures is None and "SignatureListSize" in d.note
    trunc = decode_event(ev(m.EV_EFI_VARIABLE_DRIVER_CONFIG, var(GLOBAL, "SecureBoot", b"\x01")[:-3]))
    assert isinstance(trunc, RawData) and trunc.note


def test_authority_boot_order_and_load_option() -> None:
    der = make_cert("Signer CA")
    d = decode_event(ev(m.EV_EFI_VARIABLE_AUTHORITY, var(SECDB, "db", OWNER.bytes_le + der)))
    assert isinstance(d, EfiVariableEvent) and d.authority is not None and d.authority.cert is not None
    assert d.authority.cert.subject == "CN=Signer CA" and d.authority.owner == OWNER
    d = decode_event(ev(m.EV_EFI_VARIABLE_BOOT, var(GLOBAL, "BootOrder", struct.pack("<3H", 3, 1, 0)), pcr=1))
    assert isinstance(d, EfiVariableEvent) and d.boot_order == (3, 1, 0)
    path = "\\EFI\\BOOT\\BOOTX64.EFI".encode("utf-16-le") + b"\0\0"
    fp = struct.pack("<BBH", 4, 4, 4 + len(path)) + path + b"\x7f\xff\x04\x00"
    opt = struct.pack("<IH", 1, len(fp)) + "disk".encode("utf-16-le") + b"\0\0" + fp + b"xyz"
    d = decode_event(ev(m.EV_EFI_VARIABLE_BOOT, var(GLOBAL, "Boot0001", opt), pcr=1))
    assert isinstance(d, EfiVariableEvent) and d.load_option is not None
    assert d.load_option.description == "disk" and d.load_option.device_path == "\\EFI\\BOOT\\BOOTX64.EFI"
    assert d.load_option.optional_data == b"xyz"


def test_image_load_and_device_path() -> None:
    hd = struct.pack("<IQQ", 1, 0x800, 0x100000) + uuid.UUID(int=5).bytes_le + bytes([2, 2])
    path = "\\EFI\\x.efi".encode("utf-16-le") + b"\0\0"
    dp = (struct.pack("<BBHII", 2, 1, 12, 0x0A0341D0, 0) + struct.pack("<BBHBB", 1, 1, 6, 0, 2)
          + struct.pack("<BBH", 4, 1, 4 + len(hd)) + hd + struct.pack("<BBH", 4, 4, 4 + len(path)) + path
          + b"\x7f\xff\x04\x00")
    data = struct.pack("<QQQQ", 0x1000, 0x2000, 0, len(dp)) + dp
    d = decode_event(ev(m.EV_EFI_BOOT_SERVICES_APPLICATION, data, pcr=4))
    assert isinstance(d, ImageLoadData) and d.location == 0x1000 and d.length == 0x2000
    assert d.device_path == f"PciRoot(0x0)/Pci(0x2,0x0)/HD(1,GPT,{uuid.UUID(int=5)},0x800,0x100000)/\\EFI\\x.efi"
    short = decode_event(ev(m.EV_EFI_BOOT_SERVICES_APPLICATION, data[:20], pcr=4))
    assert isinstance(short, RawData)


def test_blobs_tables_tags_separators_text() -> None:
    b = decode_event(ev(m.EV_EFI_PLATFORM_FIRMWARE_BLOB, struct.pack("<QQ", 0xFFFE0000, 0x20000), pcr=0))
    assert b == FirmwareBlob(0xFFFE0000, 0x20000)
    b2 = decode_event(ev(m.EV_EFI_PLATFORM_FIRMWARE_BLOB2, b"\x07FV_MAIN" + struct.pack("<QQ", 1, 2), pcr=0))
    assert b2 == FirmwareBlob(1, 2, "FV_MAIN")
    g = uuid.UUID(int=9)
    t = decode_event(ev(m.EV_EFI_HANDOFF_TABLES, struct.pack("<Q", 1) + g.bytes_le + struct.pack("<Q", 0xABC), pcr=1))
    assert t == HandoffTables(((g, 0xABC),))
    t2 = decode_event(ev(m.EV_EFI_HANDOFF_TABLES2, b"\x03SMB" + struct.pack("<Q", 0), pcr=1))
    assert t2 == HandoffTables((), "SMB")
    huge = decode_event(ev(m.EV_EFI_HANDOFF_TABLES, struct.pack("<Q", 2**60), pcr=1))
    assert isinstance(huge, RawData)
    tag = decode_event(ev(m.EV_EVENT_TAG, struct.pack("<II", 0x8F3B22EC, 13) + b"Linux initrd\0", pcr=9))
    assert tag == TaggedEventData(0x8F3B22EC, b"Linux initrd\0", "Linux initrd")
    assert decode_event(ev(m.EV_SEPARATOR, b"\xff\xff\xff\xff")) == SeparatorData(0xFFFFFFFF)
    assert isinstance(decode_event(ev(m.EV_SEPARATOR, b"WBCL")), RawData)
    assert decode_event(ev(m.EV_EFI_ACTION, b"Exit Boot Services Invocation", pcr=5)) == \
        TextData("Exit Boot Services Invocation")
    assert decode_event(ev(m.EV_S_CRTM_VERSION, "1.0".encode("utf-16-le") + b"\0\0", pcr=0)) == TextData("1.0")
    assert decode_event(ev(m.EV_POST_CODE, b"ACPI DATA", pcr=0)) == TextData("ACPI DATA")
    assert decode_event(ev(m.EV_IPL, "initrd=\\x console=ttyS0".encode("utf-16-le") + b"\0\0", pcr=12)) == \
        TextData("initrd=\\x console=ttyS0")
    assert decode_event(ev(m.EV_NO_ACTION, b"StartupLocality\x00\x03", pcr=0)) == StartupLocalityData(3)
    assert isinstance(decode_event(ev(0x12345678, b"\x00\x01")), RawData)


def test_gpt_event_from_packed_header() -> None:
    hdr = b"EFI PART" + struct.pack("<IIIIQQQQ", 0x10000, 92, 0, 0, 1, 2, 34, 100) + uuid.UUID(int=7).bytes_le \
        + struct.pack("<QII", 2, 128, 128) + struct.pack("<I", 0)
    assert len(hdr) == 92
    name = "EFI System".encode("utf-16-le").ljust(72, b"\0")
    part = uuid.UUID(int=1).bytes_le + uuid.UUID(int=2).bytes_le + struct.pack("<QQQ", 2048, 4095, 0) + name
    d = decode_event(ev(m.EV_EFI_GPT_EVENT, hdr + struct.pack("<Q", 1) + part, pcr=5))
    assert isinstance(d, GptData) and d.disk_guid == uuid.UUID(int=7)
    assert d.partitions[0].name == "EFI System" and d.partitions[0].first_lba == 2048


def test_tboot_py_event_decoder() -> None:
    data = b'{"tboot-py":1,"component":"kernel","kind":"pe","file":"vmlinuz","cmdline":"ro quiet"}'
    d = decode_event(ev(m.EV_IPL, data, pcr=9))
    assert isinstance(d, TbootPyEventData)
    assert (d.version, d.component, d.kind, d.file, d.cmdline) == (1, "kernel", "pe", "vmlinuz", "ro quiet")
    assert isinstance(decode_event(ev(m.EV_IPL, b'{"component": "x"}', pcr=9)), TextData)
    assert isinstance(decode_event(ev(m.EV_IPL, b"[" * 100000, pcr=9)), RawData | TextData)


@pytest.mark.corpus
def test_sp800_155_from_corpus() -> None:
    log = read_log(CORPUS / "go-tpm-tools__eventlogwithsp800155.bin")
    sp = [d for d in (decode_event(e) for e in log.events) if isinstance(d, SP800155Data)]
    assert len(sp) == 2 and all(s.signature.startswith("SP800-155 Event") for s in sp)


@pytest.mark.corpus
def test_every_corpus_event_decodes_without_raising() -> None:
    for p in sorted(CORPUS.glob("*.bin")):
        for e in read_log(p).events:
            decode_event(e)


@pytest.mark.corpus
def test_boot_state_qemu_ovmf_secure_boot() -> None:
    st = boot_state(read_log(CORPUS / "secboot__eventlog1_qemu_ovmf_sb.bin"))
    assert st.secure_boot is True
    assert st.db is not None and "CN=Test UEFI CA" in [c.subject for c in st.db.certificates]
    assert st.pk is not None and len(st.pk.certificates) == 1
    assert st.dbx is not None and len(st.dbx.hashes) == 1
    apps = st.boot_applications
    assert apps[0].device_path is not None and apps[0].device_path.endswith("\\EFI\\ubuntu\\shimx64.efi")
    assert [a.subject for a in apps[0].authorities] == ["CN=Test UEFI CA"]
    assert "Exit Boot Services Invocation" in st.efi_actions
    assert not st.separator_errors
    assert len(st.events_after_separator(4)) == 3


@pytest.mark.corpus
def test_boot_state_no_secure_boot_and_grub_cmdline() -> None:
    st = boot_state(read_log(CORPUS / "go-tpm-tools__ubuntu-2104-no-secure-boot.bin"))
    assert st.secure_boot is False
    assert any("root=PARTUUID=" in c for c in st.kernel_cmdlines)


def test_boot_state_of_log_without_pcr7_is_unknown() -> None:
    st = boot_state(parse_log(struct.pack("<II20sI", 0, 8, b"\0" * 20, 2) + b"v1"))
    assert st.secure_boot is None and st.db is None and st.loaded_images == ()


def test_boot_state_takes_secure_boot_config_from_firmware_only() -> None:
    # PFP 3.3.4.8 / 10.4.4: firmware measures SecureBoot, PK, KEK (EFI_GLOBAL_VARIABLE) and
    # db, dbx (EFI_IMAGE_SECURITY_DATABASE) into PCR 7 *before* its EV_SEPARATOR. Code that runs
    # later (any boot loader, when Secure Boot is off) can extend PCR 7 with look-alike events;
    # those must not turn Secure Boot "on" or replace the databases.
    def rec(etype: int, data: bytes, pcr: int = 7) -> bytes:
        return struct.pack("<III", pcr, etype, 1) + struct.pack("<H", 0x0B) + hashlib.sha256(data).digest() \
            + struct.pack("<I", len(data)) + data

    spec = b"Spec ID Event03\x00" + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, 1) + struct.pack("<HH", 0x0B, 32) + b"\0"
    real_db = esl(SHA256_T, [hashlib.sha256(b"good").digest()])
    fake_db = esl(SHA256_T, [hashlib.sha256(b"evil").digest()])
    cfg = m.EV_EFI_VARIABLE_DRIVER_CONFIG
    raw = struct.pack("<II20sI", 0, 3, b"\0" * 20, len(spec)) + spec + b"".join([
        rec(cfg, var(GLOBAL, "SecureBoot", b"\x00")),
        rec(cfg, var(SECDB, "db", real_db)),
        rec(cfg, var(OWNER, "db", fake_db)),  # a vendor variable that happens to be called db
        rec(m.EV_SEPARATOR, b"\0" * 4),
        rec(cfg, var(GLOBAL, "SecureBoot", b"\x01")),  # after the separator: not firmware config
        rec(cfg, var(SECDB, "dbx", fake_db)),
    ])
    st = boot_state(parse_log(raw))
    assert st.secure_boot is False
    assert st.db is not None and st.db.hashes == (("sha256", hashlib.sha256(b"good").digest().hex()),)
    assert st.dbx is None


def test_boot_state_ignores_secure_boot_data_that_was_not_extended() -> None:
    # The digest, not the data, is what PCR 7 holds: a log whose SecureBoot data says "on"
    # while its digest is that of "off" replays exactly like the honest log. The data of such
    # a record says nothing, so the state is unknown (None), never "on".
    def rec(etype: int, data: bytes, digest_of: bytes) -> bytes:
        return struct.pack("<III", 7, etype, 1) + struct.pack("<H", 0x0B) + hashlib.sha256(digest_of).digest() \
            + struct.pack("<I", len(data)) + data

    spec = b"Spec ID Event03\x00" + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, 1) + struct.pack("<HH", 0x0B, 32) + b"\0"
    cfg = m.EV_EFI_VARIABLE_DRIVER_CONFIG
    honest_db = var(SECDB, "db", esl(SHA256_T, [hashlib.sha256(b"vendor").digest()]))
    raw = struct.pack("<II20sI", 0, 3, b"\0" * 20, len(spec)) + spec + b"".join([
        rec(cfg, var(GLOBAL, "SecureBoot", b"\x01"), var(GLOBAL, "SecureBoot", b"\x00")),
        rec(cfg, var(SECDB, "db", esl(SHA256_T, [hashlib.sha256(b"evil").digest()])), honest_db),
        rec(cfg, var(SECDB, "dbx", b""), var(SECDB, "dbx", b"")),
    ])
    st = boot_state(parse_log(raw))
    assert st.secure_boot is None
    assert st.db is None
    assert st.dbx == state_mod.SignatureDb((), (), 0)
