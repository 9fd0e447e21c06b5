"""The crypto-agile writer: byte layout, append_events safety, decoding of tboot-py events."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import struct
from pathlib import Path

import pytest

from tboot_py.algorithms import SHA1, SHA256, SHA384
from tboot_py.errors import EventLogAppendError, InputError, ParseError
from tboot_py.eventlog import NewEvent, append_events, encode_event, encode_header, parse_log, replay
from tboot_py.eventlog.decode import TbootPyEventData, decode_event
from tboot_py.tpm.fake import FakeTPM

BANKS = (SHA1, SHA256, SHA384)


def digests(data: bytes) -> dict[str, bytes]:
    return {b.name: hashlib.new(b.hashlib_name, data).digest() for b in BANKS}


def test_header_bytes_follow_pfp_layout() -> None:
    hdr = encode_header((SHA1, SHA256))
    # TCG_PCClientPCREvent: pcr 0, EV_NO_ACTION, zero SHA1 digest, size, then TCG_EfiSpecIDEvent.
    body = (b"Spec ID Event03\x00" + struct.pack("<I", 0) + bytes([0, 2, 0, 2]) + struct.pack("<I", 2)
            + struct.pack("<HHHH", 0x0004, 20, 0x000B, 32) + b"\x00")
    assert hdr == struct.pack("<II", 0, 3) + b"\0" * 20 + struct.pack("<I", len(body)) + body


def test_event_bytes() -> None:
    d = digests(b"k")
    raw = encode_event(NewEvent(9, 0xD, d, b"k"), BANKS)
    want = struct.pack("<III", 9, 0xD, 3) + struct.pack("<H", 4) + d["sha1"] + struct.pack("<H", 0xB) + d["sha256"] \
        + struct.pack("<H", 0xC) + d["sha384"] + struct.pack("<I", 1) + b"k"
    assert raw == want


def test_encode_event_rejects_bad_measurements() -> None:
    d = digests(b"x")
    with pytest.raises(InputError, match="lacks"):
        encode_event(NewEvent(8, 0xD, {"sha1": d["sha1"]}, b""), BANKS)
    with pytest.raises(InputError, match="bytes"):
        encode_event(NewEvent(8, 0xD, {**d, "sha256": b"\0" * 20}, b""), BANKS)
    with pytest.raises(InputError, match="range"):
        encode_event(NewEvent(24, 0xD, d, b""), BANKS)
    with pytest.raises(InputError, match="does not carry"):
        encode_event(NewEvent(8, 0xD, d, b""), (SHA1, SHA256))


def test_append_creates_and_appends_across_runs_matching_a_tpm(tmp_path: Path) -> None:
    log_path = tmp_path / "measure.log"
    tpm = FakeTPM(BANKS)
    for run in range(3):
        evs = []
        for i in range(2):
            data = json.dumps({"tboot-py": 1, "component": f"c{run}{i}", "kind": "file"}).encode()
            d = digests(data)
            evs.append(NewEvent(8 + i, 0xD, d, data))
            tpm.extend(8 + i, d)
        append_events(log_path, evs, BANKS)
    log = parse_log(log_path.read_bytes())
    assert len(log.events) == 7
    assert replay(log) == tpm.read_pcrs([8, 9])
    dec = decode_event(log.events[3])
    assert isinstance(dec, TbootPyEventData) and dec.component == "c10" and dec.kind == "file"
    assert not list(tmp_path.glob(".*.tmp"))


def test_append_refuses_torn_tail(tmp_path: Path) -> None:
    log_path = tmp_path / "l"
    append_events(log_path, [NewEvent(8, 0xD, digests(b"a"), b"a")], BANKS)
    good = log_path.read_bytes()
    log_path.write_bytes(good + encode_event(NewEvent(8, 0xD, digests(b"b"), b"b"), BANKS)[:-3])
    with pytest.raises(ParseError):
        append_events(log_path, [NewEvent(8, 0xD, digests(b"c"), b"c")], BANKS)
    log_path.write_bytes(b"garbage!" * 3)
    with pytest.raises(ParseError):
        append_events(log_path, [NewEvent(8, 0xD, digests(b"c"), b"c")], BANKS)


def test_append_refuses_other_banks_and_sha1_logs(tmp_path: Path) -> None:
    log_path = tmp_path / "l"
    append_events(log_path, [], (SHA1, SHA256))
    with pytest.raises(EventLogAppendError, match="banks"):
        append_events(log_path, [NewEvent(8, 0xD, digests(b"c"), b"c")], BANKS)
    sha1_log = tmp_path / "s"
    sha1_log.write_bytes(struct.pack("<II", 0, 8) + b"\0" * 20 + struct.pack("<I", 0))
    with pytest.raises(EventLogAppendError):
        append_events(sha1_log, [NewEvent(8, 0xD, digests(b"c"), b"c")], BANKS)


def _appender(path: str, worker: int) -> None:
    for i in range(10):
        data = f"w{worker}-{i}".encode()
        append_events(Path(path), [NewEvent(8, 0xD, digests(data), data)], BANKS)


def test_concurrent_appenders_serialise(tmp_path: Path) -> None:
    log_path = tmp_path / "l"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_appender, args=(str(log_path), w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    log = parse_log(log_path.read_bytes())
    datas = sorted(e.data for e in log.events[1:])
    assert datas == sorted(f"w{w}-{i}".encode() for w in range(3) for i in range(10))


def test_sm3_bank_written_parsed_and_replayed(tmp_path: Path) -> None:
    from tboot_py.algorithms import SM3_256

    banks = (SHA256, SM3_256)
    tpm = FakeTPM(banks)
    evs = []
    for i in range(3):
        data = f"sm3-{i}".encode()
        d = {b.name: b.digest(data) for b in banks}
        tpm.extend(10 + i, d)
        evs.append(NewEvent(10 + i, 0xD, d, data))
    append_events(tmp_path / "l", evs, banks)
    log = parse_log((tmp_path / "l").read_bytes())
    assert log.bank_names == ("sha256", "sm3_256")
    assert replay(log) == tpm.read_pcrs([10, 11, 12])
