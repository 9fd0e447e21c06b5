"""PCR 0's start value (PFP 10.4.5.3; TPM 2.0 Part 1, 34.3): locality 3 or 4 from a
StartupLocality event, and 4 when the log opens PCR 0 with the H-CRTM event but records
no StartupLocality."""

from __future__ import annotations

import hashlib

from tboot_py import algorithms
from tboot_py.eventlog import NewEvent, encode_log, parse_log, replay
from tboot_py.eventlog import model as m

BANKS = [algorithms.SHA256]


def _extend(start: bytes, *data: bytes) -> bytes:
    v = start
    for d in data:
        v = hashlib.sha256(v + hashlib.sha256(d).digest()).digest()
    return v


def _ev(pcr: int, etype: int, data: bytes) -> NewEvent:
    return NewEvent(pcr, etype, {"sha256": hashlib.sha256(data).digest()}, data)


def test_hcrtm_first_starts_pcr0_at_locality_4() -> None:
    log = parse_log(encode_log([_ev(0, m.EV_EFI_HCRTM_EVENT, b"HCRTM"), _ev(0, m.EV_POST_CODE, b"bios")], BANKS))
    assert replay(log)["sha256"][0] == _extend(b"\0" * 31 + b"\x04", b"HCRTM", b"bios")


def test_without_hcrtm_pcr0_starts_at_zero() -> None:
    log = parse_log(encode_log([_ev(0, m.EV_POST_CODE, b"bios"), _ev(0, m.EV_EFI_HCRTM_EVENT, b"HCRTM")], BANKS))
    assert replay(log)["sha256"][0] == _extend(b"\0" * 32, b"bios", b"HCRTM")


def test_startup_locality_event_wins() -> None:
    loc = NewEvent(0, m.EV_NO_ACTION, {"sha256": b"\0" * 32}, b"StartupLocality\0\x03")
    log = parse_log(encode_log([loc, _ev(0, m.EV_EFI_HCRTM_EVENT, b"HCRTM")], BANKS))
    assert replay(log)["sha256"][0] == _extend(b"\0" * 31 + b"\x03", b"HCRTM")
