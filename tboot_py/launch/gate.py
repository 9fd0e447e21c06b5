"""The fail-closed launch gate: measure -> extend -> log -> quote -> verify -> policy -> exec.

The gate

1. loads the policy (signed, when trust keys are configured), so a bad policy stops it
   before anything is touched;
2. copies each artifact once into a sealed memfd (:mod:`tboot_py.launch.sealed`) and
   measures that copy, so the bytes measured are the bytes launched;
3. extends the measurements into the TPM and appends them to the event log;
4. quotes the PCRs the log extends with its persistent AK and a fresh nonce, verifies its
   own quote, and replays the log against the verified PCRs;
5. evaluates the policy against the measurements and the verified PCRs;
6. appends the decision, allow or deny, with its reasons to the hash-chained audit log;
7. only then, if allowed and not a dry run, execs the launcher with the sealed copies as
   ``/proc/self/fd/N``: whole-argument placeholders in the command, ``TBOOT_PY_<COMPONENT>``
   in a clean environment (:mod:`tboot_py.launch.handover`); the audit record holds that
   argv and environment.

Any exception on the way denies; nothing after it runs.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tboot_py.errors import EXIT_DENIED, EXIT_OK, Error, InputError, VerificationError
from tboot_py.launch.handover import PLACEHOLDERS, LaunchPlan, escape_braces

__all__ = ["PLACEHOLDERS", "GateRequest", "GateResult", "escape_braces", "exec_launcher", "launch_plan",
           "launcher_argv", "run_gate"]

DEFAULT_STATE = Path("/var/lib/tboot-py")


@dataclass(frozen=True)
class GateRequest:
    policy: Path
    tpm: str
    hypervisor: Path | None = None
    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str | None = None
    hypervisor_cmdline: str | None = None
    trust_keys: tuple[Path, ...] = ()
    log: Path | None = None
    state: Path = DEFAULT_STATE
    audit_log: Path | None = None
    pcr_map: str = "default"
    pcr: int | None = None
    ak_alg: str = "rsa"
    firmware_log: Path | None = None
    dry_run: bool = False
    command: tuple[str, ...] = ()
    #: Write the gate's own evidence bundle here, for re-verification (``tboot-py verify``).
    evidence_out: Path | None = None
    #: The xl config bytes the xl hook checked (:mod:`tboot_py.launch.xl`): the gate seals
    #: them, with the sealed kernel and ramdisk, as ``{xl_config}``.
    xl_config: bytes | None = None
    #: Names of launch elements outside the measurement that the request carries (libvirt:
    #: ``qemu:commandline``, ``loader``...): refused unless the policy's ``allow_launch`` names each.
    allow_needed: tuple[str, ...] = ()
    #: Persistent handle of the gate's AK when it creates one (default GATE_AK_HANDLE).
    ak_handle: int | None = None
    #: The PCR each audit record is extended into (None: the trail is not anchored).
    audit_pcr: int | None = 15

    def log_path_for(self, boot: tuple[int, int]) -> Path:
        """The event log: ``--log``, or one per TPM boot in the state directory. PCRs start
        over when the TPM resets or restarts, so a log from an earlier boot can never replay;
        keying the default log by (resetCount, restartCount) starts a fresh one each boot."""
        if self.log is not None:
            return self.log
        return self.state / "logs" / f"tboot-py.reset{boot[0]}.restart{boot[1]}.log"

    @property
    def audit_path(self) -> Path:
        return self.audit_log if self.audit_log is not None else self.state / "audit.jsonl"


@dataclass(frozen=True)
class GateResult:
    """The decision. ``exit_code`` follows the CLI's convention (0, 1, 2, 3)."""

    allowed: bool
    exit_code: int
    reasons: tuple[str, ...]
    verdict: Any = None  # tboot_py.policy Verdict, when policy evaluation was reached
    measurements: tuple[Any, ...] = ()
    audit: Mapping[str, Any] = field(default_factory=dict)
    copies: tuple[Any, ...] = ()
    #: What an allowed, non-dry-run launch execs (a LaunchPlan), as the audit record shows it.
    launch: LaunchPlan | None = None

    def __bool__(self) -> bool:
        raise TypeError("read GateResult.allowed")


