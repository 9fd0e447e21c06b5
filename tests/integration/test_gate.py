"""The launch gate against a real swtpm: it allows what policy allows, launches exactly the
bytes it measured, and denies (never running the launcher) on every failure."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tboot_py.audit.records import verify_chain
from tboot_py.tpm.swtpm import Swtpm
from tests.conftest import CliResult, run_cli

pytestmark = pytest.mark.integration


@dataclass
class Setup:
    tpm: Swtpm
    dir: Path
    kernel: Path
    initrd: Path
    policy: Path  # signed
    key: Path
    pub: Path
    state: Path
    marker: Path  # the launcher writes here

    def launch(self, *extra: str, policy: Path | None = None, trust: bool = True, kernel: Path | None = None,
               launcher: list[str] | None = None, in_process: bool = False) -> CliResult:
        """Run the gate as a real process (it execs the launcher), or in-process with --dry-run."""
        argv = ["launch", "--policy", str(policy or self.policy), "--tpm", self.tpm.tcti, "--state", str(self.state),
                "--kernel", str(kernel or self.kernel), "--initrd", str(self.initrd), "--cmdline", "console=hvc0"]
        if trust:
            argv += ["--trust-key", str(self.pub)]
        argv += list(extra)
        cmd = launcher or ["sh", "-c", f'sha256sum "$TBOOT_PY_KERNEL" "$1" > {self.marker}', "sh", "{initrd}"]
        if in_process:
            return run_cli(*argv, "--dry-run")
        p = subprocess.run([sys.executable, "-m", "tboot_py", *argv, "--", *cmd], capture_output=True, text=True,
                           timeout=120, check=False)
        return CliResult(p.returncode, p.stdout, p.stderr)

    def launched(self) -> bool:
        return self.marker.exists()


def _ok(r: CliResult) -> CliResult:
    assert r.rc == 0, r.err
    return r


@pytest.fixture
def gate(swtpm: Swtpm, tmp_path: Path) -> Iterator[Setup]:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"a kernel image " * 4096)
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(bytes(range(256)) * 512)
    plain = tmp_path / "policy.toml"
    _ok(run_cli("policy", "init", str(plain)))
    _ok(run_cli("policy", "add", str(plain), "--component", "kernel", "--file", str(kernel), "--label", "k1"))
    _ok(run_cli("policy", "add", str(plain), "--component", "initrd", "--file", str(initrd), "--label", "i1"))
    _ok(run_cli("policy", "add", str(plain), "--component", "cmdline", "--cmdline", "console=hvc0"))
    key = tmp_path / "policy.key"
    _ok(run_cli("policy", "keygen", "-o", str(key)))
    signed = tmp_path / "policy.signed.json"
    _ok(run_cli("policy", "sign", str(plain), "--key", str(key), "-o", str(signed)))
    yield Setup(swtpm, tmp_path, kernel, initrd, signed, key, Path(str(key) + ".pub"), tmp_path / "state",
                tmp_path / "launched")


def _audit(s: Setup) -> list[dict[str, object]]:
    path = s.state / "audit.jsonl"
    verify_chain(path)
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_allowed_launch_runs_the_measured_bytes(gate: Setup) -> None:
    r = gate.launch()
    assert r.rc == 0, r.err
    assert gate.launched()
    lines = gate.marker.read_text().split()
    assert lines[0] == hashlib.sha256(gate.kernel.read_bytes()).hexdigest()
    assert lines[2] == hashlib.sha256(gate.initrd.read_bytes()).hexdigest()
    assert lines[1].startswith("/proc/self/fd/") and lines[3].startswith("/proc/self/fd/")
    rec = _audit(gate)[-1]
    assert rec["decision"] == "allow"
    assert rec["policy_sha256"] == hashlib.sha256(gate.policy.read_bytes()).hexdigest()
    # A second launch in the same boot appends to the same log and still verifies.
    gate.marker.unlink()
    assert gate.launch().rc == 0 and gate.launched()
    assert [x["decision"] for x in _audit(gate)] == ["allow", "allow"]


def test_toctou_replacing_the_file_after_measurement_changes_nothing(gate: Setup) -> None:
    original = hashlib.sha256(gate.kernel.read_bytes()).hexdigest()
    # The launcher runs after measurement: it swaps the file the user named for another,
    # then hashes what it was handed. It must still get the measured bytes.
    # (A script file: the gate refuses a launch command that names the original path itself.)
    script = gate.dir / "swap.sh"
    script.write_text(f'printf evil > {gate.kernel}; sha256sum {gate.kernel} "$TBOOT_PY_KERNEL" > {gate.marker}\n')
    r = gate.launch(launcher=["sh", str(script)])
    assert r.rc == 0, r.err
    first, _, handed, _ = gate.marker.read_text().split()
    assert first == hashlib.sha256(b"evil").hexdigest()
    assert handed == original


def test_tampered_initrd_is_refused_with_the_digests(gate: Setup) -> None:
    good_bytes = gate.initrd.read_bytes()
    data = bytearray(good_bytes)
    data[1000] ^= 0x01
    gate.initrd.write_bytes(bytes(data))
    r = gate.launch("--json")
    assert r.rc == 1
    assert not gate.launched()
    out = json.loads(r.out)
    assert out["allowed"] is False
    failed = [x for x in out["verdict"]["reasons"] if not x["passed"] and x.get("component") == "initrd"]
    assert failed, out
    reason = failed[0]
    bank = reason["bank"]
    assert reason["actual"] == hashlib.new(bank, bytes(data)).hexdigest()
    assert any(e.startswith(hashlib.new(bank, good_bytes).hexdigest()) for e in reason["expected"])
    assert _audit(gate)[-1]["decision"] == "deny"


def _sabotage_policy(s: Setup, how: str) -> Path:
    p = s.dir / f"bad-{how}.json"
    if how == "unreadable":
        return s.dir / "missing-policy.json"
    if how == "invalid":
        p.write_text('{"version": 1, "rules": [{"type": "reference", "component": "kernel"}]}')
    elif how == "bad-signature":
        env = json.loads(s.policy.read_text())
        sig = bytearray(env["signatures"][0]["sig"].encode())
        sig[5] = ord("A") if sig[5] != ord("A") else ord("B")
        env["signatures"][0]["sig"] = sig.decode()
        p.write_text(json.dumps(env))
    elif how == "tampered-payload":
        import base64
        env = json.loads(s.policy.read_text())
        doc = json.loads(base64.b64decode(env["payload"]))
        doc["mode"] = "nonfatal"
        env["payload"] = base64.b64encode(json.dumps(doc).encode()).decode()
        p.write_text(json.dumps(env))
    elif how == "unsigned":
        p = s.dir / "policy.toml"
    return p


@pytest.mark.parametrize(
    ("how", "code"),
    [("unreadable", 2), ("invalid", 2), ("unsigned", 1), ("bad-signature", 1), ("tampered-payload", 1)],
)
def test_bad_policy_denies(gate: Setup, how: str, code: int) -> None:
    # An invalid policy is an input error when no trust key is configured (with one, it is
    # first of all unsigned, which is a verification failure).
    r = gate.launch(policy=_sabotage_policy(gate, how), trust=how != "invalid")
    assert r.rc == code, (r.rc, r.err)
    assert not gate.launched()
    assert "Traceback" not in r.err
    assert _audit(gate)[-1]["decision"] == "deny"


def test_wrong_trust_key_denies(gate: Setup) -> None:
    other = gate.dir / "other.key"
    _ok(run_cli("policy", "keygen", "--type", "ecdsa-p256", "-o", str(other)))
    r = run_cli("launch", "--policy", str(gate.policy), "--trust-key", str(other) + ".pub", "--tpm", gate.tpm.tcti,
                "--state", str(gate.state), "--kernel", str(gate.kernel), "--dry-run")
    assert "signature" in r.err
    assert r.rc == 1, r.err
    # Rotation: with both keys trusted the same policy is accepted.
    r2 = gate.launch("--trust-key", str(other) + ".pub")
    assert r2.rc == 0, r2.err


def test_missing_trust_key_denies(gate: Setup) -> None:
    r = run_cli("launch", "--policy", str(gate.policy), "--trust-key", str(gate.dir / "nope.pub"), "--tpm",
                gate.tpm.tcti, "--state", str(gate.state), "--kernel", str(gate.kernel), "--dry-run")
    assert r.rc == 2 and "nope.pub" in r.err and "Traceback" not in r.err


def test_missing_artifact_denies(gate: Setup) -> None:
    r = gate.launch(kernel=gate.dir / "nope")
    assert r.rc == 2 and not gate.launched()
    assert "nope" in r.err


def test_unavailable_tpm_denies(gate: Setup) -> None:
    gate.tpm.stop()
    r = gate.launch()
    assert r.rc == 2 and not gate.launched()
    assert _audit(gate)[-1]["decision"] == "deny"


def test_tpm_failing_midway_denies(gate: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    from tboot_py.errors import TPMError
    from tboot_py.tpm.esapi import EsapiTPM

    real = EsapiTPM.extend
    calls = []

    def flaky(self: EsapiTPM, pcr: int, digests: dict[str, bytes]) -> None:
        calls.append(pcr)
        if len(calls) == 2:
            raise TPMError("injected: TPM stopped answering", rc=0x101)
        real(self, pcr, digests)

    monkeypatch.setattr(EsapiTPM, "extend", flaky)
    r = gate.launch(in_process=True)
    assert r.rc == 3 and not gate.launched()
    assert "injected" in r.err


def test_corrupted_log_denies(gate: Setup) -> None:
    log = gate.dir / "log.bin"
    assert gate.launch("--log", str(log)).rc == 0
    gate.marker.unlink()
    log.write_bytes(log.read_bytes()[:-3])
    r = gate.launch("--log", str(log))
    assert r.rc == 2 and not gate.launched()
    assert "offset" in r.err


def test_pcr_extended_behind_the_logs_back_denies(gate: Setup) -> None:
    assert gate.launch().rc == 0
    gate.marker.unlink()
    subprocess.run(["tpm2_pcrextend", "-T", gate.tpm.tcti, "9:sha256=" + "11" * 32 + ",sha1=" + "22" * 20
                    + ",sha384=" + "33" * 48], check=True, capture_output=True)
    r = gate.launch()
    assert r.rc == 1 and not gate.launched()
    assert "PCR 9" in r.err and "quote" in r.err and "replay" in r.err


def test_expired_reference_value_denies(gate: Setup) -> None:
    plain = gate.dir / "expired.toml"
    _ok(run_cli("policy", "init", str(plain)))
    _ok(run_cli("policy", "add", str(plain), "--component", "kernel", "--file", str(gate.kernel),
                "--label", "old", "--expires", "2020-01-01"))
    r = gate.launch(policy=plain, trust=False)
    assert r.rc == 1 and not gate.launched()
    assert "expired" in r.err


def test_nonfatal_mode_allows_and_records(gate: Setup) -> None:
    plain = gate.dir / "audit-only.toml"
    _ok(run_cli("policy", "init", str(plain), "--mode", "nonfatal"))
    _ok(run_cli("policy", "add", str(plain), "--component", "kernel", "--file", str(gate.initrd), "--label", "wrong"))
    r = gate.launch(policy=plain, trust=False)
    assert r.rc == 0 and gate.launched()
    rec = _audit(gate)[-1]
    assert rec["decision"] == "allow"
    assert any(not x["passed"] for x in rec["verdict"]["reasons"])  # type: ignore[index, union-attr]


def test_dry_run_decides_without_launching(gate: Setup) -> None:
    r = gate.launch("--dry-run")
    assert r.rc == 0 and not gate.launched()


def _fake_firmware(s: Setup) -> Path:
    """Events firmware and a boot loader logged before the OS (PCR 4, 7 and 9), really
    extended, with the EV_SEPARATORs the PFP requires on PCR 4 and 7 (3.3.4.2)."""
    from tboot_py import algorithms
    from tboot_py.eventlog import NewEvent, append_events
    from tboot_py.tpm import open_tpm

    fw = s.dir / "binary_bios_measurements"
    tpm = open_tpm(s.tpm.tcti)
    try:
        banks = tpm.banks()
        evs = []
        sep = b"\x00\x00\x00\x00"
        for pcr, etype, data in ((4, 0x04, sep), (4, 0x0D, b"bootx64.efi"), (7, 0x0D, b"SecureBoot=0"),
                                 (7, 0x04, sep), (9, 0x0D, b"grub: /boot/vmlinuz")):
            digests = {b.name: b.digest(data) for b in banks}
            tpm.extend(pcr, digests)
            evs.append(NewEvent(pcr, etype, digests, data))
        append_events(fw, evs, banks)
        assert {b.name for b in banks} == {a.name for a in algorithms.DEFAULT_BANKS}
    finally:
        tpm.close()
    return fw


def test_firmware_log_prefix_replays_with_ours(gate: Setup) -> None:
    fw = _fake_firmware(gate)
    # Without the firmware log, PCR 9 holds a boot loader's extend the gate cannot explain.
    assert gate.launch().rc == 1 and not gate.launched()
    r = gate.launch("--firmware-log", str(fw))
    assert r.rc == 0, r.err
    assert gate.launched()


def test_firmware_log_that_lies_denies(gate: Setup) -> None:
    fw = _fake_firmware(gate)
    data = bytearray(fw.read_bytes())
    data[-1] ^= 0x20  # the PCR 9 event's text no longer matches... and neither does a digest:
    idx = data.find(b"bootx64.efi") - 4 - 48 - 2 - 1
    data[idx] ^= 0xFF  # flip a byte of the PCR 4 event's sha384 digest
    fw.write_bytes(bytes(data))
    r = gate.launch("--firmware-log", str(fw))
    assert r.rc == 1 and not gate.launched()
    assert "PCR 4" in r.err


def test_tboot_pcr_mapping(gate: Setup) -> None:
    plain = gate.dir / "tboot.toml"
    _ok(run_cli("policy", "init", str(plain)))
    _ok(run_cli("policy", "add", str(plain), "--component", "kernel", "--file", str(gate.kernel),
                "--kind", "tboot-module", "--cmdline", "console=hvc0"))
    _ok(run_cli("policy", "add", str(plain), "--component", "initrd", "--file", str(gate.initrd),
                "--kind", "tboot-module", "--cmdline", ""))
    r = gate.launch("--pcr-map", "tboot", "--json", policy=plain, trust=False)
    assert r.rc == 0, r.err
    assert gate.launched()
    pcrs = json.loads(run_cli("pcrs", "--tpm", gate.tpm.tcti, "--pcr", "18,19", "--json").out)["pcrs"]["sha256"]
    assert pcrs["18"] == "ff" * 32 and pcrs["19"] != "ff" * 32


def _fake_firmware_with_unextended_event(s: Setup, pcr: int, text: bytes) -> Path:
    """The boot loader's real events, then one on ``pcr`` that the TPM never saw."""
    from tboot_py.eventlog import NewEvent, append_events
    from tboot_py.tpm import open_tpm

    fw = _fake_firmware(s)
    tpm = open_tpm(s.tpm.tcti)
    try:
        banks = tpm.banks()
    finally:
        tpm.close()
    append_events(fw, [NewEvent(pcr, 0x0D, {b.name: b.digest(text) for b in banks}, text)], banks)
    return fw


