"""Parser and replay on hand-packed logs (layouts packed here from the PFP spec, not by our writer)."""

from __future__ import annotations

import hashlib
import struct

import pytest

from tboot_py.errors import InputError, ParseError
from tboot_py.eventlog import (
    Event,
    IncompleteLogError,
    LogFormat,
    parse_log,
    read_log,
    replay,
)


def sha1_rec(pcr: int, etype: int, digest: bytes, data: bytes) -> bytes:
    return struct.pack("<II", pcr, etype) + digest + struct.pack("<I", len(data)) + data


def spec_id(algs: list[tuple[int, int]], vendor: bytes = b"") -> bytes:
    body = b"Spec ID Event03\x00" + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, len(algs))
    for a, s in algs:
        body += struct.pack("<HH", a, s)
    return body + bytes([len(vendor)]) + vendor


def ev2(pcr: int, etype: int, digests: list[tuple[int, bytes]], data: bytes) -> bytes:
    out = struct.pack("<III", pcr, etype, len(digests))
    for a, d in digests:
        out += struct.pack("<H", a) + d
    return out + struct.pack("<I", len(data)) + data


ALGS = [(0x0004, 20), (0x000B, 32)]


def agile(*records: bytes, algs: list[tuple[int, int]] = ALGS) -> bytes:
    return sha1_rec(0, 3, b"\x00" * 20, spec_id(algs)) + b"".join(records)


def two(data: bytes) -> list[tuple[int, bytes]]:
    return [(0x0004, hashlib.sha1(data).digest()), (0x000B, hashlib.sha256(data).digest())]


def ext(old: bytes, d: bytes, h: str) -> bytes:
    return hashlib.new(h, old + d).digest()


def test_sha1_format_log() -> None:
    d1 = hashlib.sha1(b"crtm").digest()
    raw = sha1_rec(0, 8, d1, b"v1.0") + sha1_rec(4, 4, hashlib.sha1(b"\0" * 4).digest(), b"\0" * 4)
    log = parse_log(raw)
    assert log.format is LogFormat.SHA1 and log.spec_id is None
    assert [(e.seq, e.offset, e.pcr, e.event_type) for e in log.events] == [(0, 0, 0, 8), (1, 36, 4, 4)]
    assert log.events[0].digest("sha1") == d1 and log.events[0].digest("sha256") is None
    assert log.events[1].event_type_name == "EV_SEPARATOR"
    r = replay(log)
    assert r == {"sha1": {0: ext(b"\0" * 20, d1, "sha1"), 4: ext(b"\0" * 20, hashlib.sha1(b"\0" * 4).digest(), "sha1")}}


def test_crypto_agile_log_and_replay() -> None:
    raw = agile(ev2(0, 8, two(b"a"), b"a"), ev2(7, 0x80000001, two(b"b"), b"b"), ev2(0, 4, two(b"c"), b"c"))
    log = parse_log(raw, source="x")
    assert log.format is LogFormat.CRYPTO_AGILE
    assert log.spec_id is not None and log.spec_id.algorithms == tuple(ALGS)
    assert log.bank_names == ("sha1", "sha256")
    assert len(log.events) == 4 and log.events[0].event_type == 3
    assert log.events[2].event_type_name == "EV_EFI_VARIABLE_DRIVER_CONFIG"
    r = replay(log)
    for h, size in (("sha1", 20), ("sha256", 32)):
        p0 = ext(ext(b"\0" * size, hashlib.new(h, b"a").digest(), h), hashlib.new(h, b"c").digest(), h)
        assert r[h] == {0: p0, 7: ext(b"\0" * size, hashlib.new(h, b"b").digest(), h)}
    assert set(replay(log, ["sha256"])) == {"sha256"}


