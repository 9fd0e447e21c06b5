"""Attacks on the appraisal core, each on a real quote signed by swtpm.

The attacker holds root on the attested host after boot: it can extend any PCR and edit
every log in the evidence, but not forge the AK's signature. Each attack was allowed by
the verifier before the appraisal core; each must now be refused, and the reason must name
what was forged. The honest boot is allowed (so each refusal is the attack's doing).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _attack_boot import EBS, SEPARATOR, Boot, edit, policy_text, quote, sha1_format, variable, with_logs
from conftest import start_swtpm

from tboot_py.appraise import Appraisal, Appraiser, TrustConfig
from tboot_py.eventlog import NewEvent, encode_log, parse_log
from tboot_py.eventlog import model as m
from tboot_py.eventlog.decode import encode_tboot_py
from tboot_py.eventlog.efi import EFI_GLOBAL_VARIABLE
from tboot_py.policy import Policy, load_policy
from tboot_py.tpm import open_tpm
from tboot_py.tpm.evidence import Evidence
from tboot_py.tpm.swtpm import Swtpm

pytestmark = pytest.mark.integration


@dataclass
class Host:
    """A booted host: its TPM, its boot, and a quote of it."""

    sw: Swtpm
    tpm: object
    boot: Boot
    dir: Path

    def logs(self) -> list[tuple[str, bytes]]:
        return [("firmware", self.boot.firmware_log()), ("tboot-py", self.boot.tboot_py)]

    def quote(self, logs: list[tuple[str, bytes]] | None = None, **kw: object) -> tuple[Evidence, bytes, object]:
        return quote(self.tpm, self.dir / "state", logs if logs is not None else self.logs(), **kw)  # type: ignore[arg-type]

    def policy(self, **kw: object) -> Policy:
        p = self.dir / "policy.toml"
        p.write_text(policy_text(self.boot, **kw))  # type: ignore[arg-type]
        return load_policy(p)

    def appraise(self, ev: Evidence, nonce: bytes, ak: object, policy: Policy | None = None,
                 **trust: object) -> Appraisal:
        return Appraiser(TrustConfig(ak=ak, policy=policy or self.policy(), **trust)).appraise(  # type: ignore[arg-type]
            ev, nonce)

    def extend(self, pcr: int, data: bytes) -> dict[str, bytes]:
        digests = {b.name: b.digest(data) for b in self.tpm.banks()}  # type: ignore[attr-defined]
        self.tpm.extend(pcr, digests)  # type: ignore[attr-defined]
        return digests


def _boot(tmp: Path, ca_dir: Path, secure_boot: bool = True) -> Iterator[Host]:
    sw = start_swtpm(tmp / "swtpm", ca_dir)
    tpm = open_tpm(sw.tcti)
    try:
        yield Host(sw, tpm, Boot.make(tpm, tmp, secure_boot=secure_boot), tmp)
    finally:
        tpm.close()  # type: ignore[attr-defined]
        sw.stop()


@pytest.fixture
def host(tmp_path: Path, ca_dir: Path) -> Iterator[Host]:
    yield from _boot(tmp_path, ca_dir)


@pytest.fixture
def sb_off_host(tmp_path: Path, ca_dir: Path) -> Iterator[Host]:
    yield from _boot(tmp_path, ca_dir, secure_boot=False)


def denied(r: Appraisal, *needles: str) -> str:
    assert not r.allowed, "the attack was allowed"
    text = " | ".join([r.error.diagnostics()] if r.error is not None else []
                      + [x.message for x in r.verdict.failures])
    for n in needles:
        assert n in text, f"{n!r} not in: {text}"
    return text


def test_honest_boot_is_allowed(host: Host) -> None:
    ev, nonce, ak = host.quote()
    r = host.appraise(ev, nonce, ak)
    assert r.allowed, [x.message for x in r.verdict.failures]
    assert r.verified is not None and r.verified.fresh
    passed = {x.check for x in r.verdict.reasons if x.passed}
    assert {"reference", "secure-boot", "uefi-db"} <= passed


# ---------------------------------------------------------------- tboot-py records


def _record_seq(log: bytes, component: str) -> int:
    return next(e.seq for e in parse_log(log).events if f'"component":"{component}"'.encode() in e.data)


def test_edited_record_data_is_refused(host: Host) -> None:
    """The command line in the record is rewritten; the digest (of the record) stays."""
    ev, nonce, ak = host.quote()
    seq = _record_seq(host.boot.tboot_py, "cmdline")
    old = parse_log(host.boot.tboot_py).events[seq].data
    forged = edit(host.boot.tboot_py, seq, data=old.replace(b"console=hvc0 ro", b"console=hvc0 rw"))
    denied(host.appraise(with_logs(ev, [host.logs()[0], ("tboot-py", forged)]), nonce, ak),
           "cmdline record's data was edited")


def test_relabelled_record_is_refused(host: Host) -> None:
    """The kernel record renamed the initrd (component and kind are in the bound data)."""
    ev, nonce, ak = host.quote()
    seq = _record_seq(host.boot.tboot_py, "kernel")
    old = parse_log(host.boot.tboot_py).events[seq].data
    forged = edit(host.boot.tboot_py, seq, data=old.replace(b'"component":"kernel"', b'"component":"initrd"'))
    denied(host.appraise(with_logs(ev, [host.logs()[0], ("tboot-py", forged)]), nonce, ak), "data was edited")


def test_record_that_does_not_decode_denies(host: Host) -> None:
    """An evil second launch is measured, then its record is garbled so a verifier that
    skips what it cannot read would see only the approved launch."""
    evil = encode_tboot_py("kernel", "file", "evil", None, (("sha256", b"\xee" * 32),))
    digests = host.extend(9, evil)
    garbled = evil.replace(b"\"kind\":\"file\"", b"\"kind\":file")  # no longer JSON
    log = _append(host, host.boot.tboot_py, [NewEvent(9, m.EV_IPL, digests, garbled)])
    ev, nonce, ak = host.quote([host.logs()[0], ("tboot-py", log)])
    denied(host.appraise(ev, nonce, ak), "does not decode")


def test_disguised_record_after_ours_denies(host: Host) -> None:
    """Root measures an evil kernel after the approved launch and logs it as a boot loader's
    file measurement (retyped, data rewritten): it sits after tboot-py's records on PCR 9."""
    evil = encode_tboot_py("kernel", "file", "evil", None, (("sha256", b"\xee" * 32),))
    digests = host.extend(9, evil)
    log = _append(host, host.boot.tboot_py, [NewEvent(9, m.EV_POST_CODE, digests, b"grub: /boot/grub/font.pf2")])
    ev, nonce, ak = host.quote([host.logs()[0], ("tboot-py", log)])
    denied(host.appraise(ev, nonce, ak), "hidden or disguised measurement")


