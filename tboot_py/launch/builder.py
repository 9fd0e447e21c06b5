"""The measured domain builder: measure artifacts, extend them into the TPM, log them.

For each artifact the builder appends one TCG_PCR_EVENT2 record (TCG PC Client PFP,
10.2.2) of type EV_IPL whose event data is a UTF-8 JSON object naming what was measured,
with the artifact's digests: ``{"tboot-py": 2, "component": "kernel", "kind": "pe",
"file": "vmlinuz", "digests": {"sha256": ...}, "cmdline": ...}``, and extends the hash of
that data into every active bank (as IMA extends its template hash). A replay that matches
a quote then proves every field of the record: which component, how it was measured, its
command line and its digests (version 1 records extended the artifact digest alone, and
their fields were not bound).

PCR mappings:

* ``default``: everything into one PCR (9 unless ``--pcr`` says otherwise), the way a boot
  loader measures the files it loads.
* ``tboot``: the hypervisor into PCR 18 and every other module into PCR 19, as tboot's
  Verified Launch does after a measured launch (tboot docs, "PCR usage"). Each module is
  then measured as a tboot module hash H(H(cmdline) || H(image)).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tboot_py.algorithms import HashAlg
from tboot_py.errors import InputError
from tboot_py.eventlog.decode import encode_tboot_py
from tboot_py.eventlog.model import EV_IPL  # PFP Table 9: tboot-py's measurement events
from tboot_py.eventlog.write import NewEvent, append_events_locked, encode_log, locked
from tboot_py.measure import ArtifactKind, DigestSet, Measurement, measure
from tboot_py.tpm import TPM, check_pcr_index

COMPONENTS = ("hypervisor", "kernel", "initrd", "cmdline", "hypervisor-cmdline")
CMDLINE_COMPONENTS = ("cmdline", "hypervisor-cmdline")
DEFAULT_PCR = 9
TBOOT_MAP = {"hypervisor": 18, "kernel": 19, "initrd": 19, "cmdline": 19, "hypervisor-cmdline": 18}


@dataclass(frozen=True)
class Artifact:
    """One thing to measure. ``source`` is a path or an open file descriptor (the gate's
    private copy); ``name`` is what the log records."""

    component: str
    source: Path | int | None
    name: str
    cmdline: str | None = None
    kind: ArtifactKind | str = "auto"


@dataclass(frozen=True)
class LoggedMeasurement:
    component: str
    pcr: int
    measurement: Measurement
    event_data: bytes

    def record_digests(self, banks: Sequence[HashAlg]) -> dict[str, bytes]:
        """What is extended: the hash of the record in every bank."""
        return {b.name: b.digest(self.event_data) for b in banks}


def pcr_for(component: str, mapping: str, pcr: int | None) -> int:
    if mapping == "tboot":
        return TBOOT_MAP[component]
    if mapping != "default":
        raise InputError(f"unknown PCR mapping {mapping!r} (default, tboot)")
    return check_pcr_index(DEFAULT_PCR if pcr is None else pcr)


def event_data(component: str, m: Measurement) -> bytes:
    """The version 2 record of one measurement (tboot_py.eventlog.decode.encode_tboot_py)."""
    return encode_tboot_py(component, m.kind.value, m.name, m.cmdline,
                           tuple((b, d) for b, d in m.digests.as_dict().items()))


#: ``track(name, size)`` -> a bytes-done callback or None (see tboot_py._output.hash_progress).
Tracker = Callable[[str, int], Callable[[int], None] | None]


def _size(source: Path | int) -> int:
    try:
        return os.fstat(source).st_size if isinstance(source, int) else source.stat().st_size
    except OSError:
        return 0  # measure() reports the error


def measure_artifacts(
    artifacts: Sequence[Artifact], banks: Sequence[HashAlg], mapping: str = "default",
    track: Tracker | None = None,
) -> list[Measurement]:
    """Measure every artifact. With the tboot mapping each module is a tboot module hash."""
    out: list[Measurement] = []
    for a in artifacts:
        if a.component not in COMPONENTS:
            raise InputError(f"unknown component {a.component!r}")
        if a.cmdline is not None:
            _check_utf8(a.cmdline, f"the {a.name} command line")
        if a.component in CMDLINE_COMPONENTS:
            cmd = a.cmdline or ""
            out.append(Measurement(name=a.name, kind=ArtifactKind.FILE, size=len(cmd.encode()),
                                   digests=DigestSet.of_bytes(cmd.encode(), banks), cmdline=cmd))
            continue
        if a.source is None:
            raise InputError(f"no file given for {a.component}")
        kind = a.kind
        if mapping == "tboot":
            kind = ArtifactKind.TBOOT_MODULE
        cmdline = a.cmdline if a.cmdline is not None or kind != ArtifactKind.TBOOT_MODULE else ""
        progress = track(a.name, _size(a.source)) if track is not None else None
        out.append(measure(a.source, kind=kind, banks=banks, cmdline=cmdline, name=a.name, progress=progress))
    return out


def extend_and_log(
    tpm: TPM,
    log_path: Path,
    artifacts: Sequence[Artifact],
    *,
    mapping: str = "default",
    pcr: int | None = None,
    track: Tracker | None = None,
    recovered: Callable[[str], None] | None = None,
) -> list[LoggedMeasurement]:
    """Measure, extend every active bank, then append the events to ``log_path``.

    Extends and the append happen under the log's lock with an intent journal
    (:mod:`tboot_py.launch.journal`): a run that died part-way is settled first (what it
    did is passed to ``recovered``), and the log is checked before anything is extended
    (it must parse and carry the TPM's banks), so a bad log stops the build before the
    PCRs move, and a crash at any instant leaves a state the next run completes.
    """
    from tboot_py.launch import journal

    banks = tpm.banks()
    if not banks:
        raise InputError("the TPM has no active PCR bank")
    _check_log_appendable(log_path, banks)
    measurements = measure_artifacts(artifacts, banks, mapping, track)
    logged = [LoggedMeasurement(a.component, index, m, event_data(a.component, m))
              for a, m in zip(artifacts, measurements, strict=True)
              for index in (pcr_for(a.component, mapping, pcr),)]
    events = [NewEvent(lm.pcr, EV_IPL, lm.record_digests(banks), lm.event_data) for lm in logged]
    encode_log(events, banks)  # every event must encode before a PCR moves
    with locked(log_path):
        note = journal.recover(tpm, log_path, banks)
        if note is not None and recovered is not None:
            recovered(note)
        _check_log_appendable(log_path, banks)
        journal.write_intent(tpm, log_path, events, banks)
        journal.crash_point("journal")
        for i, e in enumerate(events):
            tpm.extend(e.pcr, e.digests)
            journal.crash_point(f"extend-{i}")
        append_events_locked(log_path, events, banks)
        journal.crash_point("logged")
        journal.finish(log_path)
    return logged


def _check_utf8(text: str, what: str) -> None:
    """Command lines are measured as UTF-8: one that is not (an argument in another
    encoding reaches Python as lone surrogates, PEP 383) is an input error, before any PCR moves."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"{what} is not valid UTF-8 (character {e.start}); command lines are measured as UTF-8") \
            from None


def _check_log_appendable(log_path: Path, banks: Sequence[HashAlg]) -> None:
    """Refuse before extending when the log exists but could not be appended to."""
    from tboot_py.eventlog import read_log

    if not log_path.exists():
        return
    log = read_log(log_path)
    if log.spec_id is None:
        raise InputError(f"{log_path}: not a crypto-agile log; tboot-py appends only to logs it can extend")
    have = {alg_id for alg_id, _size in log.spec_id.algorithms}
    want = {b.alg_id for b in banks}
    if have != want:
        raise InputError(f"{log_path}: log banks do not match the TPM's active banks "
                         f"({', '.join(b.name for b in banks)})")