def test_startup_locality_and_no_action_not_extended() -> None:
    loc = ev2(0, 3, [(4, b"\0" * 20), (11, b"\0" * 32)], b"StartupLocality\x00\x03")
    raw = agile(loc, ev2(0, 8, two(b"a"), b"a"))
    r = replay(parse_log(raw))
    assert r["sha256"][0] == ext(b"\0" * 31 + b"\x03", hashlib.sha256(b"a").digest(), "sha256")
    assert set(r["sha256"]) == {0}


def test_startup_locality_without_header() -> None:
    # One SHA1-format EV_NO_ACTION StartupLocality record and nothing else (a real firmware shape).
    log = parse_log(sha1_rec(0, 3, b"\0" * 20, b"StartupLocality\x00\x03"))
    assert log.format is LogFormat.SHA1 and len(log.events) == 1
    assert replay(log) == {"sha1": {}}


def test_drtm_pcrs_start_ff_or_zero() -> None:
    plain = replay(parse_log(agile(ev2(17, 0x80000001, two(b"x"), b"x"))))
    assert plain["sha1"][17] == ext(b"\xff" * 20, hashlib.sha1(b"x").digest(), "sha1")
    txt = replay(parse_log(agile(ev2(17, 0x402, two(b"s"), b"s"), ev2(18, 0x404, two(b"m"), b"m"))))
    assert txt["sha1"][17] == ext(b"\0" * 20, hashlib.sha1(b"s").digest(), "sha1")
    assert txt["sha256"][18] == ext(b"\0" * 32, hashlib.sha256(b"m").digest(), "sha256")


def test_pcr_ffffffff_skipped_and_partial_digests() -> None:
    raw = agile(ev2(0xFFFFFFFF, 6, two(b"w"), b"w"), ev2(11, 0xC, [(11, hashlib.sha256(b"k").digest())], b"k"),
                ev2(1, 1, two(b"p"), b"p"))
    log = parse_log(raw)
    r = replay(log)
    assert set(r["sha1"]) == {1} and set(r["sha256"]) == {1, 11}
    with pytest.raises(IncompleteLogError):
        replay(log, ["sha1"])


def test_unknown_algorithm_and_sm3_sizes_from_header() -> None:
    algs = [(0x000B, 32), (0x1234, 40), (0x0012, 32)]
    rec = ev2(4, 0xD, [(0x000B, b"\1" * 32), (0x1234, b"\2" * 40), (0x0012, b"\3" * 32)], b"ipl")
    log = parse_log(agile(rec, algs=algs))
    e = log.events[1]
    assert e.digest(0x1234) == b"\2" * 40 and e.digest("alg_0x1234") == b"\2" * 40 and e.digest("sm3_256") == b"\3" * 32
    assert "alg_0x1234" in log.bank_names
    assert set(replay(log)) >= {"sha256"}


@pytest.mark.parametrize("cut", [1, 5, 13, 31, 40, 60])
def test_truncation_is_parse_error_with_offset(cut: int) -> None:
    raw = agile(ev2(0, 8, two(b"abc"), b"abc"))
    with pytest.raises(ParseError) as ei:
        parse_log(raw[:-cut])
    assert 0 <= ei.value.offset <= len(raw)


def test_huge_claimed_size_fails_at_once() -> None:
    raw = agile() + struct.pack("<III", 0, 8, 2) + struct.pack("<H", 4) + b"\0" * 20 + struct.pack("<H", 11) \
        + b"\0" * 32 + struct.pack("<I", 0xFFFFFFFF)
    with pytest.raises(ParseError) as ei:
        parse_log(raw)
    assert ei.value.offset == len(raw) - 4
    with pytest.raises(ParseError):
        parse_log(struct.pack("<II20sI", 0, 8, b"\0" * 20, 0xFFFFFFFF))


def test_bad_headers() -> None:
    with pytest.raises(ParseError):
        parse_log(b"")
    with pytest.raises(ParseError, match="not in the Spec ID"):
        parse_log(agile(ev2(0, 8, [(0x000C, b"\0" * 48)], b"")))
    with pytest.raises(ParseError, match="digests"):
        parse_log(agile(ev2(0, 8, two(b"") + two(b""), b"")))
    with pytest.raises(ParseError, match="twice"):
        parse_log(agile(ev2(0, 8, [(4, b"\0" * 20), (4, b"\0" * 20)], b"")))
    with pytest.raises(ParseError, match="digest"):
        parse_log(agile(algs=[(0x000B, 20)]))  # sha256 is 32 bytes
    with pytest.raises(ParseError):
        parse_log(agile(algs=[]))