def test_unverified_firmware_events_cannot_satisfy_an_events_rule(gate: Setup) -> None:
    # PCR 14 is outside what the gate replays against its quote (PCR 0-7 and its own), so an
    # event claimed there is unverified and must not count for a rule.
    fw = _fake_firmware_with_unextended_event(gate, 14, b"MokListTrusted ok")
    digest = hashlib.sha256(gate.kernel.read_bytes()).hexdigest()
    initrd = hashlib.sha256(gate.initrd.read_bytes()).hexdigest()
    plain = gate.dir / "events.toml"
    plain.write_text(
        'version = 1\nmode = "halt"\n'
        f'[[rules]]\ntype = "reference"\ncomponent = "kernel"\n'
        f'values = [{{label = "k1", digests = {{sha256 = "{digest}"}}}}]\n'
        f'[[rules]]\ntype = "reference"\ncomponent = "initrd"\n'
        f'values = [{{label = "i1", digests = {{sha256 = "{initrd}"}}}}]\n'
        '[[rules]]\ntype = "reference"\ncomponent = "cmdline"\nvalues = [{label = "c", cmdline = "console=hvc0"}]\n'
        '[[rules]]\ntype = "events"\nrequire = [{pcr = 14, data_contains = "MokListTrusted ok"}]\n')
    r = gate.launch("--firmware-log", str(fw), policy=plain, trust=False)
    assert r.rc == 1, r.err
    assert not gate.launched()
    assert "not backed by the verified quote" in r.err
    # A forbid rule on such a PCR cannot pass by default either.
    forbid = plain.read_text().replace("require = [{pcr = 14,", "forbid = [{pcr = 14,")
    plain.write_text(forbid.replace("MokListTrusted ok", "anything"))
    r = gate.launch("--firmware-log", str(fw), policy=plain, trust=False)
    assert r.rc == 1 and not gate.launched(), r.err
    plain.write_text(forbid)
    # The same rule on a verified PCR (the boot loader's PCR 4 event) is satisfied.
    plain.write_text(plain.read_text().replace('forbid = [{pcr = 14, data_contains = "MokListTrusted ok"',
                                               'require = [{pcr = 4, data_contains = "bootx64.efi"'))
    r = gate.launch("--firmware-log", str(fw), policy=plain, trust=False)
    assert r.rc == 0, r.err
    assert gate.launched()


