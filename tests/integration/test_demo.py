"""`make demo` end to end: real Xen 4.17 + Debian dom0 kernel boot under QEMU after the gate
allows them, and a one-byte-tampered initrd is refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_boots_xen_and_refuses_tampering(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "tboot_py._demo", "--workdir", str(tmp_path / "demo")],
                       capture_output=True, text=True, timeout=900, check=False)
    out = p.stdout
    assert p.returncode == 0, out[-4000:] + p.stderr[-2000:]
    assert "tboot-py demo: dom0 is up" in out
    assert "refused (exit 1); the launcher did not run." in out
    assert "demo passed" in out and "policy: allowed" in out
    # The refusal names the initrd and both digests.
    denied = out[out.index("Denied"):]
    assert "initrd" in denied.splitlines()[4]
    assert not (tmp_path / "demo" / "launcher-ran").exists()