def test_read_log_errors(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    with pytest.raises(InputError) as ei:
        read_log(tmp_path / "missing.bin")
    assert not isinstance(ei.value, ParseError)
    with pytest.raises(InputError):
        read_log(tmp_path)  # a directory
    (tmp_path / "bad.bin").write_bytes(b"\x01\x02")
    with pytest.raises(ParseError) as pe:
        read_log(tmp_path / "bad.bin")
    assert pe.value.source == str(tmp_path / "bad.bin")


def test_event_is_frozen() -> None:
    e = parse_log(agile(ev2(0, 8, two(b"a"), b"a"))).events[1]
    assert isinstance(e, Event)
    with pytest.raises(AttributeError):
        e.pcr = 3  # type: ignore[misc]


def test_txt_type_outside_drtm_pcrs_is_no_dynamic_launch() -> None:
    # Intel server firmware logs a 0x40E event into PCR 0 during a static boot.
    log = parse_log(agile(ev2(0, 0x40E, two(b""), b""), ev2(17, 0x80000001, two(b"x"), b"x")))
    assert not log.is_drtm
    assert replay(log)["sha1"][17] == ext(b"\xff" * 20, hashlib.sha1(b"x").digest(), "sha1")


def txt_container(records: bytes, slack: int = 16) -> bytes:
    # Intel TXT TPM 1.2 event-log container: signature, reserved, versions, size, offsets.
    hdr_len = 48
    size = hdr_len + len(records) + slack
    hdr = b"TXT Event Container\x00" + b"\0" * 12 + bytes([1, 0, 1, 0]) \
        + struct.pack("<III", size, hdr_len, hdr_len + len(records))
    return hdr + records + b"\xaa" * slack


def test_txt_tpm12_container_drtm_log() -> None:
    hs = hashlib.sha1(b"sinit").digest()
    mle = hashlib.sha1(b"mle").digest()
    raw = txt_container(sha1_rec(17, 0x402, hs, b"") + sha1_rec(18, 0x404, mle, b""))
    log = parse_log(raw)
    assert log.format is LogFormat.SHA1 and log.is_drtm
    assert [(e.offset, e.pcr, e.event_type_name) for e in log.events] == \
        [(48, 17, "EV_TXT_HASH_START"), (80, 18, "EV_TXT_MLE_HASH")]
    # After a locality-4 reset PCRs 17-22 start at zero (PC Client PTP 4.6.2).
    assert replay(log) == {"sha1": {17: ext(b"\0" * 20, hs, "sha1"), 18: ext(b"\0" * 20, mle, "sha1")}}
    bad = bytearray(raw)
    struct.pack_into("<I", bad, 44, 10_000)
    with pytest.raises(ParseError, match="offsets"):
        parse_log(bytes(bad))


def test_txt_container_bounds_hold_for_crypto_agile_records() -> None:
    # Records end at the container's next_event_offset; the bytes after it are unused
    # container space, never events, whatever record layout comes before them.
    rec = ev2(17, 0x402, two(b"sinit"), b"")
    inside = sha1_rec(0, 3, b"\x00" * 20, spec_id(ALGS)) + rec
    raw = bytearray(txt_container(inside, slack=0) + ev2(18, 0x404, two(b"forged"), b""))
    struct.pack_into("<I", raw, 36, len(raw))  # the container size covers the unused space
    log = parse_log(bytes(raw))
    end = 48 + len(inside)
    assert [(e.pcr, e.event_type) for e in log.events] == [(0, 3), (17, 0x402)]
    assert all(e.offset < end for e in log.events)