def test_state_directory_is_private_whatever_the_umask(gate: Setup) -> None:
    import os
    import stat

    old = os.umask(0)
    try:
        r = gate.launch(in_process=True)
    finally:
        os.umask(old)
    assert r.rc == 0, r.err
    # The directories are private; the gate's own files in them are not writable by others.
    files = [*gate.state.glob("ak.*"), *gate.state.glob("audit.jsonl*")]
    assert len(files) == 5
    for p in (gate.state, gate.state / "logs", *files):
        mode = stat.S_IMODE(p.stat().st_mode)
        assert not mode & (stat.S_IWOTH | stat.S_IWGRP), (p, oct(mode))


def test_artifact_the_policy_does_not_mention_is_refused(gate: Setup) -> None:
    plain = gate.dir / "kernel-only.toml"
    _ok(run_cli("policy", "init", str(plain)))
    _ok(run_cli("policy", "add", str(plain), "--component", "kernel", "--file", str(gate.kernel)))
    _ok(run_cli("policy", "add", str(plain), "--component", "cmdline", "--cmdline", "console=hvc0"))
    r = gate.launch(policy=plain, trust=False)  # the initrd is launched, but no rule names it
    assert r.rc == 1 and not gate.launched()
    assert "no reference rule for the initrd" in r.err