def _artifacts(req: GateRequest, copies: Mapping[str, Any]) -> list[Any]:
    from tboot_py.launch.builder import Artifact

    tboot = req.pcr_map == "tboot"
    # A command line belongs to its module: without the module it would be measured as a
    # free-floating string, or (tboot mapping) nowhere, yet still handed to the launcher.
    if req.cmdline is not None and "kernel" not in copies:
        raise InputError("--cmdline is the kernel's command line: give --kernel too")
    if req.hypervisor_cmdline is not None and "hypervisor" not in copies:
        raise InputError("--hypervisor-cmdline is the hypervisor's command line: give --hypervisor too")
    out: list[Artifact] = []
    if "hypervisor" in copies:
        out.append(Artifact("hypervisor", copies["hypervisor"].fd, copies["hypervisor"].origin.name,
                            cmdline=req.hypervisor_cmdline if tboot else None))
    if "kernel" in copies:
        out.append(Artifact("kernel", copies["kernel"].fd, copies["kernel"].origin.name,
                            cmdline=req.cmdline if tboot else None))
    if "initrd" in copies:
        out.append(Artifact("initrd", copies["initrd"].fd, copies["initrd"].origin.name))
    if not tboot:
        if req.cmdline is not None:
            out.append(Artifact("cmdline", None, "cmdline", cmdline=req.cmdline))
        if req.hypervisor_cmdline is not None:
            out.append(Artifact("hypervisor-cmdline", None, "hypervisor-cmdline", cmdline=req.hypervisor_cmdline))
    return out


#: Firmware PCRs the gate also verifies when a firmware log is given: the boot-state rules
#: (Secure Boot, db/dbx, authorities) read PCR 7 events, so PCR 0-7 must replay to the quote.
FIRMWARE_PCRS = frozenset(range(8))


def combined_log(untrusted_fw: Any | None, untrusted_log: Any, banks: Sequence[Any]) -> bytes:
    """One crypto-agile log for verification: the firmware log's events for PCR 0-7 and for
    the PCRs the tboot-py log extends (boot loaders extend PCR 9 too), then the tboot-py log.

    PCRs that the OS extends later without a log (IMA, systemd phases) are left out, so they
    cannot spoil the replay. A firmware log lacking one of the TPM's banks cannot be
    re-encoded and denies.
    """
    from tboot_py.eventlog import EV_NO_ACTION, NewEvent, bank_name, encode_log

    ours = set(untrusted_log.pcrs())
    if not ours:
        raise VerificationError("the event log extends no PCR")
    wanted = FIRMWARE_PCRS | ours
    events: list[NewEvent] = []
    sources = ([untrusted_fw] if untrusted_fw is not None else []) + [untrusted_log]
    for log in sources:
        for e in log.events:
            if e.seq == 0 and log.spec_id is not None:
                continue  # the Spec ID header; encode_log writes its own
            if e.event_type == EV_NO_ACTION:
                if e.pcr == 0 and log is untrusted_fw:
                    # Keep StartupLocality / H-CRTM records: they set PCR 0's initial value.
                    events.append(NewEvent(0, EV_NO_ACTION, {b.name: bytes(b.size) for b in banks}, e.data))
                continue
            if not e.extends or e.pcr not in wanted:
                continue
            digests = {bank_name(a): d for a, d in e.digests}
            missing = [b.name for b in banks if b.name not in digests]
            if missing:
                raise VerificationError(
                    f"{log.source or 'event log'}: event {e.seq} (PCR {e.pcr}) has no {', '.join(missing)} digest, "
                    "but the TPM has that bank active")
            events.append(NewEvent(e.pcr, e.event_type, {b.name: digests[b.name] for b in banks}, e.data))
    return encode_log(events, banks)


@dataclass
class _Trace:
    """What the audit record needs from the stages that ran (filled as they run)."""

    log: Path | None = None
    nonce: str | None = None
    evidence: Path | None = None
    policy_sha256: str | None = None
    #: What settling an interrupted earlier run did (extend journal, audit anchor).
    recovered: list[str] = field(default_factory=list)
    #: The TPM answered: the audit record can be anchored.
    tpm_reached: bool = False
    #: Why the audit log must not be appended to (a broken chain, a trail that does not
    #: match its anchor): adding to it would bury the evidence.
    audit_refused: str | None = None


