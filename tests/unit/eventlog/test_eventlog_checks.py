"""Quirks, digest checks, diff and CEL import/export."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import struct
from pathlib import Path

import pytest
from conftest import CORPUS

from tboot_py.algorithms import SHA1, SHA256
from tboot_py.errors import ParseError
from tboot_py.eventlog import NewEvent, encode_log, parse_log, read_log, replay
from tboot_py.eventlog.cel import from_cel, to_cel
from tboot_py.eventlog.checks import DigestStatus, check_digests, diff, mismatched_events
from tboot_py.eventlog.quirks import REGISTRY, load_pcr_values, replay_against
from tboot_py.tpm.fake import FakeTPM

BANKS = (SHA1, SHA256)


def d(data: bytes) -> dict[str, bytes]:
    return {b.name: hashlib.new(b.hashlib_name, data).digest() for b in BANKS}


def test_missing_exit_boot_services_quirk_applied_only_when_it_matches() -> None:
    tpm = FakeTPM(BANKS)
    events = [NewEvent(5, 0x80000007, d(b"Calling EFI Application"), b"Calling EFI Application")]
    for ev in events:
        tpm.extend(ev.pcr, ev.digests)
    # The firmware extended ExitBootServices into PCR 5 without logging it.
    for s in (b"Exit Boot Services Invocation", b"Exit Boot Services Returned with Success"):
        tpm.extend(5, d(s))
    log = parse_log(encode_log(events, BANKS))
    expected = tpm.read_pcrs([5])
    assert replay(log)["sha256"][5] != expected["sha256"][5]
    rep = replay_against(log, expected)
    assert rep.ok and rep.quirks_applied == ("missing-exit-boot-services",)
    assert all(r.quirk == "missing-exit-boot-services" for r in rep.results)
    assert not replay_against(log, expected, quirks=()).ok
    # A value the quirk cannot explain stays a mismatch and names the events of that PCR.
    bad = {"sha256": {5: b"\x01" * 32}}
    rep = replay_against(log, bad)
    assert not rep.ok and rep.quirks_applied == ()
    (m,) = rep.mismatches
    assert (m.bank, m.pcr, m.expected) == ("sha256", 5, b"\x01" * 32)
    assert [e.event_type_name for e in m.events] == ["EV_EFI_ACTION"]


@pytest.mark.corpus
def test_locality_quirk_on_a_real_log() -> None:
    # tpm2_eventlog 5.4 ignores StartupLocality; our replay honours it. Against the values a
    # replay WITHOUT the locality would give, the "startup-locality-not-applied" quirk explains it.
    log = read_log(CORPUS / "logs" / "keylime__create-mb-policy_binary_bios_measurements.bin")
    ours = replay(log)
    zero_start = {}
    for bank, regs in ours.items():
        size = len(regs[0])
        v = b"\0" * size
        for e in log.events:
            if e.extends and e.pcr == 0:
                v = hashlib.new(bank, v + (e.digest(bank) or b"")).digest()
        zero_start[bank] = {0: v}
    assert zero_start["sha256"][0] != ours["sha256"][0]
    rep = replay_against(log, zero_start)
    assert rep.ok and rep.quirks_applied == ("startup-locality-not-applied",)
    assert replay_against(log, {b: {0: r[0]} for b, r in ours.items()}).quirks_applied == ()


def test_registry_names() -> None:
    assert set(REGISTRY) >= {"missing-exit-boot-services", "startup-locality-3-unlogged",
                             "startup-locality-not-applied", "drtm-reset-unlogged"}


def test_replay_against_reports_unexplained_and_uncompared_banks() -> None:
    log = parse_log(encode_log([NewEvent(8, 0xD, d(b"x"), b"x")], BANKS))
    exp = {"sha256": {8: replay(log)["sha256"][8], 10: b"\x05" * 32, 11: b"\0" * 32}, "sha384": {8: b"\0" * 48}}
    rep = replay_against(log, exp)
    assert rep.ok and rep.unexplained == (("sha256", 10),) and rep.banks_not_compared == ("sha384",)
    assert not replay_against(log, {"sha384": {8: b"\0" * 48}}).ok  # nothing compared: not ok


def test_load_pcr_values_shapes() -> None:
    a = load_pcr_values({"sha1": {"0": "00" * 20}})
    b = load_pcr_values({"pcrs": {"sha1": {"0": "0x" + "00" * 20}}})
    assert a == b == {"sha1": {0: b"\0" * 20}}
    from tboot_py.errors import InputError

    for bad in ([], {"sha1": {"0": "00"}}, {"md5": {}}, {"sha1": {"x": "00" * 20}}, {"sha1": "00"}):
        with pytest.raises(InputError):
            load_pcr_values(bad)


def _warned_events(stem: str) -> set[int]:
    err = CORPUS / "expected" / f"{stem}.tpm2_eventlog.err"
    return {int(x) for x in re.findall(r"Event (\d+)'s digest does not match", err.read_text())}


@pytest.mark.corpus
def test_digest_checks_agree_with_tpm2_eventlog_warnings() -> None:
    # tpm2_eventlog checks strings and variables; its WARN lines must be exactly our non-authority
    # mismatches (authority events: some shim and firmware versions hash other bytes; we flag
    # them too, since their decoded certificate is then not what was extended).
    with (CORPUS / "MANIFEST.tsv").open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    warned_logs = 0
    for row in rows:
        stem = Path(row["file"]).stem
        if not row["tpm2_eventlog_5_4"].startswith("OK"):
            continue
        log = read_log(CORPUS / row["file"])
        ours = {c.seq for c in mismatched_events(log) if c.event_type != "EV_EFI_VARIABLE_AUTHORITY"}
        assert ours == _warned_events(stem), stem
        warned_logs += bool(ours)
    assert warned_logs == 3


def test_check_statuses() -> None:
    good = NewEvent(4, 4, d(b"\0" * 4), b"\0" * 4)
    bad = NewEvent(5, 0x80000007, d(b"something else"), b"Exit Boot Services Invocation")
    tp = NewEvent(9, 0xD, d(b"kernel bytes"), b'{"tboot-py":1,"component":"kernel","kind":"pe"}')
    checks = check_digests(parse_log(encode_log([good, bad, tp], BANKS)))
    assert [c.status for c in checks] == [DigestStatus.NOT_CHECKABLE, DigestStatus.OK, DigestStatus.MISMATCH,
                                          DigestStatus.NOT_CHECKABLE]


def test_diff_names_first_divergence() -> None:
    evs = [NewEvent(4, 0xD, d(bytes([i])), bytes([i])) for i in range(5)]
    a = parse_log(encode_log(evs, BANKS))
    assert diff(a, a).equal
    changed = [*evs[:3], NewEvent(4, 0xD, d(b"evil"), bytes([3])), evs[4]]
    r = diff(a, parse_log(encode_log(changed, BANKS)))
    assert r.index == 4 and r.a is not None and r.a.seq == 4 and "sha1 digest" in r.reason
    r = diff(a, parse_log(encode_log(evs[:3], BANKS)))
    assert r.index == 4 and "only the first log" in r.reason
    only256 = [NewEvent(e.pcr, e.event_type, {"sha256": e.digests["sha256"]}, e.data) for e in evs]
    r = diff(a, parse_log(encode_log(only256, (SHA256,))))
    assert r.index == 0 and "banks" in r.reason


@pytest.mark.corpus
@pytest.mark.parametrize("stem", ["secboot__eventlog1_qemu_ovmf_sb", "go-attestation__linux_tpm12",
                                  "python3-uefi-eventlog__lenovo_thinkpad_p51"])
def test_cel_round_trip(stem: str) -> None:
    log = read_log(CORPUS / "logs" / f"{stem}.bin")
    cel = to_cel(log)
    assert cel[1]["recnum"] == 1 and cel[1]["content_type"] == "pcclient_std"
    back = from_cel(json.dumps(cel))
    assert back == log


def test_cel_import_rejects_bad_documents() -> None:
    good = to_cel(parse_log(encode_log([NewEvent(8, 0xD, d(b"x"), b"x")], BANKS)))
    cases: list[object] = [[], {}, "x", [1], [{**good[0], "content_type": "ima_template"}],
                           [good[0], {**good[1], "pcr": -1}], [good[0], {**good[1], "recnum": 7}]]
    short = json.loads(json.dumps(good))
    short[1]["digests"][0]["digest"] = "00"
    cases.append(short)
    b64 = json.loads(json.dumps(good))
    b64[1]["content"]["event_data"] = "!!"
    cases.append(b64)
    for c in cases:
        with pytest.raises(ParseError):
            from_cel(json.dumps(c))
    with pytest.raises(ParseError):
        from_cel(b"{not json")
    with pytest.raises(ParseError):
        from_cel("[" * 100000 + "]" * 100000)


def test_header_only_sha1_digest_of_header_must_be_zero() -> None:
    hdr = bytearray(encode_log([], BANKS))
    hdr[8] = 1
    with pytest.raises(ParseError):
        parse_log(bytes(hdr))
    assert struct.unpack_from("<I", hdr, 4)[0] == 3


def test_locality3_and_drtm_reset_quirks() -> None:
    log = parse_log(encode_log([NewEvent(0, 8, d(b"crtm"), b"v"), NewEvent(17, 0x80000001, d(b"x"), b"x")], BANKS))
    loc3 = FakeTPM(BANKS, locality=3)
    loc3.extend(0, d(b"crtm"))
    rep = replay_against(log, {"sha256": loc3.read_pcrs([0])["sha256"]})
    assert rep.ok and rep.quirks_applied == ("startup-locality-3-unlogged",)
    # PCR 17 reset to zero by a launch the log does not record.
    v = hashlib.sha256(b"\0" * 32 + d(b"x")["sha256"]).digest()
    rep = replay_against(log, {"sha256": {17: v}})
    assert rep.ok and rep.quirks_applied == ("drtm-reset-unlogged",)
    assert not replay_against(log, {"sha256": {17: v}}, quirks=["startup-locality-3-unlogged"]).ok
