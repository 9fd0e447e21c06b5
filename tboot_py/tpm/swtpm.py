"""Start and stop swtpm through swtpm-config/swtpm.sh (for the demo and the tests)."""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tboot_py.errors import TPMError

SCRIPT = Path(__file__).resolve().parents[2] / "swtpm-config" / "swtpm.sh"


def free_port() -> int:
    """A free TCP port P on loopback such that P+1 (the control port) is free too."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < 65535 and _is_free(port + 1):
            return port
    raise TPMError("no free port pair for swtpm")


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Swtpm:
    """A running swtpm process; use as a context manager."""

    state_dir: Path
    port: int
    banks: str = "sha1,sha256,sha384"
    ca_dir: Path | None = None
    script: Path = SCRIPT

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def start(self) -> Swtpm:
        cmd = [str(self.script), "start", str(self.port), str(self.state_dir.resolve()), "--banks", self.banks]
        if self.ca_dir is not None:
            cmd += ["--ca-dir", str(self.ca_dir.resolve())]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if r.returncode != 0:
            raise TPMError(f"swtpm failed to start: {r.stderr.strip()}")
        return self

    def stop(self) -> None:
        subprocess.run([str(self.script), "stop", str(self.state_dir.resolve())], capture_output=True, timeout=30,
                       check=False)

    def __enter__(self) -> Swtpm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