def _record_pcrs(req: GateRequest) -> tuple[int, ...]:
    """Where this gate writes its records: what the appraisal requires quoted and explained."""
    from tboot_py.launch.builder import DEFAULT_PCR, TBOOT_MAP

    if req.pcr_map == "tboot":
        return tuple(sorted(set(TBOOT_MAP.values())))
    return (req.pcr if req.pcr is not None else DEFAULT_PCR,)


def _quote_own_log(tpm: Any, req: GateRequest, log_path: Path, log_bytes: bytes,
                   untrusted_fw: Any | None, trace: _Trace) -> tuple[Any, bytes, Any]:
    """Quote every PCR the logs extend with a fresh nonce: ``(evidence, nonce, trusted AK)``.
    ``untrusted_fw`` is the firmware log, parsed once by the caller. The appraisal core
    then verifies this evidence exactly as a remote verifier would."""
    from tboot_py.attest.keys import load_or_create_ak
    from tboot_py.attest.quote import collect_evidence
    from tboot_py.eventlog import parse_log
    from tboot_py.tpm.evidence import EventLogBlob
    from tboot_py.tpm.wire import PCRSelection
    from tboot_py.verify.quote import TrustedAK

    banks = tpm.banks()
    untrusted_log = parse_log(log_bytes, source=str(log_path))
    combined = combined_log(untrusted_fw, untrusted_log, banks)
    # Every PCR the logs extend, and every PCR that may hold records (the appraisal requires
    # them quoted, so that no record hides in one).
    pcrs = sorted(set(parse_log(combined).pcrs()) | set(_record_pcrs(req)))
    selection = PCRSelection.of([(b.name, pcrs) for b in banks])
    ak = load_or_create_ak(tpm, req.state, alg=req.ak_alg)
    nonce = secrets.token_bytes(32)
    evidence = collect_evidence(tpm, ak, selection, nonce, event_logs=[EventLogBlob(str(log_path), combined)])
    trace.nonce = nonce.hex()
    if req.evidence_out is not None:
        from tboot_py.policy.io import write_atomic

        write_atomic(req.evidence_out, evidence.dumps().encode())
        trace.evidence = req.evidence_out
    return evidence, nonce, TrustedAK(ak.public, ak.qualified_name)


def _audit(req: GateRequest, allowed: bool, reasons: Sequence[str], exit_code: int,
           measurements: Sequence[Any], verdict: Any, trace: _Trace,
           launch: LaunchPlan | None = None) -> dict[str, Any]:
    """Write the decision (fsynced, atomically, names that are not UTF-8 escaped) and
    extend it into the anchor PCR. Raises when the record was not written: then nothing
    may be launched."""
    from tboot_py.audit.records import append_record, tpm_anchor
    from tboot_py.fileio import check_write_path
    from tboot_py.launch.journal import crash_point
    from tboot_py.tpm import open_tpm

    check_write_path(req.audit_path, "audit log")
    if trace.audit_refused is not None:
        from tboot_py.audit.records import AuditChainError

        raise AuditChainError(trace.audit_refused)

    record = {
        "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "decision": "allow" if allowed else "deny",
        "exit_code": exit_code,
        "dry_run": req.dry_run,
        "policy": str(req.policy),
        "policy_sha256": trace.policy_sha256,
        "tpm": req.tpm,
        "log": str(trace.log) if trace.log is not None else None,
        "nonce": trace.nonce,
        "evidence": str(trace.evidence) if trace.evidence is not None else None,
        "reasons": list(reasons),
        "verdict": verdict.as_json() if verdict is not None else None,
        "measurements": [m.to_json() for m in measurements],
        "command": list(req.command),
        # The argv and environment the gate execs when allowed: exactly these, nothing else.
        "launch": launch.as_json() if launch is not None else None,
        "recovered": list(trace.recovered),
        "anchor": None,
    }
    if req.audit_pcr is None or not trace.tpm_reached:
        return append_record(req.audit_path, record)
    tpm = open_tpm(req.tpm)
    try:
        record["anchor"], extend = tpm_anchor(tpm, req.audit_pcr)

        def anchor(rec: Mapping[str, Any]) -> None:
            crash_point("audited")
            extend(rec)

        return append_record(req.audit_path, record, anchor)
    finally:
        tpm.close()


