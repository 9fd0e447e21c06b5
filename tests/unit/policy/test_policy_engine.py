"""The engine: each rule positive and negative, every mode, fail-closed inputs."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import pytest

from tboot_py.policy import (
    BootFacts,
    FirmwareEvent,
    Inputs,
    MeasuredComponent,
    Mode,
    Policy,
    Verdict,
    evaluate,
)
from tboot_py.policy._serialize import policy_from_dict
from tboot_py.policy.model import Component, DigestKind

KERNEL = b"kernel image bytes"
INITRD = b"initrd bytes"
TODAY = dt.date(2025, 6, 1)


def h(bank: str, data: bytes) -> bytes:
    return hashlib.new(bank, data).digest()


def ref_rule(component: str, data: bytes, kind: str = "file", label: str = "v1", expires: str | None = None,
             banks: tuple[str, ...] = ("sha256",)) -> dict[str, Any]:
    v: dict[str, Any] = {"label": label, "kind": kind, "digests": {b: h(b, data).hex() for b in banks}}
    if expires:
        v["expires"] = expires
    return {"type": "reference", "component": component, "values": [v]}


def pol(*rules: dict[str, Any], mode: str = "halt") -> Policy:
    return policy_from_dict({"version": 1, "mode": mode, "rules": list(rules)})


def meas(component: Component, data: bytes, kind: DigestKind = DigestKind.FILE,
         banks: tuple[str, ...] = ("sha1", "sha256"), cmdline: str | None = None) -> MeasuredComponent:
    return MeasuredComponent(component, kind, tuple((b, h(b, data)) for b in banks), cmdline=cmdline)


def inputs(**kw: Any) -> Inputs:
    kw.setdefault("today", TODAY)
    kw.setdefault("measurements", (meas(Component.KERNEL, KERNEL), meas(Component.INITRD, INITRD)))
    return Inputs(**kw)


def test_verdict_has_no_truth_value() -> None:
    v = evaluate(pol(ref_rule("kernel", KERNEL)), inputs())
    with pytest.raises(TypeError):
        bool(v)
    with pytest.raises(TypeError):
        if v:  # type: ignore[truthy-bool]
            pass
    assert isinstance(v, Verdict) and v.allowed


def test_reference_match_and_mismatch() -> None:
    ok = evaluate(pol(ref_rule("kernel", KERNEL), ref_rule("initrd", INITRD)), inputs())
    assert ok.allowed
    assert all(r.passed for r in ok.reasons)
    r = ok.reasons[0]
    assert (r.component, r.bank, r.actual) == ("kernel", "sha256", h("sha256", KERNEL).hex())

    bad = evaluate(pol(ref_rule("kernel", b"other kernel")), inputs())
    assert not bad.allowed
    f = bad.failures[0]
    assert f.component == "kernel" and f.bank == "sha256" and not f.fatal
    assert f.actual == h("sha256", KERNEL).hex()
    assert f.expected == (f"{h('sha256', b'other kernel').hex()} (v1)",)


def test_reference_any_of_several_values() -> None:
    rule = ref_rule("kernel", b"old kernel", label="old")
    rule["values"].append({"label": "new", "digests": {"sha256": h("sha256", KERNEL).hex()}})
    v = evaluate(pol(rule), inputs())
    assert v.allowed and "'new'" in v.reasons[0].message


def test_reference_every_common_bank_must_match() -> None:
    rule = ref_rule("kernel", KERNEL, banks=("sha1", "sha256"))
    rule["values"][0]["digests"]["sha1"] = h("sha1", b"forged").hex()
    assert not evaluate(pol(rule), inputs()).allowed


def test_expired_value_no_longer_matches() -> None:
    assert evaluate(pol(ref_rule("kernel", KERNEL, expires="2025-06-01")), inputs()).allowed  # last valid day
    v = evaluate(pol(ref_rule("kernel", KERNEL, expires="2025-05-31")), inputs())
    assert not v.allowed
    assert "expired on 2025-05-31" in v.failures[0].message


def test_kind_must_match() -> None:
    v = evaluate(pol(ref_rule("kernel", KERNEL, kind="pe")), inputs())
    assert not v.allowed and v.failures[0].fatal and "measured as file" in v.failures[0].message
    pe = inputs(measurements=(meas(Component.KERNEL, KERNEL, DigestKind.PE),))
    assert evaluate(pol(ref_rule("kernel", KERNEL, kind="pe")), pe).allowed


def test_missing_measurement_denies_even_nonfatal() -> None:
    v = evaluate(pol(ref_rule("hypervisor", b"xen"), mode="nonfatal"), inputs())
    assert not v.allowed and v.failures[0].fatal and "no measurement of the hypervisor" in v.failures[0].message


def test_empty_digests_and_no_common_bank_deny() -> None:
    empty = inputs(measurements=(MeasuredComponent(Component.KERNEL, DigestKind.FILE, ()),))
    v = evaluate(pol(ref_rule("kernel", KERNEL), mode="nonfatal"), empty)
    assert not v.allowed and "no digests" in v.failures[0].message
    sha384 = inputs(measurements=(meas(Component.KERNEL, KERNEL, banks=("sha384",)),))
    v = evaluate(pol(ref_rule("kernel", KERNEL), mode="nonfatal"), sha384)
    assert not v.allowed and "no bank in common" in v.failures[0].message


def test_cmdline_literal_and_digest() -> None:
    cmd = "console=hvc0 root=/dev/xvda1"
    # A tboot module hash binds the kernel's command line into the kernel measurement.
    ins = inputs(measurements=(meas(Component.KERNEL, KERNEL, DigestKind.TBOOT_MODULE, cmdline=cmd),))
    lit = {"type": "reference", "component": "cmdline", "values": [{"label": "prod", "cmdline": cmd}]}
    dig = {"type": "reference", "component": "cmdline",
           "values": [{"label": "prod", "digests": {"sha256": h("sha256", cmd.encode()).hex()}}]}
    assert evaluate(pol(lit), ins).allowed
    assert evaluate(pol(dig), ins).allowed
    evil = cmd + " init=/bin/sh"
    other = inputs(measurements=(meas(Component.KERNEL, KERNEL, DigestKind.TBOOT_MODULE, cmdline=evil),))
    v = evaluate(pol(lit), other)
    assert not v.allowed and v.failures[0].actual == cmd + " init=/bin/sh" and v.failures[0].expected == (cmd,)
    assert not evaluate(pol(dig), other).allowed
    assert evaluate(pol(lit), inputs()).failures[0].fatal  # no command line given at all
    # A kernel measured as a plain file does not cover a command line: none is proven.
    unbound = inputs(measurements=(meas(Component.KERNEL, KERNEL, cmdline=cmd),))
    assert not evaluate(pol(lit), unbound).allowed


def test_cmdlines_are_bound_to_their_component() -> None:
    """The kernel's and the hypervisor's command lines are distinct components: a rule for
    one does not accept the other, so swapped lines deny."""
    kernel_cmd, xen_cmd = "console=hvc0", "console=com1 dom0_mem=512M"
    k = {"type": "reference", "component": "cmdline", "values": [{"label": "k", "cmdline": kernel_cmd}]}
    x = {"type": "reference", "component": "hypervisor-cmdline", "values": [{"label": "x", "cmdline": xen_cmd}]}
    right = inputs(measurements=(meas(Component.CMDLINE, kernel_cmd.encode(), cmdline=kernel_cmd),
                                 meas(Component.HYPERVISOR_CMDLINE, xen_cmd.encode(), cmdline=xen_cmd)))
    swapped = inputs(measurements=(meas(Component.CMDLINE, xen_cmd.encode(), cmdline=xen_cmd),
                                   meas(Component.HYPERVISOR_CMDLINE, kernel_cmd.encode(), cmdline=kernel_cmd)))
    assert evaluate(pol(k, x), right, require_coverage=True).allowed
    v = evaluate(pol(k, x), swapped, require_coverage=True)
    assert not v.allowed and {f.actual for f in v.failures} == {kernel_cmd, xen_cmd}
    # a policy naming only the kernel's command line does not cover the hypervisor's
    v = evaluate(pol(k), right, require_coverage=True)
    assert not v.allowed and any("hypervisor-cmdline" in f.message for f in v.failures)


@pytest.mark.parametrize("mode", ["halt", "continue"])
def test_every_measured_cmdline_must_match(mode: str) -> None:
    kernel_cmd, xen_cmd = "console=hvc0", "console=com1 dom0_mem=512M"
    both = inputs(measurements=(meas(Component.CMDLINE, kernel_cmd.encode(), cmdline=kernel_cmd),
                                meas(Component.CMDLINE, xen_cmd.encode(), cmdline=xen_cmd)))
    only_kernel = {"type": "reference", "component": "cmdline", "values": [{"label": "k", "cmdline": kernel_cmd}]}
    v = evaluate(pol(only_kernel, mode=mode), both)
    assert not v.allowed and any(f.actual == xen_cmd for f in v.failures)
    listed = {"type": "reference", "component": "cmdline",
              "values": [{"label": "k", "cmdline": kernel_cmd}, {"label": "x", "cmdline": xen_cmd}]}
    assert evaluate(pol(listed, mode=mode), both).allowed


# ---------------------------------------------------------------- PCRs

P18 = h("sha256", b"eighteen")
P19 = h("sha256", b"nineteen")


def pcr_rule(**regs: bytes) -> dict[str, Any]:
    return {"type": "pcrs", "values": {"sha256": {k.lstrip("p"): v.hex() for k, v in regs.items()}}}


def test_pcrs_match_and_mismatch() -> None:
    good = {"sha256": {18: P18, 19: P19}}
    assert evaluate(pol(pcr_rule(p18=P18, p19=P19)), inputs(pcrs=good)).allowed
    v = evaluate(pol(pcr_rule(p18=P18, p19=P19)), inputs(pcrs={"sha256": {18: P18, 19: P18}}))
    assert not v.allowed
    f = v.failures[0]
    assert (f.pcr, f.bank, f.expected, f.actual, f.fatal) == (19, "sha256", (P19.hex(),), P18.hex(), False)


@pytest.mark.parametrize("pcrs", [None, {}, {"sha256": {}}, {"sha1": {18: b"\x01" * 20}}, {"sha256": {18: P18}}])
def test_missing_pcr_input_is_fatal(pcrs: Any) -> None:
    v = evaluate(pol(pcr_rule(p18=P18, p19=P19), mode="nonfatal"), inputs(pcrs=pcrs))
    assert not v.allowed and any(r.fatal for r in v.failures)


@pytest.mark.parametrize("fill", [b"\x00", b"\xff"])
def test_drtm_pcr_all_zero_or_ff_denies(fill: bytes) -> None:
    v = evaluate(pol(pcr_rule(p18=P18), mode="nonfatal"), inputs(pcrs={"sha256": {18: fill * 32}}))
    assert not v.allowed
    assert v.failures[0].fatal and "no measured launch" in v.failures[0].message


# ---------------------------------------------------------------- modes and composition

def test_halt_denies_and_still_lists_every_reason() -> None:
    v = evaluate(pol(ref_rule("kernel", b"x"), ref_rule("initrd", b"y"), ref_rule("initrd", INITRD)), inputs())
    assert not v.allowed
    assert [(r.component, r.passed) for r in v.reasons] == [("kernel", False), ("initrd", False), ("initrd", True)]


def test_continue_evaluates_everything_and_denies() -> None:
    v = evaluate(pol(ref_rule("kernel", b"x"), ref_rule("initrd", INITRD), mode="continue"), inputs())
    assert not v.allowed and v.mode is Mode.CONTINUE
    assert [(r.component, r.passed) for r in v.reasons] == [("kernel", False), ("initrd", True)]


def test_nonfatal_records_and_allows() -> None:
    v = evaluate(pol(ref_rule("kernel", b"x"), ref_rule("initrd", b"y"), mode="nonfatal"), inputs())
    assert v.allowed and v.mode is Mode.NONFATAL
    assert len([r for r in v.failures if r.check == "reference"]) == 2


def test_any_of_and_all_of() -> None:
    any_ok = {"type": "any-of", "rules": [ref_rule("kernel", b"x"), ref_rule("kernel", KERNEL)]}
    any_bad = {"type": "any-of", "rules": [ref_rule("kernel", b"x"), ref_rule("kernel", b"y")]}
    all_bad = {"type": "all-of", "rules": [ref_rule("kernel", KERNEL), ref_rule("initrd", b"y")]}
    all_ok = {"type": "all-of", "rules": [ref_rule("kernel", KERNEL), ref_rule("initrd", INITRD)]}
    for mode in ("halt", "continue"):
        assert evaluate(pol(any_ok, mode=mode), inputs()).allowed
        assert not evaluate(pol(any_bad, mode=mode), inputs()).allowed
        assert not evaluate(pol(all_bad, mode=mode), inputs()).allowed
        assert evaluate(pol(all_ok, mode=mode), inputs()).allowed
    # a fatal branch inside an any-of that another branch satisfies does not deny
    fatal_branch = {"type": "any-of", "rules": [pcr_rule(p18=P18), ref_rule("kernel", KERNEL)]}
    assert evaluate(pol(fatal_branch), inputs()).allowed
    # but when it is the reason the any-of fails, even nonfatal denies
    fatal_fail = {"type": "any-of", "rules": [pcr_rule(p18=P18), ref_rule("kernel", b"x")]}
    assert not evaluate(pol(fatal_fail, mode="nonfatal"), inputs()).allowed


def test_quirks_and_name_are_reported() -> None:
    v = evaluate(pol(ref_rule("kernel", KERNEL)), inputs(quirks=("startup-locality",)))
    assert v.quirks == ("startup-locality",)
    assert v.as_json()["quirks"] == ["startup-locality"]


def test_empty_policy_denies() -> None:
    v = evaluate(Policy(rules=(), mode=Mode.NONFATAL), inputs())
    assert not v.allowed


# ---------------------------------------------------------------- boot state

DBK = "x509:" + "ab" * 32
DBX = "sha256:" + "cd" * 32


def test_secure_boot_rule() -> None:
    rule = {"type": "secure-boot", "enabled": True}
    assert evaluate(pol(rule), inputs(boot=BootFacts(secure_boot=True))).allowed
    v = evaluate(pol(rule), inputs(boot=BootFacts(secure_boot=False)))
    assert not v.allowed and (v.failures[0].expected, v.failures[0].actual) == (("enabled",), "disabled")
    assert evaluate(pol({"type": "secure-boot", "enabled": False}), inputs(boot=BootFacts(secure_boot=False))).allowed
    for boot in (None, BootFacts()):
        v = evaluate(pol(rule, mode="nonfatal"), inputs(boot=boot))
        assert not v.allowed and v.failures[0].fatal


def test_uefi_db_rules() -> None:
    facts = BootFacts(secure_boot=True, db=frozenset({DBK}), dbx=frozenset({DBX}), authorities=frozenset({DBK}))
    ok = {"type": "uefi-db", "db_allow": [DBK], "dbx_require": [DBX], "authorities_allow": [DBK],
          "db_forbid": ["x509:" + "ee" * 32], "authorities_forbid": ["x509:" + "ee" * 32]}
    assert evaluate(pol(ok), inputs(boot=facts)).allowed
    for bad in ({"type": "uefi-db", "db_allow": ["x509:" + "ee" * 32]},
                {"type": "uefi-db", "db_forbid": [DBK]},
                {"type": "uefi-db", "dbx_require": ["sha256:" + "ee" * 32]},
                {"type": "uefi-db", "authorities_allow": ["x509:" + "ee" * 32]},
                {"type": "uefi-db", "authorities_forbid": [DBK]}):
        assert not evaluate(pol(bad), inputs(boot=facts)).allowed, bad
    v = evaluate(pol(ok, mode="nonfatal"), inputs(boot=BootFacts(secure_boot=True)))
    assert not v.allowed and v.failures[0].fatal


def test_uefi_db_reasons_name_each_failure_and_summarise_passes() -> None:
    """A dbx list runs to hundreds of hashes: a pass is one reason, a failure one per entry."""
    dbx = [f"sha256:{i:064x}" for i in range(200)]
    facts = BootFacts(secure_boot=True, db=frozenset({DBK}), dbx=frozenset(dbx), authorities=frozenset())
    v = evaluate(pol({"type": "uefi-db", "dbx_require": dbx, "db_forbid": ["x509:" + "ee" * 32]}),
                 inputs(boot=facts))
    assert v.allowed
    assert [r.message for r in v.reasons if r.check == "uefi-db"] == [
        "db contains no forbidden entry (1 checked)", "dbx contains every required entry (200)"]
    gone = dbx[7], dbx[150]
    short = BootFacts(secure_boot=True, db=frozenset({DBK}), dbx=frozenset(dbx) - set(gone), authorities=frozenset())
    v = evaluate(pol({"type": "uefi-db", "dbx_require": dbx}, mode="continue"), inputs(boot=short))
    assert not v.allowed
    assert [(r.message, r.expected) for r in v.failures if r.check == "uefi-db"] == [
        (f"{e} is not in dbx", (f"dbx contains {e}",)) for e in gone]
    assert all(not r.passed for r in v.reasons if r.check == "uefi-db")
    v = evaluate(pol({"type": "uefi-db", "db_forbid": [DBK, "x509:" + "ee" * 32]}), inputs(boot=short))
    assert [(r.message, r.actual) for r in v.failures if r.check == "uefi-db"] == [(f"forbidden {DBK} is in db", DBK)]


def test_event_rules() -> None:
    dg = h("sha256", b"ev")
    shim = "shim".encode("utf-16-le")
    evs = (FirmwareEvent(pcr=9, event_type=0xD, digests=(("sha256", dg),), data=b"ev", seq=4, bound=True),
           FirmwareEvent(pcr=4, event_type=0x80000003, digests=(("sha256", h("sha256", shim)),), data=shim,
                         bound=True))
    req = {"type": "events", "require": [{"type": "EV_IPL", "pcr": 9, "digest": f"sha256:{dg.hex()}"},
                                         {"data_contains": "shim"}]}
    assert evaluate(pol(req), inputs(events=evs)).allowed
    missing = {"type": "events", "require": [{"pcr": 8, "digest": f"sha256:{dg.hex()}"}]}
    assert not evaluate(pol(missing), inputs(events=evs)).allowed
    forbid = {"type": "events", "forbid": [{"type": "EV_EFI_BOOT_SERVICES_APPLICATION", "data_contains": "shim"}]}
    v = evaluate(pol(forbid), inputs(events=evs))
    assert not v.allowed and v.failures[0].pcr == 4
    assert not evaluate(pol(req, mode="nonfatal"), inputs(events=None)).allowed


def test_event_rules_read_only_what_the_replay_proves() -> None:
    """The type of an event is never extended: it narrows no match, and a matcher with
    nothing else cannot be decided. Data counts only where its digest binds it."""
    dg = h("sha256", b"ev")
    retyped = (FirmwareEvent(pcr=9, event_type=0x80000007, digests=(("sha256", dg),), data=b"ev", bound=True),)
    by_digest = {"type": "events", "forbid": [{"type": "EV_IPL", "pcr": 9, "digest": f"sha256:{dg.hex()}"}]}
    assert not evaluate(pol(by_digest), inputs(events=retyped)).allowed  # retyping does not hide it
    for kind in ("require", "forbid"):
        type_only = {"type": "events", kind: [{"type": "EV_IPL", "pcr": 9}]}
        v = evaluate(pol(type_only, mode="nonfatal"), inputs(events=retyped))
        assert not v.allowed and v.failures[0].fatal and "never extended" in v.failures[0].message
    unbound = (FirmwareEvent(pcr=4, event_type=0x80000003, digests=(("sha256", dg),), data=b"shim", bound=False),)
    need = {"type": "events", "require": [{"pcr": 4, "data_contains": "shim"}]}
    assert not evaluate(pol(need), inputs(events=unbound)).allowed
    ban = {"type": "events", "forbid": [{"pcr": 4, "data_contains": "grub"}]}
    v = evaluate(pol(ban, mode="nonfatal"), inputs(events=unbound))
    assert not v.allowed and v.failures[0].fatal and "does not bind" in v.failures[0].message
    v = evaluate(pol(ban), inputs(events=unbound, ordering={4: ("PCR 4 has 2 separators",)}))
    assert not v.allowed and "2 separators" in v.failures[0].message


# ---------------------------------------------------------------- tboot VLP rule

def tboot_hash(bank: str, cmdline: bytes, image: bytes) -> bytes:
    return h(bank, h(bank, cmdline) + h(bank, image))


def test_vlp_rule_first_match_semantics() -> None:
    xen = tboot_hash("sha256", b"", b"xen")
    dom0 = tboot_hash("sha256", b"console=hvc0", KERNEL)
    ms = (MeasuredComponent(Component.HYPERVISOR, DigestKind.TBOOT_MODULE, (("sha256", xen),)),
          MeasuredComponent(Component.KERNEL, DigestKind.TBOOT_MODULE, (("sha256", dom0),)))
    rule = {"type": "tboot-vlp", "bank": "sha256", "entries": [
        {"mod_num": 0, "pcr": 18, "hash_type": "image", "hashes": [xen.hex()]},
        {"mod_num": "any", "pcr": 19, "hash_type": "image", "hashes": [dom0.hex()]}]}
    assert evaluate(pol(rule), inputs(measurements=ms)).allowed
    rule["entries"][1]["hashes"] = [xen.hex()]
    v = evaluate(pol(rule), inputs(measurements=ms))
    assert not v.allowed and v.failures[0].component == "kernel"
    rule["entries"][1] = {"mod_num": "any", "pcr": 19, "hash_type": "any", "hashes": []}
    assert evaluate(pol(rule), inputs(measurements=ms)).allowed
    del rule["entries"][1]
    v = evaluate(pol(rule), inputs(measurements=ms))
    assert not v.allowed and "no policy entry" in v.failures[0].message


@pytest.mark.parametrize("kind", ["require", "forbid"])
def test_event_rule_on_a_pcr_the_quote_does_not_back_denies(kind: str) -> None:
    from tboot_py.policy import FirmwareEvent

    ev = FirmwareEvent(pcr=4, event_type=0x0D, digests=(("sha256", h("sha256", b"grub")),), data=b"grub",
                       bound=True)
    rule = {"type": "events", kind: [{"pcr": 14, "data_contains": "x"}]}
    base = {"measurements": (), "events": (ev,)}
    # Without event_pcrs every given event is authoritative: forbid passes, require fails.
    assert evaluate(pol(rule), inputs(**base)).allowed is (kind == "forbid")
    v = evaluate(pol(rule, mode="nonfatal"), inputs(**base, event_pcrs=frozenset({4, 7})))
    assert not v.allowed and v.failures[0].fatal and "not backed" in v.failures[0].message
    ok = {"type": "events", kind: [{"pcr": 4, "data_contains": "grub"}]}
    assert evaluate(pol(ok), inputs(**base, event_pcrs=frozenset({4}))).allowed is (kind == "require")