def _append(host: Host, log: bytes, events: list[NewEvent]) -> bytes:
    banks = host.tpm.banks()  # type: ignore[attr-defined]
    return log + encode_log(events, banks)[len(encode_log([], banks)):]


def test_v1_record_with_edited_cmdline_is_refused(host: Host) -> None:
    """A version 1 record extends the command line's own hash: an approved string written
    over the measured one no longer hashes to the digest."""
    import json

    digests = host.extend(9, b"console=hvc0 init=/bin/sh")
    rec = json.dumps({"tboot-py": 1, "component": "cmdline", "kind": "file", "file": "cmdline",
                      "cmdline": "console=hvc0 ro"}).encode()
    log = _append(host, host.boot.tboot_py, [NewEvent(9, m.EV_IPL, digests, rec)])
    ev, nonce, ak = host.quote([host.logs()[0], ("tboot-py", log)])
    denied(host.appraise(ev, nonce, ak), "does not hash to its digest")


# ---------------------------------------------------------------- firmware events

def _fw_seq(host: Host, pcr: int, etype: int, contains: bytes = b"") -> int:
    log = parse_log(host.boot.firmware_log())
    return next(e.seq for e in log.events if e.pcr == pcr and e.event_type == etype and contains in e.data)


def test_rewritten_secure_boot_variable_is_refused(sb_off_host: Host) -> None:
    """Secure Boot was off; the SecureBoot variable's data is rewritten to on."""
    h = sb_off_host
    ev, nonce, ak = h.quote()
    seq = _fw_seq(h, 7, m.EV_EFI_VARIABLE_DRIVER_CONFIG, "SecureBoot".encode("utf-16-le"))
    forged = edit(h.boot.firmware_log(), seq, data=variable(EFI_GLOBAL_VARIABLE, "SecureBoot", b"\x01"))
    text = denied(h.appraise(with_logs(ev, [("firmware", forged), h.logs()[1]]), nonce, ak),
                  "Secure Boot configuration is unknown")
    assert "Secure Boot is enabled" not in text


