"""The gate never locks a machine out and never loses a record, against a real swtpm:
concurrent gates, a gate killed at every step between sealing and exec, an AK handle that
another tool holds, a TPM power cut, a full disk, names that are not UTF-8, and an audit
trail that is cut, emptied or rewritten."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tboot_py.audit.records import check_chain
from tboot_py.tpm.swtpm import Swtpm
from tests.conftest import CliResult, run_cli

pytestmark = pytest.mark.integration

CMDLINE = "console=hvc0"


@dataclass
class Gate:
    tpm: Swtpm
    dir: Path
    kernel: Path
    initrd: Path
    policy: Path
    state: Path

    @property
    def audit(self) -> Path:
        return self.state / "audit.jsonl"

    def argv(self, *extra: str, initrd: Path | None = None, state: Path | None = None) -> list[str]:
        return ["launch", "--policy", str(self.policy), "--tpm", self.tpm.tcti, "--state", str(state or self.state),
                "--kernel", str(self.kernel), "--initrd", str(initrd or self.initrd), "--cmdline", CMDLINE,
                *extra]

    def run(self, *extra: str, initrd: Path | None = None, env: dict[str, str] | None = None,
            launcher: tuple[str, ...] = ("true",), state: Path | None = None) -> CliResult:
        p = subprocess.run([sys.executable, "-m", "tboot_py", *self.argv(*extra, initrd=initrd, state=state),
                            "--", *launcher], capture_output=True, text=True, timeout=120, check=False,
                           env=env)
        return CliResult(p.returncode, p.stdout, p.stderr)

    def records(self) -> list[dict[str, object]]:
        assert check_chain(self.audit).ok
        return [json.loads(x) for x in self.audit.read_text().splitlines()]

    def pcrs(self) -> dict[str, dict[str, str]]:
        r = run_cli("pcrs", "--tpm", self.tpm.tcti, "--json")
        assert r.rc == 0, r.err
        out: dict[str, dict[str, str]] = json.loads(r.out)["pcrs"]
        return out

    def measured(self) -> dict[str, dict[str, str]]:
        """The PCRs except the audit anchor (PCR 15): every decision, a denial too, is anchored."""
        return {b: {i: v for i, v in regs.items() if i != "15"} for b, regs in self.pcrs().items()}

    def anchor_ok(self) -> CliResult:
        return run_cli("audit", "verify", str(self.audit), "--tpm", self.tpm.tcti)


def _ok(r: CliResult) -> CliResult:
    assert r.rc == 0, r.err
    return r


@pytest.fixture
def gate(swtpm: Swtpm, tmp_path: Path) -> Iterator[Gate]:
    os.chmod(tmp_path, 0o700)
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel bytes " * 2048)
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(bytes(range(256)) * 64)
    policy = tmp_path / "policy.toml"
    _ok(run_cli("policy", "init", str(policy)))
    _ok(run_cli("policy", "add", str(policy), "--component", "kernel", "--file", str(kernel)))
    _ok(run_cli("policy", "add", str(policy), "--component", "initrd", "--file", str(initrd)))
    _ok(run_cli("policy", "add", str(policy), "--component", "cmdline", "--cmdline", CMDLINE))
    yield Gate(swtpm, tmp_path, kernel, initrd, policy, tmp_path / "state")


def _bad_initrd(g: Gate, n: int) -> Path:
    p = g.dir / f"bad-initrd-{n}"
    data = bytearray(g.initrd.read_bytes())
    data[n] ^= 0xFF
    p.write_bytes(bytes(data))
    return p


def test_eight_concurrent_gates_serialise_and_later_launches_stay_allowed(gate: Gate) -> None:
    procs = []
    for n in range(8):
        initrd = gate.initrd if n == 3 else _bad_initrd(gate, n)
        procs.append(subprocess.Popen([sys.executable, "-m", "tboot_py", *gate.argv("--dry-run", initrd=initrd)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    codes = [p.wait(timeout=300) for p in procs]
    assert codes == [1, 1, 1, 0, 1, 1, 1, 1], [p.stderr.read() for p in procs if p.stderr]
    recs = gate.records()
    assert len(recs) == 8 and sum(r["decision"] == "allow" for r in recs) == 1
    assert _ok(gate.run()).rc == 0
    assert _ok(gate.run()).rc == 0
    _ok(gate.anchor_ok())


#: Every point between sealing the copies and exec: after sealing, after the journal,
#: after each of the three extends (kernel, initrd, command line), after the log append,
#: after the quote, after the audit record is written (before it is anchored)
#: and after it is anchored (just before exec).
CRASH_POINTS = ("sealed", "journal", "extend-0", "extend-1", "extend-2", "logged", "quoted", "audited",
                "anchored")


def test_a_gate_killed_at_any_step_leaves_a_state_the_next_run_completes(gate: Gate) -> None:
    _ok(gate.run())
    for point in CRASH_POINTS:
        env = dict(os.environ, TBOOT_PY_CRASH_AT=point)
        r = gate.run(env=env, launcher=("sh", "-c", f"touch {gate.dir / 'launched'}"))
        assert r.rc == -signal.SIGKILL, (point, r.rc, r.err)
        assert not (gate.dir / "launched").exists(), point
        after = gate.run()
        assert after.rc == 0, (point, after.err)
        _ok(gate.anchor_ok())
    recovered = [r["recovered"] for r in gate.records() if r.get("recovered")]
    notes = " ".join(str(x) for x in recovered)
    assert "rolled back" in notes  # killed after the journal, before any extend
    assert "were appended to the event log" in notes  # killed between extends
    assert "extended into PCR 15" in notes  # killed between the record and its anchor
    # After all that, the log replays to the TPM: `log verify` against the live PCRs.
    logs = sorted((gate.state / "logs").glob("*.log"))
    pcrs = gate.dir / "pcrs.json"
    pcrs.write_text(json.dumps({"pcrs": gate.pcrs()}))
    v = run_cli("log", "verify", str(logs[-1]), "--pcrs", str(pcrs))
    assert v.rc == 0, v.out + v.err


def test_ak_handle_clash_is_reported_before_any_pcr_moves(gate: Gate) -> None:
    # `tboot-py attest` took the handle the gate would use.
    _ok(run_cli("attest", "ak", "--tpm", gate.tpm.tcti, "--state", str(gate.dir / "attest"), "--handle",
                "0x81010003"))
    before = gate.measured()
    r = gate.run()
    assert r.rc == 2, r.err
    assert "0x81010003 is already in use" in r.err and "--handle" in r.err
    assert gate.measured() == before
    # With its own handle the gate runs; attest's default handle never clashes with it.
    _ok(run_cli("attest", "ak", "--tpm", gate.tpm.tcti, "--state", str(gate.dir / "attest2")))
    _ok(gate.run("--handle", "0x81010010"))
    _ok(gate.anchor_ok())


def test_a_tpm_power_cut_without_shutdown_does_not_block_the_gate(gate: Gate) -> None:
    _ok(gate.run())
    pid = int((gate.tpm.state_dir / "swtpm.pid").read_text())
    os.kill(pid, signal.SIGKILL)  # power lost: no TPM2_Shutdown
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        import time

        time.sleep(0.05)
    (gate.tpm.state_dir / "swtpm.pid").unlink(missing_ok=True)
    gate.tpm.start()
    ev = gate.dir / "evidence.json"
    r = gate.run("--evidence-out", str(ev))
    assert r.rc == 0, r.err
    from tboot_py.tpm import wire
    from tboot_py.tpm.evidence import parse_evidence

    attest = wire.parse_attest(parse_evidence(ev.read_bytes()).untrusted_attest)
    assert attest.clock_info.safe is False  # the case under test: swtpm reports the power cut
    _ok(gate.anchor_ok())


def test_non_utf8_names_and_arguments_are_recorded_escaped(gate: Gate) -> None:
    odd = Path(os.fsdecode(bytes(gate.dir) + b"/vmlinuz-\xff"))
    odd.write_bytes(gate.kernel.read_bytes())
    argv = [a if a != str(gate.kernel) else odd for a in gate.argv()]
    p = subprocess.run([sys.executable, "-m", "tboot_py", *argv, "--", "sh", "-c", "exit 0", os.fsdecode(b"\xfe")],
                       capture_output=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    rec = gate.records()[-1]
    assert rec["decision"] == "allow"
    assert "\\xfe" in rec["command"][-1]  # type: ignore[index]
    assert any("\\xff" in str(m["file"]) for m in rec["measurements"])  # type: ignore[index, union-attr]
    # A command line that is not UTF-8 is an input error before any PCR moves.
    before = gate.measured()
    bad = [os.fsdecode(b"console=\xff") if a == CMDLINE else a for a in gate.argv("--dry-run")]
    p = subprocess.run([sys.executable, "-m", "tboot_py", *bad], capture_output=True, timeout=120, check=False)
    assert p.returncode == 2, p.stderr
    assert gate.measured() == before


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir(mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(directory: Path, leave: int) -> Path:
    st = os.statvfs(directory)
    filler = directory / "filler"
    with filler.open("wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


def test_a_full_disk_denies_before_any_pcr_moves_and_never_tears_the_audit_log(gate: Gate, small_fs: Path) -> None:
    audit = small_fs / "audit.jsonl"
    _ok(gate.run("--audit-log", str(audit)))
    good = audit.read_bytes()
    _fill(small_fs, 0)
    before = gate.pcrs()
    r = gate.run("--audit-log", str(audit), launcher=("sh", "-c", f"touch {gate.dir / 'launched'}"))
    assert r.rc == 2, r.err
    assert "free space" in r.err and "No space left" in r.err  # checked first; the record could not be written
    assert not (gate.dir / "launched").exists()
    assert gate.pcrs() == before
    assert audit.read_bytes() == good  # not torn


def test_an_audit_record_that_cannot_be_written_is_an_error_and_the_log_is_unchanged(small_fs: Path) -> None:
    from tboot_py.audit.records import append_record
    from tboot_py.errors import InputError

    audit = small_fs / "audit.jsonl"
    append_record(audit, {"decision": "allow", "n": 1})
    good = audit.read_bytes()
    _fill(small_fs, 0)
    with pytest.raises(InputError, match="No space left"):
        append_record(audit, {"decision": "allow", "n": 2, "pad": "x" * 65536})
    assert audit.read_bytes() == good
    assert check_chain(audit).ok
    assert not [p for p in small_fs.iterdir() if p.name.endswith(".tmp")]


def test_a_cut_emptied_or_rewritten_trail_is_detected_by_its_anchor(gate: Gate) -> None:
    for _ in range(3):
        _ok(gate.run())
    _ok(gate.run("--dry-run"))
    ok = gate.anchor_ok()
    assert ok.rc == 0, ok.err
    head = gate.records()[-1]["hash"]
    original = gate.audit.read_bytes()
    lines = original.splitlines(keepends=True)

    from tboot_py.audit.records import record_hash

    def rewritten() -> bytes:
        prev, out = "0" * 64, []
        for raw in lines:
            rec = json.loads(raw)
            rec["reasons"] = ["rewritten"]
            rec["prev"] = prev
            rec["hash"] = record_hash(rec)
            prev = rec["hash"]
            out.append(json.dumps(rec, sort_keys=True, separators=(",", ":")).encode() + b"\n")
        return b"".join(out)

    for name, data in (("cut", b"".join(lines[:-1])), ("emptied", b""), ("rewritten", rewritten())):
        gate.audit.write_bytes(data)
        assert run_cli("audit", "verify", str(gate.audit)).rc == 0, name  # the chain alone cannot tell
        r = gate.anchor_ok()
        assert r.rc == 1 and "anchor" in r.err, (name, r.err)
        r = run_cli("audit", "verify", str(gate.audit), "--expect-head", str(head))
        assert r.rc == 1 and "expected head" in r.err, (name, r.err)
        # The gate refuses to add to a trail that does not match its anchor.
        before = gate.pcrs()
        assert gate.run().rc == 1
        assert gate.pcrs() == before
    gate.audit.write_bytes(original)
    _ok(gate.anchor_ok())
    _ok(run_cli("audit", "verify", str(gate.audit), "--expect-head", str(head)))
    # The dry run is recorded as such and is not a launch.
    shown = json.loads(_ok(run_cli("audit", "show", str(gate.audit), "--json")).out)["records"]
    assert [r["dry_run"] for r in shown] == [False, False, False, True]
    md = _ok(run_cli("audit", "report", str(gate.audit), "--format", "md")).out
    assert "| allowed (launches) | 3 |" in md and "| dry runs (not launches) | 1 |" in md


def test_a_tpm_with_no_room_for_the_ak_is_reported_before_any_pcr_moves(gate: Gate) -> None:
    tcti = gate.tpm.tcti
    ctx = gate.dir / "primary.ctx"
    for i in range(128):  # fill the TPM's NV with persistent objects until it refuses
        subprocess.run(["tpm2_createprimary", "-T", tcti, "-C", "o", "-G", "ecc", "-c", str(ctx)], check=True,
                       capture_output=True)
        r = subprocess.run(["tpm2_evictcontrol", "-T", tcti, "-C", "o", "-c", str(ctx), hex(0x81000100 + i)],
                           capture_output=True, text=True, check=False)
        subprocess.run(["tpm2_flushcontext", "-T", tcti, "-t"], capture_output=True, check=False)
        if r.returncode:
            assert "0x14B" in r.stderr.upper() or "insufficient space" in r.stderr
            break
    else:
        pytest.fail("the TPM never ran out of room")
    before = gate.measured()
    r = gate.run()
    assert r.rc == 2, r.err
    assert "no room" in r.err and "TPM_RC_NV_SPACE" in r.err and "--handle" in r.err
    assert gate.measured() == before
    # Evicting an unused persistent object makes room: the gate then runs.
    subprocess.run(["tpm2_evictcontrol", "-T", tcti, "-C", "o", "-c", "0x81000100"], check=True, capture_output=True)
    _ok(gate.run())