def run_gate(req: GateRequest) -> GateResult:
    """Run every stage; returns the decision (never raises for a denial). The caller execs."""
    from tboot_py.launch.journal import crash_point
    from tboot_py.launch.sealed import seal_artifact

    copies: dict[str, Any] = {}
    measurements: list[Any] = []
    trace = _Trace()
    verdict = None
    plan = None
    lock: int | None = None
    try:
        # Gates on one state directory serialise here, from the first check to the audit
        # record: the AK, the log, the journal and the anchor PCR are theirs alone meanwhile.
        lock = _prepare_state(req)
        from tboot_py.policy import io as policy_io
        from tboot_py.policy import signing

        # Read once: the audit record names the SHA-256 of exactly the bytes evaluated.
        policy_bytes = policy_io.read_bytes(req.policy)
        trace.policy_sha256 = hashlib.sha256(policy_bytes).hexdigest()
        keys = [signing.load_public_key(k) for k in req.trust_keys] if req.trust_keys else None
        policy = policy_io.loads_policy(policy_bytes, keys, source=str(req.policy))
        _check_allowed(req, policy)
        for comp in ("hypervisor", "kernel", "initrd"):
            path = getattr(req, comp)
            if path is not None:
                copies[comp] = seal_artifact(comp, path, tboot_module=req.pcr_map == "tboot")
        if not copies:
            raise InputError("nothing to launch: give --hypervisor, --kernel or --initrd")
        crash_point("sealed")
        if req.xl_config is not None:
            copies["xl_config"] = _seal_xl_config(req, copies)
        if not req.dry_run and req.command:
            plan = launch_plan(req, list(copies.values()))
        artifacts = _artifacts(req, copies)
        evidence, nonce, ak, logged = _measure_extend_quote(req, artifacts, trace)
        measurements = [lm.measurement for lm in logged]
        from tboot_py.appraise import Appraiser, TrustConfig

        # The one appraisal core decides, as for a remote verifier; the policy judges the
        # records this launch wrote, which must be the last ones the quote verifies.
        appraisal = Appraiser(TrustConfig(ak=ak, policy=policy, record_pcrs=_record_pcrs(req))).appraise(
            evidence, nonce, own_records=[lm.event_data for lm in logged])
        verdict = appraisal.verdict
        reasons = tuple(r.message for r in verdict.failures) or ("policy satisfied",)
        allowed = appraisal.allowed
        result = GateResult(allowed, EXIT_OK if allowed else EXIT_DENIED, reasons, verdict, tuple(measurements))
    except Error as e:
        result = GateResult(False, e.exit_code, (e.diagnostics(),), verdict, tuple(measurements))
    except Exception as e:  # fail closed on anything unexpected
        result = GateResult(False, 3, (f"internal error: {type(e).__name__}: {e}",), verdict, tuple(measurements))
    try:
        record = _audit(req, result.allowed, result.reasons, result.exit_code, result.measurements, verdict,
                        trace, plan if result.allowed else None)
    except Error as e:
        for c in copies.values():
            c.close()
        # Not written: never launch. A denial keeps its own code (and its reason, once).
        code = e.exit_code if result.allowed else result.exit_code
        why = e.diagnostics()
        reasons = result.reasons if why in result.reasons else (*result.reasons, f"audit log: {why}")
        return GateResult(False, code, reasons, verdict, result.measurements)
    except Exception as e:  # fail closed: no record, no launch
        for c in copies.values():
            c.close()
        return GateResult(False, 3, (*result.reasons, f"audit log: {type(e).__name__}: {e}"), verdict,
                          result.measurements)
    finally:
        if lock is not None:
            os.close(lock)  # releases the gate lock
    crash_point("anchored")
    if not result.allowed:
        for c in copies.values():
            c.close()
        return GateResult(False, result.exit_code, result.reasons, verdict, result.measurements, record)
    return GateResult(True, EXIT_OK, result.reasons, verdict, result.measurements, record,
                      tuple(copies.values()), plan)


def check_private_dir(path: Path) -> None:
    """Refuse a state directory that others could write to: whoever can write there can
    swap the AK state, the event log or the audit chain (as ssh refuses loose key files)."""
    from tboot_py.fileio import check_private_dir as check

    check(path, "state directory")