def test_retyped_authority_does_not_hide_it(host: Host) -> None:
    """The authority that verified the boot loader is forbidden; retyping its event (the type
    is never extended) does not hide it: authorities are read by content."""
    ev, nonce, ak = host.quote()
    seq = _fw_seq(host, 7, m.EV_EFI_VARIABLE_AUTHORITY)
    forged = edit(host.boot.firmware_log(), seq, event_type=m.EV_EFI_ACTION)
    pol = host.policy(forbid_authority=True)
    honest = host.appraise(ev, nonce, ak, pol)
    denied(honest, "forbidden x509:")
    denied(host.appraise(with_logs(ev, [("firmware", forged), host.logs()[1]]), nonce, ak, pol), "forbidden x509:")


def test_relabelled_separator_and_late_secure_boot_variable(sb_off_host: Host) -> None:
    """Secure Boot was off. After boot, root extends PCR 7 with SecureBoot=1 and another
    separator, and relabels the firmware's separator as an EV_EFI_ACTION, so that a parser
    going by types sees one separator with SecureBoot=1 before it."""
    h = sb_off_host
    late = variable(EFI_GLOBAL_VARIABLE, "SecureBoot", b"\x01")
    d1, d2 = h.extend(7, late), h.extend(7, SEPARATOR)
    fw = parse_log(h.boot.firmware_log())
    sep = next(e.seq for e in fw.events if e.pcr == 7 and e.event_type == m.EV_SEPARATOR)
    relabelled = parse_log(edit(h.boot.firmware_log(), sep, event_type=m.EV_EFI_ACTION))
    events = [NewEvent(e.pcr, e.event_type, {m.bank_name(a): d for a, d in e.digests}, e.data)
              for e in relabelled.events[1:]]
    events += [NewEvent(7, m.EV_EFI_VARIABLE_DRIVER_CONFIG, d1, late), NewEvent(7, m.EV_SEPARATOR, d2, SEPARATOR)]
    forged = encode_log(events, h.tpm.banks())  # type: ignore[attr-defined]
    ev, nonce, ak = h.quote([("firmware", forged), h.logs()[1]])
    denied(h.appraise(ev, nonce, ak), "PCR 7 has 2 separators", "SecureBoot measured after PCR 7's separator")


def test_log_split_in_two_is_read_whole(host: Host) -> None:
    """The forbidden authority is moved into a second firmware log; boot facts read from the
    first log alone would miss it."""
    fw = host.boot.firmware
    i = next(k for k, e in enumerate(fw) if e.event_type == m.EV_EFI_VARIABLE_AUTHORITY)
    first = host.boot.firmware_log(fw[:i] + fw[i + 1:])
    second = host.boot.firmware_log([fw[i]])
    ev, nonce, ak = host.quote()
    split = with_logs(ev, [("firmware", first), ("firmware-2", second), host.logs()[1]])
    pol = host.policy(forbid_authority=True)
    # (the split log still replays: PCR 7's order is the same across the two logs)
    r = host.appraise(split, nonce, ak, pol)
    assert r.verified is not None
    denied(r, "forbidden x509:")