def test_world_writable_state_directory_is_refused(gate: Setup) -> None:
    gate.state.mkdir(mode=0o700)
    gate.state.chmod(0o777)
    r = gate.launch()
    assert r.rc == 2 and not gate.launched()
    assert "writable by nobody else" in r.err


def test_gate_evidence_reverifies_remotely_with_policy(gate: Setup) -> None:
    """The same verifier serves remote attestation: the gate's evidence, checked later with
    `tboot-py verify --policy`, gives the same verdict; the audit record holds the nonce."""
    evidence = gate.dir / "evidence.json"
    assert gate.launch("--evidence-out", str(evidence)).rc == 0
    nonce = _audit(gate)[-1]["nonce"]
    assert isinstance(nonce, str) and len(nonce) == 64
    ak = str(gate.state / "ak.json")
    base = ["verify", str(evidence), "--ak", ak, "--nonce", nonce, "--json"]
    ok = run_cli(*base, "--policy", str(gate.policy), "--trust-key", str(gate.pub))
    assert ok.rc == 0, ok.err
    out = json.loads(ok.out)
    assert out["verified"] is True and out["allowed"] is True
    comps = {r["component"] for r in out["verdict"]["reasons"] if r["passed"]}
    assert {"kernel", "initrd", "cmdline"} <= comps
    # A policy for another initrd: the evidence still verifies, the appraisal denies.
    other = gate.dir / "other.toml"
    _ok(run_cli("policy", "init", str(other)))
    _ok(run_cli("policy", "add", str(other), "--component", "kernel", "--file", str(gate.kernel)))
    _ok(run_cli("policy", "add", str(other), "--component", "initrd", "--file", str(gate.kernel)))
    _ok(run_cli("policy", "add", str(other), "--component", "cmdline", "--cmdline", "console=hvc0"))
    bad = run_cli(*base, "--policy", str(other))
    assert bad.rc == 1 and json.loads(bad.out)["allowed"] is False
    # A different nonce is a replay: not verified at all.
    stale = run_cli("verify", str(evidence), "--ak", ak, "--nonce", "00" * 32, "--policy", str(gate.policy),
                    "--trust-key", str(gate.pub))
    assert stale.rc == 1 and "nonce" in (stale.out + stale.err).lower()