def _prepare_state(req: GateRequest) -> int:
    """Create and check the state directory and the paths the gate writes, then take the
    gate lock (``STATE/gate.lock``, held until the audit record is written). Returns its fd."""
    from tboot_py.fileio import check_write_path, lock_exclusive

    try:
        # The state holds the AK, the event logs and the audit log: private to the gate.
        req.state.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise InputError(f"cannot create {req.state}: {e.strerror}") from e
    check_private_dir(req.state)
    for path, what in ((req.log, "event log"), (req.audit_path, "audit log"), (req.evidence_out, "evidence file")):
        if path is not None:
            check_write_path(path, what)
    if req.audit_pcr is not None:
        from tboot_py.tpm import check_pcr_index

        check_pcr_index(req.audit_pcr)
        if (req.pcr_map == "tboot" and req.audit_pcr in (18, 19)) or (req.pcr_map != "tboot" and \
                req.audit_pcr == (9 if req.pcr is None else req.pcr)):
            raise InputError(f"the audit anchor PCR {req.audit_pcr} is also a PCR the gate measures into; "
                             "choose another --audit-pcr")
    return lock_exclusive(req.state / "gate.lock", "gate lock")


#: Free space the gate wants on each file system it writes before moving a PCR, beyond a
#: copy of the file it replaces (appends rewrite the whole file: fileio.append_atomic).
_MIN_FREE = 4 * 2**20


def _check_space(paths: Sequence[Path]) -> None:
    for p in paths:
        try:
            st = os.statvfs(p.parent)
            size = os.stat(p).st_size if p.exists() else 0
        except OSError as e:
            raise InputError(f"cannot check the free space for {p}: {e.strerror}") from e
        if not os.access(p.parent, os.W_OK):
            raise InputError(f"cannot write in {p.parent}")
        if st.f_bavail * st.f_frsize < size + _MIN_FREE:
            raise InputError(f"not enough free space for {p} ({st.f_bavail * st.f_frsize} bytes free, "
                             f"{size + _MIN_FREE} needed); nothing was extended")


def _precheck(tpm: Any, req: GateRequest, log_path: Path, trace: _Trace) -> None:
    """Everything that can fail, checked before the first PCR moves: the AK (created on
    first use, at the gate's own handle), the audit chain and its anchor (an anchor left
    one record behind by an interrupted gate is completed), write access and disk space."""
    from tboot_py.attest.keys import GATE_AK_HANDLE, load_or_create_ak
    from tboot_py.audit.records import AuditChainError, anchor_error, check_chain, check_tpm_anchor, tpm_anchor

    handle = GATE_AK_HANDLE if req.ak_handle is None else req.ak_handle
    ak = load_or_create_ak(tpm, req.state, alg=req.ak_alg, handle=handle)
    if req.ak_handle is not None and ak.handle != req.ak_handle:
        raise InputError(f"{req.state} holds the gate's AK at 0x{ak.handle:08x}, not at --handle "
                         f"0x{req.ak_handle:08x}")
    report = check_chain(req.audit_path)
    if not report.ok:
        trace.audit_refused = f"{req.audit_path}: refusing to append to a broken audit log: {report.error}"
        raise AuditChainError(trace.audit_refused)
    if req.audit_pcr is not None:
        check = check_tpm_anchor(report.parsed, tpm, req.audit_pcr)
        if check.pending:
            _field, extend = tpm_anchor(tpm, req.audit_pcr)
            extend(report.parsed[-1])
            trace.recovered.append(f"the last audit record was extended into PCR {req.audit_pcr} "
                                   "(a gate had stopped before anchoring it)")
        elif not check.ok:
            trace.audit_refused = anchor_error(req.audit_path, req.audit_pcr, check)
            raise AuditChainError(trace.audit_refused)
    _check_space([log_path, req.audit_path] + ([req.evidence_out] if req.evidence_out is not None else []))