def test_sha1_format_rewrite_is_refused(host: Host) -> None:
    """Both logs rewritten in SHA-1 format: they replay against the quote's sha1 bank, but
    the quote also covers sha256 (and sha384), which must replay too."""
    ev, nonce, ak = host.quote()
    rewritten = with_logs(ev, [("firmware", sha1_format([host.boot.firmware_log(), host.boot.tboot_py]))])
    denied(host.appraise(rewritten, nonce, ak), "carries no sha256 digests", "every quoted bank must replay")


def test_sha1_only_quote_is_refused_when_sha256_is_required(host: Host) -> None:
    ev, nonce, ak = host.quote(banks=["sha1"])
    rewritten = with_logs(ev, [("firmware", sha1_format([host.boot.firmware_log(), host.boot.tboot_py]))])
    denied(host.appraise(rewritten, nonce, ak), "bank sha256 is required")


@pytest.mark.parametrize("nonce", [b"", b"\x01", b"\x01" * 7])
def test_short_nonce_is_refused(host: Host, nonce: bytes) -> None:
    ev, _, ak = host.quote(nonce=nonce)
    denied(host.appraise(ev, nonce, ak), "empty" if not nonce else "at least 8 are required")
    if nonce:  # a legacy quote may be accepted on request, never an empty nonce
        assert host.appraise(ev, nonce, ak, min_nonce_bytes=1).allowed


def test_unbound_data_cannot_satisfy_an_event_rule(host: Host) -> None:
    """An events rule requiring the ExitBootServices action is satisfied by the bound event;
    rewritten data claiming something else on PCR 5 is not believed."""
    extra = '[[rules]]\ntype = "events"\nrequire = [{pcr = 5, data_contains = "Exit Boot Services Invocation"}]\n'
    ev, nonce, ak = host.quote()
    assert host.appraise(ev, nonce, ak, host.policy(extra=extra)).allowed
    seq = _fw_seq(host, 5, m.EV_EFI_ACTION, EBS[0])
    forged = edit(host.boot.firmware_log(), seq, data=b"Something else")
    extra2 = '[[rules]]\ntype = "events"\nrequire = [{pcr = 5, data_contains = "Something else"}]\n'
    denied(host.appraise(with_logs(ev, [("firmware", forged), host.logs()[1]]), nonce, ak,
                         host.policy(extra=extra2)), "required event not found")


def test_late_extend_without_a_log_entry_breaks_the_replay(host: Host) -> None:
    host.extend(9, b"anything")
    ev, nonce, ak = host.quote()
    denied(host.appraise(ev, nonce, ak), "PCR 9")


def test_version_1_records_still_appraise(host: Host) -> None:
    """Logs written by earlier releases (records extended as the artifact's digest) still
    appraise: the kernel by its digest, the command line by hashing it."""
    import json

    from tboot_py.measure import measure

    banks = host.tpm.banks()  # type: ignore[attr-defined]
    k = measure(host.boot.files["kernel"], banks=banks).digests.as_dict()
    cmd = "console=hvc0 ro"
    c = {b.name: b.digest(cmd.encode()) for b in banks}
    for d in (k, c):
        host.tpm.extend(9, d)  # type: ignore[attr-defined]
    recs = [NewEvent(9, m.EV_IPL, k, json.dumps({"tboot-py": 1, "component": "kernel", "kind": "file",
                                                  "file": "vmlinuz"}).encode()),
            NewEvent(9, m.EV_IPL, c, json.dumps({"tboot-py": 1, "component": "cmdline", "kind": "file",
                                                  "file": "cmdline", "cmdline": cmd}).encode())]
    v1 = encode_log(recs, banks)
    ev, nonce, ak = host.quote([*host.logs(), ("v1", v1)])
    r = host.appraise(ev, nonce, ak)
    assert r.allowed, [x.message for x in r.verdict.failures]
    # the v1 kernel record was judged (its digest is a reference value), not skipped
    assert sum(1 for x in r.verdict.reasons if x.passed and x.component == "kernel") == 2


