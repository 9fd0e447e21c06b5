"""Property: editing an event's data or type in a verifying bundle never yields "allowed",
unless the edit touched only display-only data.

The bundle is a real boot quoted by swtpm (tests/_attack_boot.py) whose every event binds
its data, under a policy that reads every kind of fact (references, Secure Boot, db and
authorities, and an events rule over all data). Display-only means: the event's type (never
extended), or data whose bound content is unchanged (a digest still binds the same bytes).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from _attack_boot import Boot, edit, policy_text, quote, with_logs
from conftest import start_swtpm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tboot_py.appraise import Appraiser, TrustConfig
from tboot_py.eventlog import parse_log
from tboot_py.eventlog.checks import binding
from tboot_py.policy import Policy, load_policy
from tboot_py.tpm import open_tpm
from tboot_py.tpm.evidence import Evidence

pytestmark = pytest.mark.integration


MARKER = b"approved-marker"


@dataclass(frozen=True)
class Bundle:
    evidence: Evidence
    nonce: bytes
    appraiser: Appraiser
    #: Requires bound data the honest boot lacks: only an edit could supply it.
    wanting: Appraiser
    logs: tuple[tuple[str, bytes], ...]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bundle]:
    tmp = tmp_path_factory.mktemp("edits")
    sw = start_swtpm(tmp / "swtpm", tmp_path_factory.mktemp("ca"))
    tpm = open_tpm(sw.tcti)
    try:
        boot = Boot.make(tpm, tmp)
        logs = (("firmware", boot.firmware_log()), ("tboot-py", boot.tboot_py))
        ev, nonce, ak = quote(tpm, tmp / "state", logs)
        (tmp / "p.toml").write_text(policy_text(
            boot, extra='[[rules]]\ntype = "events"\nforbid = [{data_contains = "evil"}]\n'))
        policy: Policy = load_policy(tmp / "p.toml")
        (tmp / "w.toml").write_text(policy_text(
            boot, extra=f'[[rules]]\ntype = "events"\nrequire = [{{data_contains = "{MARKER.decode()}"}}]\n'))
        appraiser = Appraiser(TrustConfig(ak=ak, policy=policy))  # type: ignore[arg-type]
        wanting = Appraiser(TrustConfig(ak=ak, policy=load_policy(tmp / "w.toml")))  # type: ignore[arg-type]
        b = Bundle(ev, nonce, appraiser, wanting, logs)
        assert appraiser.appraise(ev, nonce).allowed  # the honest bundle passes
        assert not wanting.appraise(ev, nonce).allowed  # and lacks the marker
        yield b
    finally:
        tpm.close()
        sw.stop()


edits = st.one_of(
    st.tuples(st.just("type"), st.integers(0, 0xFFFFFFFF)),
    st.tuples(st.just("flip"), st.integers(0, 10_000)),
    st.tuples(st.just("append"), st.one_of(st.binary(min_size=1, max_size=8), st.just(MARKER), st.just(b"\0"))),
    st.tuples(st.just("truncate"), st.integers(0, 10_000)),
    st.tuples(st.just("replace"), st.one_of(st.binary(max_size=64), st.just(MARKER))),
)


def _apply(data: bytes, kind: str, arg: object) -> bytes:
    if kind == "flip" and data:
        i = int(arg) % len(data)  # type: ignore[call-overload]
        return data[:i] + bytes([data[i] ^ 0x41]) + data[i + 1:]
    if kind == "append":
        return data + bytes(arg)  # type: ignore[call-overload]
    if kind == "truncate":
        return data[:int(arg) % max(len(data), 1)]  # type: ignore[call-overload]
    if kind == "replace":
        return bytes(arg)  # type: ignore[call-overload]
    return data


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 1), index=st.integers(0, 10_000), change=edits)
def test_edits_never_allow_unless_display_only(bundle: Bundle, which: int, index: int,
                                               change: tuple[str, object]) -> None:
    name, raw = bundle.logs[which]
    events = parse_log(raw).events[1:]
    e = events[index % len(events)]
    kind, arg = change
    if kind == "type":
        forged = edit(raw, e.seq, event_type=int(arg))  # type: ignore[call-overload]
        display_only = True
    else:
        data = _apply(e.data, kind, arg)
        if data == e.data:
            return
        forged = edit(raw, e.seq, data=data)
        before, after = binding(e.data, e.digests), binding(data, e.digests)
        display_only = before is not None and after is not None and before.data == after.data
    logs = [(n, forged if i == which else d) for i, (n, d) in enumerate(bundle.logs)]
    forged_ev = with_logs(bundle.evidence, logs)
    if bundle.appraiser.appraise(forged_ev, bundle.nonce).allowed:
        assert display_only, f"{kind} edit of {name} event {e.seq} (PCR {e.pcr}) was allowed"
    # Data an edit supplies never satisfies a rule: the marker is in no bound data.
    assert not bundle.wanting.appraise(forged_ev, bundle.nonce).allowed, f"{kind} edit of {name} event {e.seq}"