def test_launch_command_naming_the_original_file_is_refused_before_measuring(gate: Setup) -> None:
    """The launcher would open the file by path again, not the measured copy: refused before
    anything is measured or extended (no audit record, no launch)."""
    link = gate.dir / "k-link"
    link.symlink_to(gate.kernel)
    for cmd in (["sh", "-c", "true", str(gate.kernel)], ["true", f"file={link},if=virtio"]):
        r = gate.launch(launcher=cmd)
        assert r.rc == 2 and "original kernel" in r.err, r.err
        assert not gate.launched() and not (gate.state / "audit.jsonl").exists()


def test_command_lines_are_bound_to_their_module(gate: Setup) -> None:
    """A command line without its module would be measured on its own (or, with the tboot
    mapping, nowhere) yet handed to the launcher: refused before anything is measured. The
    hypervisor's command line is its own component: a policy without a rule for it denies."""
    before = _pcr9(gate)
    r = run_cli("launch", "--policy", str(gate.policy), "--trust-key", str(gate.pub), "--tpm", gate.tpm.tcti,
                "--state", str(gate.state), "--initrd", str(gate.initrd), "--cmdline", "console=hvc0", "--dry-run")
    assert r.rc == 2 and "give --kernel too" in r.err
    r = gate.launch("--hypervisor-cmdline", "console=com1", in_process=True)
    assert r.rc == 2 and "give --hypervisor too" in r.err
    assert _pcr9(gate) == before  # nothing was extended
    xen = gate.dir / "xen.gz"
    xen.write_bytes(b"a hypervisor " * 1000)
    plain = gate.dir / "with-xen.toml"
    _ok(run_cli("policy", "init", str(plain)))
    for args in (["--component", "hypervisor", "--file", str(xen)],
                 ["--component", "kernel", "--file", str(gate.kernel)],
                 ["--component", "initrd", "--file", str(gate.initrd)],
                 ["--component", "cmdline", "--cmdline", "console=hvc0"]):
        _ok(run_cli("policy", "add", str(plain), *args))
    r = gate.launch("--hypervisor", str(xen), "--hypervisor-cmdline", "console=com1", policy=plain, trust=False,
                    in_process=True)
    assert r.rc == 1 and "no reference rule for the hypervisor-cmdline" in r.err
    _ok(run_cli("policy", "add", str(plain), "--component", "hypervisor-cmdline", "--cmdline", "console=com1"))
    r = gate.launch("--hypervisor", str(xen), "--hypervisor-cmdline", "console=com1", policy=plain, trust=False,
                    in_process=True)
    assert r.rc == 0, r.err


def _pcr9(s: Setup) -> str:
    return run_cli("pcrs", "--tpm", s.tpm.tcti, "--pcr", "9", "--json").out