# ---------------------------------------------------------------- attacks found later


@pytest.mark.parametrize("version", [1, 2])
def test_kernel_of_another_kind_is_judged(host: Host, version: int) -> None:
    """An evil kernel launched after the approved one, its record saying kind "pe" (a version 2
    record as a launch with --kind pe writes it; or a version 1 record, whose kind nothing
    binds, edited from "file"). The policy has only file values for the kernel: the evil
    record must be judged (and refused), not skipped because an approved kernel is there."""
    import json

    evil = {b.name: b.digest(b"evil kernel") for b in host.tpm.banks()}  # type: ignore[attr-defined]
    if version == 2:
        data = encode_tboot_py("kernel", "pe", "evil", None, tuple(evil.items()))
        digests = host.extend(9, data)
    else:
        host.tpm.extend(9, evil)  # type: ignore[attr-defined]
        digests = evil
        data = json.dumps({"tboot-py": 1, "component": "kernel", "kind": "pe", "file": "evil"}).encode()
    log = _append(host, host.boot.tboot_py, [NewEvent(9, m.EV_IPL, digests, data)])
    ev, nonce, ak = host.quote([host.logs()[0], ("tboot-py", log)])
    denied(host.appraise(ev, nonce, ak), "'evil'", "measured as pe")


def test_kernel_outside_a_tboot_vlp_is_judged(host: Host, tmp_path: Path) -> None:
    """A tboot VL policy judges module hashes. Next to the approved kernel's tboot module
    record, an evil kernel is launched and recorded as a plain file: a policy that names the
    kernel only through its VLP must not skip it."""
    banks = host.tpm.banks()  # type: ignore[attr-defined]
    good = {b.name: b.digest(b.digest(b"") + b.digest(b"approved kernel")) for b in banks}
    evil = {b.name: b.digest(b"evil kernel") for b in banks}
    recs = [encode_tboot_py("kernel", "tboot-module", "vmlinuz", "", tuple(good.items())),
            encode_tboot_py("kernel", "file", "evil", None, tuple(evil.items()))]
    log = encode_log([NewEvent(8, m.EV_IPL, host.extend(8, r), r) for r in recs], banks)
    ev, nonce, ak = host.quote([host.logs()[0], ("records", log)])
    p = tmp_path / "vlp.toml"
    p.write_text(f'''version = 1
record_pcrs = [8]
[[rules]]
type = "tboot-vlp"
bank = "sha256"
entries = [{{mod_num = "any", pcr = 19, hash_type = "image", hashes = ["{good["sha256"].hex()}"]}}]
''')
    denied(host.appraise(ev, nonce, ak, load_policy(p)), "'evil'", "measured as file")


@dataclass
class Bare:
    """A TPM whose firmware boot each test extends itself (Boot.make's is fixed)."""

    tpm: object
    dir: Path

    def extend(self, pcr: int, etype: int, data: bytes, logged: bytes | None = None) -> NewEvent:
        """Extend H(data) in every bank; log ``logged`` (default: the data) with it."""
        digests = {b.name: b.digest(data) for b in self.tpm.banks()}  # type: ignore[attr-defined]
        self.tpm.extend(pcr, digests)  # type: ignore[attr-defined]
        return NewEvent(pcr, etype, digests, data if logged is None else logged)

    def appraise(self, events: list[NewEvent], policy: str) -> Appraisal:
        log = encode_log(events, self.tpm.banks())  # type: ignore[attr-defined]
        ev, nonce, ak = quote(self.tpm, self.dir / "state", [("firmware", log)])
        p = self.dir / "bare.toml"
        p.write_text(policy)
        return Appraiser(TrustConfig(ak=ak, policy=load_policy(p))).appraise(ev, nonce)  # type: ignore[arg-type]


