"""Hypothesis: write-then-parse is the identity; hostile bytes raise only ParseError."""

from __future__ import annotations

import contextlib
import hashlib
import struct
import tracemalloc

import pytest
from conftest import corpus_logs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tboot_py.algorithms import SHA1, SHA256, SHA384, SHA512, HashAlg
from tboot_py.errors import ParseError
from tboot_py.eventlog import NewEvent, encode_log, parse_log, replay
from tboot_py.eventlog.cel import from_cel, to_cel
from tboot_py.eventlog.checks import check_digests
from tboot_py.eventlog.decode import decode_event
from tboot_py.eventlog.state import boot_state

SEEDS = [p.read_bytes() for p in corpus_logs()[:12]]
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

banks_st = st.lists(st.sampled_from([SHA1, SHA256, SHA384, SHA512]), min_size=1, max_size=4, unique=True)


@st.composite
def logs(draw: st.DrawFn) -> tuple[tuple[HashAlg, ...], list[NewEvent]]:
    banks = tuple(draw(banks_st))
    n = draw(st.integers(0, 12))
    events = []
    for _ in range(n):
        data = draw(st.binary(max_size=80))
        events.append(NewEvent(
            draw(st.integers(0, 23)),
            draw(st.integers(0, 0xFFFFFFFF)),
            {b.name: draw(st.binary(min_size=b.size, max_size=b.size)) for b in banks},
            data,
        ))
    return banks, events


@SETTINGS
@given(logs())
def test_write_then_parse_is_identity(case: tuple[tuple[HashAlg, ...], list[NewEvent]]) -> None:
    banks, events = case
    raw = encode_log(events, banks)
    log = parse_log(raw)
    assert log.spec_id is not None and log.spec_id.algorithms == tuple((b.alg_id, b.size) for b in banks)
    assert len(log.events) == len(events) + 1
    for ev, got in zip(events, log.events[1:], strict=True):
        assert (got.pcr, got.event_type, got.data) == (ev.pcr, ev.event_type, ev.data)
        assert dict(got.digests) == {b.alg_id: ev.digests[b.name] for b in banks}
    assert from_cel(__import__("json").dumps(to_cel(log))) == log


def _exercise(data: bytes) -> None:
    try:
        log = parse_log(data)
    except ParseError as e:
        assert 0 <= e.offset <= max(len(data), 1) + 64
        return
    replay(log)
    boot_state(log)
    check_digests(log)
    for e in log.events:
        decode_event(e)


@SETTINGS
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_parse_error(data: bytes) -> None:
    _exercise(data)


@pytest.mark.corpus
@SETTINGS
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=8),
       st.integers(0, 1 << 20))
def test_mutated_real_logs_raise_only_parse_error(seed: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    buf = bytearray(seed)
    for pos, val in flips:
        buf[pos % len(buf)] = val
    _exercise(bytes(buf[: max(1, len(buf) - cut % 64)]))


@SETTINGS
@given(st.binary(max_size=400))
def test_random_cel_raises_only_parse_error(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        from_cel(data)


def test_claimed_4gib_event_fails_at_once_without_allocating() -> None:
    header = encode_log([], (SHA256,))
    rec = struct.pack("<III", 8, 0xD, 1) + struct.pack("<H", 0x000B) + hashlib.sha256(b"").digest() \
        + struct.pack("<I", 0xFFFFFFFF) + b"\0" * 16
    sha1_rec = struct.pack("<II20sI", 0, 8, b"\0" * 20, 0xFFFFFFFF)
    for data in (header + rec, sha1_rec):
        tracemalloc.start()
        try:
            parse_log(data)
        except ParseError as e:
            assert "exceeds" in e.message
        else:
            raise AssertionError("a 4 GiB event must not parse")
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        assert peak < 1 << 20