def _measure_extend_quote(req: GateRequest, artifacts: Sequence[Any],
                          trace: _Trace) -> tuple[Any, bytes, Any, list[Any]]:
    from tboot_py.eventlog import read_log
    from tboot_py.eventlog.parse import read_log_bytes
    from tboot_py.fileio import check_write_path
    from tboot_py.launch.builder import extend_and_log
    from tboot_py.launch.journal import crash_point
    from tboot_py.tpm import open_tpm

    # The firmware log is read exactly once: the replay and the policy see the same events.
    untrusted_fw = read_log(req.firmware_log) if req.firmware_log is not None else None
    tpm = open_tpm(req.tpm)
    try:
        log_path = req.log_path_for(tpm.boot_counters())
        trace.tpm_reached = True
        trace.log = log_path
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise InputError(f"cannot create {log_path.parent}: {e.strerror}") from e
        check_write_path(log_path, "event log")
        _precheck(tpm, req, log_path, trace)
        logged = extend_and_log(tpm, log_path, artifacts, mapping=req.pcr_map, pcr=req.pcr,
                                recovered=trace.recovered.append)
        log_bytes = read_log_bytes(log_path)
        evidence, nonce, ak = _quote_own_log(tpm, req, log_path, log_bytes, untrusted_fw, trace)
        crash_point("quoted")
    finally:
        tpm.close()
    return evidence, nonce, ak, logged


def launcher_argv(command: Sequence[str], copies: Sequence[Any], cmdline: str | None,
                  hypervisor_cmdline: str | None = None) -> list[str]:
    """The launch argv (rules in :mod:`tboot_py.launch.handover`): placeholders are whole
    arguments, ``{{``/``}}`` stand for braces, command lines are the measured ones."""
    from tboot_py.launch.handover import launcher_argv as _argv

    return _argv(command, copies, cmdline, hypervisor_cmdline)


def default_firmware_log(tpm: str) -> Path | None:
    """The firmware log the gate reads by default: the kernel's, with a TPM device."""
    from tboot_py.eventlog import DEFAULT_LOG_PATH

    if tpm.startswith(("/", "device:")) and Path(DEFAULT_LOG_PATH).exists():
        return Path(DEFAULT_LOG_PATH)
    return None


def _check_allowed(req: GateRequest, policy: Any) -> None:
    missing = [n for n in req.allow_needed if n not in policy.allow_launch]
    if missing:
        raise VerificationError(f"the launch carries {', '.join(missing)}, which the gate does not measure and "
                                "the policy does not allow (allow_launch)")


def _seal_xl_config(req: GateRequest, copies: Mapping[str, Any]) -> Any:
    """The xl config xl will read: the checked bytes naming the sealed kernel and ramdisk."""
    from tboot_py.launch import xl
    from tboot_py.launch.sealed import seal_bytes

    assert req.xl_config is not None
    try:
        boot = xl.check_config(req.xl_config.decode(), "xl config")
    except UnicodeDecodeError as e:
        raise InputError(f"xl config: not UTF-8 text: {e}") from None
    if (boot.kernel, boot.ramdisk, boot.cmdline) != (str(req.kernel), None if req.initrd is None else str(req.initrd),
                                                    req.cmdline):
        raise InputError("the xl config does not boot the kernel, ramdisk and cmdline given to the gate")
    ramdisk = copies["initrd"].path if "initrd" in copies else None
    return seal_bytes("xl_config", "xl config", xl.sealed_text(req.xl_config, boot, copies["kernel"].path, ramdisk))


def launch_plan(req: GateRequest, copies: Sequence[Any]) -> LaunchPlan:
    """What the gate will exec for ``req`` (a LaunchPlan), checked before anything is
    extended; the audit record holds it and :func:`exec_launcher` runs exactly it."""
    from tboot_py.launch.handover import launch_plan as _plan

    originals = {c.component: (str(c.origin), c.origin_id) for c in copies if c.origin_id is not None}
    generated = [(c.component, c.sha256()) for c in copies if c.origin_id is None]
    return _plan(req.command, copies, req.cmdline, req.hypervisor_cmdline, originals=originals,
                 generated=generated)


def exec_launcher(result: GateResult) -> None:
    """Replace this process with the launcher the allowed ``result`` planned; the sealed
    copies stay open for it."""
    from tboot_py.launch.handover import exec_plan

    if not result.allowed or result.launch is None:
        raise InputError("nothing to launch: the gate did not allow a launch command")
    exec_plan(result.launch, [c.fd for c in result.copies])