@pytest.fixture
def bare(tmp_path: Path, ca_dir: Path) -> Iterator[Bare]:
    sw = start_swtpm(tmp_path / "swtpm", ca_dir)
    tpm = open_tpm(sw.tcti)
    try:
        yield Bare(tpm, tmp_path)
    finally:
        tpm.close()  # type: ignore[attr-defined]
        sw.stop()


def _sb_config(secure_boot: bytes = b"\x01", db: bytes | None = None) -> list[tuple[str, object, bytes]]:
    """(name, GUID, value) of a Secure Boot configuration, SecureBoot last."""
    from _attack_boot import SHA256_GUID, X509_GUID, cert, signature_list

    from tboot_py.eventlog.efi import EFI_IMAGE_SECURITY_DATABASE

    return [("PK", EFI_GLOBAL_VARIABLE, signature_list(X509_GUID, [cert("PK")])),
            ("KEK", EFI_GLOBAL_VARIABLE, signature_list(X509_GUID, [cert("KEK")])),
            ("db", EFI_IMAGE_SECURITY_DATABASE, signature_list(X509_GUID, [db or cert("db")])),
            ("dbx", EFI_IMAGE_SECURITY_DATABASE, signature_list(SHA256_GUID, [b"\x11" * 32])),
            ("SecureBoot", EFI_GLOBAL_VARIABLE, secure_boot)]


def test_separator_disguised_as_a_variable_value(bare: Bare) -> None:
    """Firmware without Secure Boot (a BIOS boot) measures only a separator in PCR 7. After
    boot, root extends PCR 7 with a whole Secure Boot configuration (SecureBoot=1 last) and
    a separator, and rewrites the firmware's separator as a UEFI variable "SecureBoot" whose
    value is the separator's 00000000: its digest binds that value, so a parser that takes
    value-only bindings for variables sees no separator there and SecureBoot, PK, KEK, db,
    dbx in the PFP's order before the forged one."""
    disguise = variable(EFI_GLOBAL_VARIABLE, "SecureBoot", SEPARATOR)
    fw = [bare.extend(p, m.EV_SEPARATOR, SEPARATOR, disguise if p == 7 else None) for p in range(8)]
    late = [bare.extend(7, m.EV_EFI_VARIABLE_DRIVER_CONFIG, variable(g, n, v))  # type: ignore[arg-type]
            for n, g, v in _sb_config()]
    late.append(bare.extend(7, m.EV_SEPARATOR, SEPARATOR))
    r = bare.appraise(fw + late, 'version = 1\n[[rules]]\ntype = "secure-boot"\nenabled = true\n')
    denied(r, "PCR 7 has 2 separators")


def test_module_command_line_is_judged_next_to_a_forged_cmdline_record(host: Host, tmp_path: Path) -> None:
    """A tboot launch measures the kernel as a module hash whose record binds its command
    line (init=/bin/sh); the VLP accepts any kernel hash. After boot, root extends a forged
    cmdline record with the approved line: the module's own command line must still be judged."""
    banks = host.tpm.banks()  # type: ignore[attr-defined]
    bad = "console=hvc0 init=/bin/sh"
    mod = {b.name: b.digest(b.digest(bad.encode()) + b.digest(b"kernel")) for b in banks}
    ok = {b.name: b.digest(b"console=hvc0 ro") for b in banks}
    recs = [encode_tboot_py("kernel", "tboot-module", "vmlinuz", bad, tuple(mod.items())),
            encode_tboot_py("cmdline", "file", "cmdline", "console=hvc0 ro", tuple(ok.items()))]
    log = encode_log([NewEvent(8, m.EV_IPL, host.extend(8, r), r) for r in recs], banks)
    ev, nonce, ak = host.quote([host.logs()[0], ("records", log)])
    p = tmp_path / "vlp.toml"
    p.write_text('''version = 1
record_pcrs = [8]
[[rules]]
type = "tboot-vlp"
bank = "sha256"
entries = [{mod_num = "any", pcr = 19, hash_type = "any", hashes = []}]
[[rules]]
type = "reference"
component = "cmdline"
values = [{label = "c", cmdline = "console=hvc0 ro"}]
''')
    denied(host.appraise(ev, nonce, ak, load_policy(p)), "init=/bin/sh")


