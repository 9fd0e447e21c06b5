"""Every file argument of every command, given a FIFO, /dev/zero or /dev/urandom: the command
ends within 5 s with exit 2, a one-line error naming the file, and a peak RSS under 200 MiB.
The CLI runs as a real process; its peak RSS comes from wait4(2)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tboot_py.tpm.swtpm import Swtpm
from tests.conftest import CORPUS, run_cli, start_swtpm

pytestmark = pytest.mark.integration

TIMEOUT = 5.0
MAX_RSS_KIB = 200 * 1024
NONCE = "11" * 16


@dataclass(frozen=True)
class Files:
    tpm: Swtpm
    dir: Path
    kernel: Path
    policy: Path
    signed: Path
    key: Path
    pub: Path
    log: Path
    pcrs: Path
    evidence: Path
    ak: Path
    vlp: Path
    audit: Path
    xl: Path
    gate_toml: Path
    msg: Path
    sig: Path
    ca: Path
    golden: Path


def _ok(*argv: str) -> None:
    r = run_cli(*argv)
    assert r.rc == 0, (argv, r.err)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, ca_dir: Path) -> Iterator[Files]:
    d = tmp_path_factory.mktemp("hostile")
    os.chmod(d, 0o700)
    tpm = start_swtpm(d / "swtpm", ca_dir)
    try:
        kernel = d / "vmlinuz"
        kernel.write_bytes(b"kernel" * 1000)
        policy = d / "policy.toml"
        _ok("policy", "init", str(policy))
        _ok("policy", "add", str(policy), "--component", "kernel", "--file", str(kernel))
        key = d / "k.pem"
        _ok("policy", "keygen", "-o", str(key))
        signed = d / "signed.json"
        _ok("policy", "sign", str(policy), "--key", str(key), "-o", str(signed))
        vlp = d / "p.vlp"
        vlp_policy = d / "vlp.toml"
        vlp_policy.write_text('version = 1\n[[rules]]\ntype = "tboot-vlp"\nbank = "sha256"\ncontrol = 0\n'
                              '[[rules.entries]]\nmod_num = 0\npcr = 18\nhash_type = "any"\nhashes = []\n')
        _ok("policy", "export-vlp", str(vlp_policy), "-o", str(vlp))
        log = next(p for p in sorted(CORPUS.rglob("*")) if p.is_file() and p.suffix in ("", ".bin")
                   and run_cli("log", "show", str(p), "--json").rc == 0)
        pcrs = d / "pcrs.json"
        r = run_cli("log", "replay", str(log), "--json")
        pcrs.write_text(r.out)
        state = d / "state"
        evidence = d / "evidence.json"
        _ok("attest", "quote", "--tpm", tpm.tcti, "--state", str(state), "--pcrs", "sha256:0-7", "--nonce", NONCE,
            "--out", str(evidence), "--export-tpm2-tools", str(d / "t2"), "--ek-cert")
        golden = d / "golden.log"
        _ok("extend", "--tpm", tpm.tcti, "--log", str(golden), "--kernel", str(kernel))
        audit = d / "audit.jsonl"
        from tboot_py.audit.records import append_record

        append_record(audit, {"decision": "deny"})
        xl = d / "guest.cfg"
        xl.write_text(f'kernel = "{kernel}"\ncmdline = "console=hvc0"\n')
        gate_toml = d / "gate.toml"
        gate_toml.write_text(f'policy = "{policy}"\ntpm = "{tpm.tcti}"\nstate = "{d / "gstate"}"\n')
        yield Files(tpm, d, kernel, policy, signed, key, Path(f"{key}.pub"), log, pcrs, evidence,
                    state / "ak.json", vlp, audit, xl, gate_toml, d / "t2" / "quote.msg", d / "t2" / "quote.sig",
                    ca_dir, golden)
    finally:
        tpm.stop()


def _cases(f: Files) -> dict[str, list[str]]:
    """Command lines with ``H`` where the hostile file goes (every input and output file)."""
    t = f.tpm.tcti
    out = str(f.dir / "out")
    launch = ["launch", "--tpm", t, "--state", str(f.dir / "lstate"), "--dry-run"]
    return {
        "log show": ["log", "show", "H"],
        "log replay": ["log", "replay", "H"],
        "log replay --pcrs": ["log", "replay", str(f.log), "--pcrs", "H"],
        "log verify": ["log", "verify", "H", "--pcrs", str(f.pcrs)],
        "log verify --pcrs": ["log", "verify", str(f.log), "--pcrs", "H"],
        "log diff a": ["log", "diff", "H", str(f.log)],
        "log diff b": ["log", "diff", str(f.log), "H"],
        "log check": ["log", "check", "H"],
        "log state": ["log", "state", "H"],
        "extend --kernel": ["extend", "--tpm", t, "--log", str(f.dir / "x.log"), "--kernel", "H"],
        "extend --log": ["extend", "--tpm", t, "--log", "H", "--kernel", str(f.kernel)],
        "launch --policy": [*launch, "--policy", "H", "--kernel", str(f.kernel)],
        "launch --trust-key": [*launch, "--policy", str(f.signed), "--trust-key", "H", "--kernel", str(f.kernel)],
        "launch --kernel": [*launch, "--policy", str(f.policy), "--kernel", "H"],
        "launch --initrd": [*launch, "--policy", str(f.policy), "--kernel", str(f.kernel), "--initrd", "H"],
        "launch --hypervisor": [*launch, "--policy", str(f.policy), "--kernel", str(f.kernel), "--hypervisor", "H"],
        "launch --firmware-log": [*launch, "--policy", str(f.policy), "--kernel", str(f.kernel),
                                  "--firmware-log", "H"],
        "launch --log": [*launch, "--policy", str(f.policy), "--kernel", str(f.kernel), "--log", "H"],
        "launch --audit-log": [*launch, "--policy", str(f.policy), "--kernel", str(f.kernel), "--audit-log", "H"],
        "launch --evidence-out": [*launch, "--policy", str(f.policy), "--kernel", str(f.kernel),
                                  "--evidence-out", "H"],
        "hook xl-create": ["hook", "xl-create", "H"],
        "audit verify": ["audit", "verify", "H"],
        "audit show": ["audit", "show", "H"],
        "audit report": ["audit", "report", "H"],
        "audit report -o": ["audit", "report", str(f.audit), "-o", "H"],
        "measure": ["measure", "H"],
        "policy add --file": ["policy", "add", str(f.policy), "--component", "kernel", "--file", "H"],
        "policy add": ["policy", "add", "H", "--component", "kernel", "--file", str(f.kernel)],
        "policy show": ["policy", "show", "H"],
        "policy show --trust-key": ["policy", "show", str(f.signed), "--trust-key", "H"],
        "policy from-log": ["policy", "from-log", "H", "-o", out],
        "policy from-log -o": ["policy", "from-log", str(f.log), "-o", "H"],
        "policy predict --log": ["policy", "predict", "--log", "H"],
        "policy predict --kernel": ["policy", "predict", "--log", str(f.golden), "--kernel", "H"],
        "policy keygen -o": ["policy", "keygen", "-o", "H"],
        "policy sign": ["policy", "sign", "H", "--key", str(f.key), "-o", out],
        "policy sign --key": ["policy", "sign", str(f.policy), "--key", "H", "-o", out],
        "policy sign -o": ["policy", "sign", str(f.policy), "--key", str(f.key), "-o", "H"],
        "policy verify": ["policy", "verify", "H", "--trust-key", str(f.pub)],
        "policy verify --trust-key": ["policy", "verify", str(f.signed), "--trust-key", "H"],
        "policy import-vlp": ["policy", "import-vlp", "H", "-o", out],
        "policy export-vlp": ["policy", "export-vlp", "H", "-o", out],
        "policy export-vlp -o": ["policy", "export-vlp", str(f.dir / "vlp.toml"), "-o", "H"],
        "attest quote --event-log": ["attest", "quote", "--tpm", t, "--state", str(f.ak.parent), "--pcrs",
                                     "sha256:0", "--nonce", NONCE, "--event-log", "fw=H", "--out", out],
        "attest quote --out": ["attest", "quote", "--tpm", t, "--state", str(f.ak.parent), "--pcrs", "sha256:0",
                               "--nonce", NONCE, "--out", "H"],
        "attest ek --ek-ca": ["attest", "ek", "--tpm", t, "--ek-ca", "H"],
        "verify": ["verify", "H", "--ak", str(f.ak), "--nonce", NONCE],
        "verify --ak": ["verify", str(f.evidence), "--ak", "H", "--nonce", NONCE],
        "verify --ek-ca": ["verify", str(f.evidence), "--ak", str(f.ak), "--nonce", NONCE, "--ek-ca", "H"],
        "verify --policy": ["verify", str(f.evidence), "--ak", str(f.ak), "--nonce", NONCE, "--policy", "H"],
        "verify --trust-key": ["verify", str(f.evidence), "--ak", str(f.ak), "--nonce", NONCE, "--policy",
                               str(f.signed), "--trust-key", "H"],
        "ear verify --key": ["ear", "verify", "x.y.z", "--key", "H"],
        "ear verify @token": ["ear", "verify", "@H", "--key", str(f.pub)],
        "fleet --admin-token-file": ["fleet", "hosts", "--server", "http://127.0.0.1:1", "--admin-token-file", "H"],
        "fleet webhook add --secret-file": ["fleet", "webhook", "add", "http://127.0.0.1:1/hook", "--server",
                                            "http://127.0.0.1:1", "--secret-file", "H"],
        "quote verify --ak": ["quote", "verify", "--ak", "H", "-m", str(f.msg), "-s", str(f.sig), "-q", NONCE,
                              "-f", str(f.msg.with_name("quote.pcrs"))],
        "quote verify -m": ["quote", "verify", "--ak", str(f.ak), "-m", "H", "-s", str(f.sig), "-q", NONCE,
                            "-f", str(f.msg.with_name("quote.pcrs"))],
        "quote verify -s": ["quote", "verify", "--ak", str(f.ak), "-m", str(f.msg), "-s", "H", "-q", NONCE,
                            "-f", str(f.msg.with_name("quote.pcrs"))],
        "quote verify -f": ["quote", "verify", "--ak", str(f.ak), "-m", str(f.msg), "-s", str(f.sig), "-q", NONCE,
                            "-f", "H"],
    }


def _run(argv: list[str], env: dict[str, str] | None = None) -> tuple[int | None, str, int, float]:
    """(exit code or None on timeout, stderr, peak RSS in KiB, seconds)."""
    start = time.monotonic()
    p = subprocess.Popen([sys.executable, "-m", "tboot_py", *argv], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    assert p.stderr is not None
    os.set_blocking(p.stderr.fileno(), False)
    err = b""
    while True:
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        chunk = p.stderr.read() or b""
        err += chunk
        if pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            err += p.stderr.read() or b""
            return p.returncode, err.decode(errors="replace"), usage.ru_maxrss, time.monotonic() - start
        if time.monotonic() - start > TIMEOUT:
            p.kill()
            p.wait()
            return None, err.decode(errors="replace"), 0, time.monotonic() - start
        time.sleep(0.02)


@pytest.fixture(scope="module")
def fifo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fifo") / "fifo"
    os.mkfifo(path)
    return path


def _hostile(kind: str, fifo: Path) -> str:
    return str(fifo) if kind == "fifo" else f"/dev/{kind}"


def _check(argv: list[str], hostile: str, env: dict[str, str] | None = None) -> None:
    rc, err, rss, _secs = _run(argv, env)
    assert rc is not None, f"{argv} still running after {TIMEOUT} s"
    assert rc == 2, (argv, rc, err)
    assert rss < MAX_RSS_KIB, (argv, rss)
    assert "Traceback" not in err, (argv, err)
    lines = err.strip().splitlines()
    if argv[0] == "launch":  # the gate's report: "DENIED (exit 2):" and one line per reason
        assert lines[0].startswith("DENIED (exit 2)") and len(lines) == 2, (argv, err)
        lines = lines[1:]
    assert len(lines) == 1, (argv, err)
    assert hostile in lines[0], (argv, err)


@pytest.mark.parametrize("kind", ["fifo", "zero", "urandom"])
def test_every_file_argument_refuses_fifos_and_devices(files: Files, fifo: Path, kind: str) -> None:
    hostile = _hostile(kind, fifo)
    failures = []
    for name, argv in _cases(files).items():
        real = [a.replace("H", hostile) if a in ("H", "fw=H", "@H") else a for a in argv]
        try:
            _check(real, hostile)
        except AssertionError as e:
            failures.append(f"{name}: {e}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("kind", ["fifo", "zero", "urandom"])
def test_gate_configuration_refuses_fifos_and_devices(files: Files, fifo: Path, kind: str) -> None:
    hostile = _hostile(kind, fifo)
    env = dict(os.environ, TBOOT_PY_GATE_CONFIG=hostile)
    _check(["hook", "xl-create", str(files.xl)], hostile, env)


def test_an_oversized_regular_file_is_refused_before_it_is_read(files: Files) -> None:
    big = files.dir / "big.json"
    with big.open("wb") as f:
        f.truncate(8 * 2**30)  # sparse: 8 GiB that would take long to read
    for argv in (["policy", "show", str(big)], ["verify", str(big), "--ak", str(files.ak), "--nonce", NONCE],
                 ["quote", "verify", "--ak", str(big), "-m", str(files.msg), "-s", str(files.sig), "-q", NONCE,
                  "-f", str(files.msg.with_name("quote.pcrs"))],
                 ["audit", "verify", str(big)], ["log", "show", str(big)]):
        _check(argv, str(big))
    big.unlink()


#: File arguments where ``-`` is not standard input: outputs, files the command rewrites in
#: place (logs it appends to, a policy it edits), directories, what the launch gate measures and
#: hands to the launcher (which opens it again by name), the hook's configuration (named by the
#: toolstack), and artifacts measured for a policy by name.
NOT_STDIN = {"extend --kernel", "extend --log", "launch --kernel", "launch --initrd", "launch --hypervisor",
             "launch --log", "launch --audit-log", "launch --evidence-out", "audit report -o", "policy add",
             "policy from-log -o", "policy keygen -o", "policy sign -o", "policy export-vlp -o", "attest quote --out",
             "attest ek --ek-ca", "verify --ek-ca", "ear verify @token", "hook xl-create", "policy add --file",
             "policy predict --kernel"}


def test_every_input_file_argument_takes_dash_for_standard_input(files: Files) -> None:
    """Each command gets bytes it cannot use on standard input: it must read them (and fail on
    their content, or on an unreachable server: exit 3), not look for a file named ``-``."""
    env = dict(os.environ, TBOOT_PY_ADMIN_TOKEN="t")
    failures = []
    for name, argv in _cases(files).items():
        if name in NOT_STDIN:
            continue
        real = [a.replace("H", "-") if a in ("H", "fw=H") else a for a in argv]
        r = subprocess.run([sys.executable, "-m", "tboot_py", *real], input=b"\x00 not what a file holds\n",
                           capture_output=True, check=False, timeout=60, env=env)
        err = r.stderr.decode(errors="replace")
        if r.returncode not in (0, 1, 2, 3) or "Traceback" in err or "no such file" in err.lower():
            failures.append(f"{name}: exit {r.returncode}: {err.strip()}")
    assert not failures, "\n".join(failures)
