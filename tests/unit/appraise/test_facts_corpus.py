"""The appraisal's boot-state rules hold on every real log: each still yields its Secure
Boot state, with no ordering finding, and agrees with what `policy from-log` derives."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CORPUS

from tboot_py.appraise import facts
from tboot_py.eventlog import parse_log
from tboot_py.policy.derive import boot_facts as derived_facts
from tboot_py.verify.evidence import VerifiedEvent

pytestmark = pytest.mark.corpus
LOGS = sorted((CORPUS / "logs").glob("*.bin"))


def as_verified(path: Path) -> tuple[facts.BoundEvent, ...]:
    """The log's records as the verifier hands them out after a matching replay (every
    bank of the log quoted)."""
    log = parse_log(path.read_bytes())
    return facts.bind(tuple(VerifiedEvent(path.name, 0, e.seq, e.pcr, e.digests, e.event_type, e.data)
                            for e in log.events if e.extends))


@pytest.mark.parametrize("path", LOGS, ids=[p.stem for p in LOGS])
def test_real_logs_keep_their_boot_state(path: Path) -> None:
    bound = as_verified(path)
    order = facts.ordering(bound)
    got = facts.boot_facts(bound, order)
    want = derived_facts(parse_log(path.read_bytes()))
    if got is None:  # no PCR 7 events at all
        assert want.secure_boot is None
        return
    assert got.findings == (), got.findings
    assert got.secure_boot == want.secure_boot
    assert got.db == want.db and got.dbx == want.dbx
    assert got.authorities == want.authorities
    assert 7 not in order, order


#: go-attestation's test logs that hold PCR 7's separator but none on PCR 0, 4 and 5.
PARTIAL = {"go-attestation__sb_cert", "go-attestation__windows_gcp_shielded_vm"}


@pytest.mark.parametrize("path", LOGS, ids=[p.stem for p in LOGS])
def test_real_logs_have_one_separator_per_firmware_pcr(path: Path) -> None:
    order = facts.ordering(as_verified(path))
    if path.stem in PARTIAL:
        assert set(order) == {0, 4, 5} and all("no separator" in f for fs in order.values() for f in fs)
    else:
        assert order == {}, order


def test_corpus_has_logs() -> None:
    assert len(LOGS) >= 40
    assert sum(1 for p in LOGS if (f := facts.boot_facts(as_verified(p), {})) is not None
               and f.secure_boot is not None) >= 35
