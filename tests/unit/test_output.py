"""The progress bar shown while hashing large files on a terminal."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tboot_py import _output, algorithms
from tboot_py.measure import measure


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_tracks_bytes_and_does_not_change_digests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "big"
    f.write_bytes(b"x" * (3 * 1024 * 1024 + 5))
    monkeypatch.setattr(_output, "PROGRESS_MIN_BYTES", 1024)
    monkeypatch.setattr("sys.stderr", _Tty())
    seen: list[int] = []
    with _output.hash_progress() as track:
        cb = track("big", f.stat().st_size)
        assert cb is not None
        assert track("small", 10) is None

        def spy(done: int) -> None:
            seen.append(done)
            cb(done)

        m = measure(f, banks=(algorithms.SHA256,), progress=spy)
    assert seen and seen[-1] == f.stat().st_size
    assert m.digests == measure(f, banks=(algorithms.SHA256,)).digests


def test_no_bar_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr", io.StringIO())
    with _output.hash_progress() as track:
        assert track("big", 1 << 40) is None
    with _output.hash_progress(enabled=False) as track:
        assert track("big", 1 << 40) is None