def test_authority_hashed_by_value_is_not_skipped(bare: Bare) -> None:
    """Firmware that hashes only a variable's value measures the image authority that way
    after PCR 7's separator. Its name is not bound (and no position names it), but it may be
    the forbidden signer: a policy on authorities cannot be decided, not passed."""
    from _attack_boot import OWNER, cert, x509_fingerprint

    from tboot_py.eventlog.efi import EFI_IMAGE_SECURITY_DATABASE

    signer = cert("db signer")
    cfg = _sb_config(db=signer)
    fw = [bare.extend(7, m.EV_EFI_VARIABLE_DRIVER_CONFIG, variable(g, n, v))  # type: ignore[arg-type]
          for n, g, v in [cfg[-1], *cfg[:-1]]]
    fw += [bare.extend(p, m.EV_SEPARATOR, SEPARATOR) for p in range(8)]
    auth = OWNER.bytes_le + signer
    fw.append(bare.extend(7, m.EV_EFI_VARIABLE_AUTHORITY, auth,
                          variable(EFI_IMAGE_SECURITY_DATABASE, "db", auth)))
    r = bare.appraise(fw, f'version = 1\n[[rules]]\ntype = "uefi-db"\n'
                          f'authorities_forbid = ["{x509_fingerprint(signer)}"]\n')
    denied(r, "does not record authorities")


def _forged_records(host: Host, pcr: int) -> bytes:
    """After boot, root extends records of the approved kernel, initrd and command line on
    ``pcr`` (a version 2 record binds its data, not where it was written or by whom)."""
    banks = host.tpm.banks()  # type: ignore[attr-defined]
    real = parse_log(host.boot.tboot_py)
    return encode_log([NewEvent(pcr, m.EV_IPL, host.extend(pcr, e.data), e.data) for e in real.events[1:]], banks)


def test_dropped_records_log_is_noticed(host: Host) -> None:
    """An evil kernel's record on PCR 9 is hidden by leaving the records log out of the bundle,
    and approved records forged on PCR 8 stand in for it: PCR 9 holds records, is quoted, and no
    log explains it."""
    evil = encode_tboot_py("kernel", "file", "evil", None, (("sha256", b"\xee" * 32),))
    host.extend(9, evil)
    forged = _forged_records(host, 8)
    ev, nonce, ak = host.quote([host.logs()[0], ("tboot-py", forged)])
    text = denied(host.appraise(ev, nonce, ak), "no log of the evidence explains it")
    assert "not a record PCR" in text  # and the forged records sit where no record belongs


def test_unquoted_record_pcr_is_noticed(host: Host) -> None:
    """The same, with PCR 9 left out of the quote (the agent chose the selection)."""
    host.extend(9, encode_tboot_py("kernel", "file", "evil", None, (("sha256", b"\xee" * 32),)))
    forged = _forged_records(host, 8)
    ev, nonce, ak = host.quote([host.logs()[0], ("tboot-py", forged)], pcrs=range(9))
    denied(host.appraise(ev, nonce, ak), "PCR 9 holds tboot-py's records but the quote does not cover it")

