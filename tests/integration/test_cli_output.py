"""Digests stay whole: at 80 columns on a terminal (a real pty) and in a pipe, every digest that
``--json`` reports appears unbroken on one line of the human output."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from tboot_py.tpm.swtpm import Swtpm

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
_HEX = re.compile(r"\b[0-9a-f]{40,}\b")


def _env(cols: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE")}
    env.update(COLUMNS=str(cols), LINES="50", TERM="xterm-256color", PYTHONPATH=str(REPO))
    return env


def run_tty(argv: list[str], cols: int = 80) -> tuple[int, str]:
    """Run ``tboot-py`` with stdout and stderr on a pseudo-terminal ``cols`` wide."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, cols, 0, 0))
    p = subprocess.Popen([sys.executable, "-m", "tboot_py", *argv], stdin=subprocess.DEVNULL, stdout=slave,
                         stderr=slave, env=_env(cols), close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            b = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not b:
            break
        chunks.append(b)
    os.close(master)
    rc = p.wait(timeout=120)
    return rc, _ANSI.sub("", b"".join(chunks).decode(errors="replace")).replace("\r\n", "\n")


def run_pipe(argv: list[str]) -> tuple[int, str]:
    r = subprocess.run([sys.executable, "-m", "tboot_py", *argv], capture_output=True, text=True,
                       env=_env(80), timeout=120, check=False)
    return r.returncode, r.stdout


def _digests(doc: object) -> set[str]:
    return set(_HEX.findall(json.dumps(doc)))


def _assert_whole(argv: list[str], digests: set[str]) -> None:
    assert digests
    for how, (rc, text) in (("terminal", run_tty(argv)), ("pipe", run_pipe(argv))):
        assert rc == 0, (how, text)
        lines = text.splitlines()
        for d in digests:
            assert any(d in line for line in lines), f"{how}: {d} not whole on one line of:\n{text}"
        if how == "pipe":
            assert "│" not in text and "━" not in text and "\x1b" not in text


@pytest.fixture
def corpus_log(corpus_dir: Path) -> Path:
    return corpus_dir / "logs" / "secboot__eventlog1_qemu_ovmf_sb.bin"


def test_measure_digests_whole(tmp_path: Path) -> None:
    f = tmp_path / "a file with a long name to fold.bin"
    f.write_bytes(b"x" * 4096)
    argv = ["measure", "--banks", "sha1,sha256,sha384,sha512", str(f)]
    _assert_whole(argv, _digests(json.loads(run_cli(*argv, "--json").out)))


def test_log_replay_digests_whole(corpus_log: Path) -> None:
    argv = ["log", "replay", str(corpus_log)]
    _assert_whole(argv, _digests(json.loads(run_cli(*argv, "--json").out)))


def test_pipe_is_one_record_per_line(corpus_log: Path, tmp_path: Path) -> None:
    rc, text = run_pipe(["log", "replay", str(corpus_log)])
    doc = json.loads(run_cli("log", "replay", str(corpus_log), "--json").out)["pcrs"]
    assert rc == 0 and text.splitlines() == [f"{b} {p} {v}" for b, regs in doc.items() for p, v in regs.items()]
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    rc, text = run_pipe(["measure", "--banks", "sha256", str(f)])
    assert text == f"sha256 {'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'} file 3 {f}\n"


def test_extend_pcrs_verify_digests_whole(swtpm: Swtpm, tmp_path: Path) -> None:
    k = tmp_path / "vmlinuz"
    k.write_bytes(b"kernel" * 1000)
    log = tmp_path / "log.bin"
    argv = ["extend", "--tpm", swtpm.tcti, "--log", str(log), "--kernel", str(k), "--cmdline", "console=ttyS0 ro"]
    doc = json.loads(run_cli(*argv, "--json").out)
    # Extending again moves the PCRs, so the terminal and pipe runs use their own logs; the
    # measurements (and so the digests shown) are the same each time.
    for how, runner in (("terminal", run_tty), ("pipe", run_pipe)):
        rc, text = runner([*argv[:4], str(tmp_path / f"{how}.bin"), *argv[5:]])
        assert rc == 0, text
        for d in _digests(doc):
            assert any(d in line for line in text.splitlines()), f"{how}: {d} broken in:\n{text}"

    argv = ["pcrs", "--tpm", swtpm.tcti, "--pcr", "0,9,16"]
    _assert_whole(argv, _digests(json.loads(run_cli(*argv, "--json").out)))

    state = tmp_path / "state"
    assert run_cli("attest", "ak", "--tpm", swtpm.tcti, "--state", str(state)).rc == 0
    ev = tmp_path / "ev.json"
    r = run_cli("attest", "quote", "--tpm", swtpm.tcti, "--state", str(state), "--pcrs", "sha256:0,9+sha384:9",
                "--nonce", "0a0b0c0d0e0f1011", "--out", str(ev))
    assert r.rc == 0, r.err
    argv = ["verify", str(ev), "--ak", str(state), "--nonce", "0a0b0c0d0e0f1011"]
    r = run_cli(*argv, "--json")
    assert r.rc == 0, r.err
    _assert_whole(argv, _digests(json.loads(r.out)["pcrs"]))
    rc, text = run_tty(argv)
    assert "verified" in text and "{" not in text and "[" not in text  # a table, no Python reprs
