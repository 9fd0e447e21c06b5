"""IMA measurement lists: ASCII lines written by real kernels (from keylime's public test
data; their template digests are the oracle) and the same entries packed into the kernel's
binary layout here."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest

from tboot_py.errors import ParseError
from tboot_py.eventlog.ima import ImaEvent, parse_ima, replay_ima, template_hash_ok

# Lines from keylime test/keylime-ima (Apache-2.0): real kernel output, trailing space included.
REAL = (Path(__file__).parent / "data" / "ima_ascii_runtime_measurements").read_text()


def pack_binary(e: ImaEvent) -> bytes:
    """The kernel's binary_runtime_measurements record (ima_fs.c) for a parsed entry."""
    name = e.template_name.encode()
    out = struct.pack("<I", e.pcr) + e.template_hash + struct.pack("<I", len(name)) + name
    if e.template_name == "ima":
        fname = e.fields[1][1]
        return out + e.fields[0][1] + struct.pack("<I", len(fname)) + fname
    data = b"".join(struct.pack("<I", len(v)) + v for _, v in e.fields)
    return out + struct.pack("<I", len(data)) + data


def test_real_ascii_entries_and_template_digests() -> None:
    log = parse_ima(REAL)
    assert log.ascii and [e.template_name for e in log.events] == \
        ["ima-sig", "ima-sig", "ima-sig", "ima-buf", "ima", "ima-ng", "ima-ng"]
    assert all(template_hash_ok(e) for e in log.events)
    e0 = log.events[0]
    assert e0.file_name == "/usr/bin/dd" and e0.file_hash_alg == "sha256" and e0.signature is not None
    assert e0.signature[:2] == bytes.fromhex("0302")
    assert log.events[2].signature == b""
    assert log.events[3].buf is not None and log.events[3].buf.startswith(b"name=TEST;")
    assert log.events[4].file_hash == bytes.fromhex("6f66d1d8e2fffcc12dfcb78c04b81fe5b8bbae4e")


def test_binary_parse_matches_ascii_and_replay() -> None:
    ascii_log = parse_ima(REAL)
    raw = b"".join(pack_binary(e) for e in ascii_log.events)
    bin_log = parse_ima(raw)
    assert not bin_log.ascii
    for a, b in zip(ascii_log.events, bin_log.events, strict=True):
        assert (a.pcr, a.template_hash, a.template_name) == (b.pcr, b.template_hash, b.template_name)
        assert a.fields == b.fields
        assert template_hash_ok(b)
    # SHA-1 bank: fold the listed template digests (independent computation here).
    v = b"\0" * 20
    for e in ascii_log.events:
        v = hashlib.sha1(v + e.template_hash).digest()
    assert replay_ima(bin_log, ["sha1"]) == {"sha1": {10: v}}


def test_violation_extends_ff() -> None:
    line = "10 " + "00" * 20 + " ima-ng sha256:" + "00" * 32 + " /x\n"
    log = parse_ima(line)
    assert log.events[0].is_violation
    r = replay_ima(log, ["sha1", "sha256"])
    assert r["sha1"][10] == hashlib.sha1(b"\0" * 20 + b"\xff" * 20).digest()
    assert r["sha256"][10] == hashlib.sha256(b"\0" * 32 + b"\xff" * 32).digest()


@pytest.mark.parametrize("bad", [
    b"", "10 zz ima-ng sha256:00 /x", "10 " + "00" * 20 + " weird a b", "x",
    struct.pack("<I20sI", 10, b"\0" * 20, 0xFFFFFFFF),
    struct.pack("<I20sI", 10, b"\0" * 20, 6) + b"ima-ng" + struct.pack("<I", 0xFFFFFFF0),
    struct.pack("<I20sI", 10, b"\0" * 20, 6) + b"ima-ng" + struct.pack("<II", 8, 100) + b"\0" * 4,
])
def test_bad_lists_raise_parse_error(bad: bytes | str) -> None:
    with pytest.raises(ParseError):
        parse_ima(bad)


def test_ima_modsig_ascii_line() -> None:
    # ima-modsig (Documentation/security/IMA-templates.rst): d-ng|n-ng|sig|d-modsig|modsig. The
    # kernel prints d-modsig like d-ng, "<algo>:<hex>", and stores it as "<algo>:\0<digest>".
    fd, md = hashlib.sha256(b"module").digest(), hashlib.sha256(b"module without sig").digest()
    sig, modsig = bytes.fromhex("030204aabbccdd"), bytes.fromhex("3082000102")
    fields = [b"sha256:\0" + fd, b"/lib/modules/a b.ko\0", sig, b"sha256:\0" + md, modsig]
    th = hashlib.sha1(b"".join(struct.pack("<I", len(v)) + v for v in fields)).digest()
    line = f"10 {th.hex()} ima-modsig sha256:{fd.hex()} /lib/modules/a b.ko {sig.hex()} sha256:{md.hex()} " \
        f"{modsig.hex()}\n"
    e = parse_ima(line).events[0]
    assert [v for _, v in e.fields] == fields
    assert e.file_name == "/lib/modules/a b.ko" and e.signature == sig
    assert template_hash_ok(e)
    # Without an appended signature the last three fields are empty (a space each).
    fields2 = [b"sha256:\0" + fd, b"/x\0", b"", b"", b""]
    th2 = hashlib.sha1(b"".join(struct.pack("<I", len(v)) + v for v in fields2)).digest()
    e2 = parse_ima(f"10 {th2.hex()} ima-modsig sha256:{fd.hex()} /x   \n").events[0]
    assert [v for _, v in e2.fields] == fields2 and template_hash_ok(e2)
    assert parse_ima(pack_binary(e)).events[0].fields == e.fields
