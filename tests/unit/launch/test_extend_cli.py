"""Bad input to `tboot-py extend`, `measure` and `pcrs`: one line, exit 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli


@pytest.mark.parametrize(
    "argv",
    [
        ["measure", "/nonexistent/file"],
        ["measure", "/"],
        ["measure", "--banks", "md5", "/bin/sh"],
        ["pcrs", "--tpm", "swtpm:host=127.0.0.1,port=1"],
        ["pcrs", "--tpm", "/nonexistent/tpm0"],
        ["pcrs", "--tpm", "bogus:foo"],
        ["extend", "--tpm", "swtpm:host=127.0.0.1,port=1", "--log", "/tmp/x.log", "--kernel", "/bin/sh"],
        ["extend", "--tpm", "swtpm:host=127.0.0.1,port=1", "--log", "/tmp/x.log"],
        ["extend", "--log", "/tmp/x.log", "--kernel", "/bin/sh"],
        ["pcrs", "--tpm", "swtpm:host=127.0.0.1,port=1", "--pcr", "99"],
    ],
)
def test_bad_input_exit_2(argv: list[str]) -> None:
    r = run_cli(*argv)
    assert r.rc == 2, (r.rc, r.err)
    assert "Traceback" not in r.err
    assert r.err.strip(), "an error message is expected"


def test_truncated_pe_is_input_error(tmp_path: Path) -> None:
    pe = tmp_path / "vmlinuz"
    pe.write_bytes(b"MZ" + b"\x00" * 58 + (64).to_bytes(4, "little") + b"PE\x00\x00" + b"\x00" * 6)
    r = run_cli("measure", "--kind", "pe", str(pe))
    assert r.rc == 2 and "Traceback" not in r.err and r.err.count("\n") == 1


def test_placeholders_are_substituted_once_and_braces_escape() -> None:
    from dataclasses import dataclass

    from tboot_py.launch.gate import launcher_argv

    @dataclass
    class Copy:
        component: str
        path: str

    copies = [Copy("kernel", "/proc/self/fd/4"), Copy("initrd", "/proc/self/fd/5")]
    # A command line that itself contains "{initrd}" must reach the launcher as text.
    cmdline = "init={initrd} quiet"
    argv = launcher_argv(["boot", "{kernel}", "-append", "{cmdline}", "{{x}}", "a{{b}}c"], copies, cmdline)
    assert argv == ["boot", "/proc/self/fd/4", "-append", "init={initrd} quiet", "{x}", "a{b}c"]
    with pytest.raises(Exception, match="no hypervisor"):
        launcher_argv(["{hypervisor}"], copies, None)
