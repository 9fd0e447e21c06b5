"""The push agent (RFC 9334 attester): outbound HTTPS only, no port opened on the host.

It enrolls once (EK certificate + AK public area; the server's credential comes back through
TPM2_ActivateCredential), keeps its token in its state directory, then attests: asks for a
nonce, quotes every PCR of the banks its event logs carry (and sha256), sends the evidence
with the firmware log, tboot-py's log and the IMA list when present, and receives an EAR.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tboot_py.errors import EXIT_DENIED, InputError
from tboot_py.server.client import Client, ServerError

FIRMWARE_LOG = Path("/sys/kernel/security/tpm0/binary_bios_measurements")
IMA_LOG = Path("/sys/kernel/security/ima/binary_runtime_measurements")
_STATE = "agent.json"


class EnrollmentPending(ServerError):
    """The enrollment waits for an administrator's approval."""

    def __init__(self, host: str) -> None:
        super().__init__(403, "pending_approval", f"enrollment of {host!r} awaits an administrator's approval")
        self.exit_code = EXIT_DENIED


@dataclass(frozen=True)
class AgentConfig:
    servers: tuple[str, ...]
    tcti: str
    state: Path
    name: str = field(default_factory=socket.gethostname)
    #: (name, path) of event logs to send; missing default logs are skipped, given ones must exist.
    event_logs: tuple[tuple[str, Path], ...] = ()
    cacert: Path | None = None
    ak_handle: int = 0x81010002
    #: The AK's algorithm (keys.AK_ALGS): rsa, or ecc (ECDSA P-256, far cheaper to sign with).
    ak_alg: str = "rsa"


@dataclass(frozen=True)
class Attestation:
    allowed: bool
    status: str
    reason: str
    ear: str
    result_id: int
    interval_s: float


def default_logs() -> tuple[tuple[str, Path], ...]:
    return tuple((n, p) for n, p in (("firmware", FIRMWARE_LOG), ("ima", IMA_LOG)) if p.exists())


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.client = Client(config.servers, cacert=config.cacert)
        self._saved = self._load()

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------------ state

    def _load(self) -> dict[str, Any]:
        f = self.config.state / _STATE
        if not f.exists():
            return {}
        try:
            from tboot_py.fileio import SMALL, read_file

            d = json.loads(read_file(f, "agent state", SMALL))
        except (InputError, ValueError) as e:
            raise InputError(f"{f}: unreadable agent state: {e}") from e
        return d if isinstance(d, dict) and d.get("host") == self.config.name else {}

    def _save(self, **values: Any) -> None:
        self._saved = {"host": self.config.name, **values}
        self.config.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        from tboot_py.fileio import write_atomic

        write_atomic(self.config.state / _STATE, json.dumps(self._saved).encode(), mode=0o600, what="agent state")

    @property
    def enrolled(self) -> bool:
        return bool(self._saved.get("token"))

    # ------------------------------------------------------------------ enrollment

    def enroll(self) -> None:
        """Enroll (or finish a pending enrollment); raises EnrollmentPending while it waits."""
        from tboot_py.attest import credential, keys

        pending = self._saved.get("enrollment")
        tpm = keys.open_esapi(self.config.tcti)
        try:
            ak = keys.load_or_create_ak(tpm, self.config.state, self.config.ak_alg, self.config.ak_handle)
            if not pending:
                ek = keys.create_ek(tpm, "rsa")
                if ek.certificate is None:
                    raise InputError("the TPM has no RSA EK certificate; enrollment needs one")
                ch = self.client.request("POST", "/v1/enroll", json={
                    "name": self.config.name, "ek_certificate": base64.b64encode(ek.certificate).decode(),
                    "ak_public": base64.b64encode(ak.public.raw).decode()})
                secret = credential.activate(tpm, ak, "rsa", base64.b64decode(ch["id_object"]),
                                             base64.b64decode(ch["encrypted_secret"]))
                pending = {"id": ch["enrollment_id"], "secret": base64.b64encode(secret).decode()}
                self._save(enrollment=pending)
        finally:
            tpm.close()
        out = self.client.request("POST", f"/v1/enroll/{pending['id']}/activate", json={"secret": pending["secret"]})
        if out["status"] != "enrolled" or not out.get("token"):
            raise EnrollmentPending(self.config.name)
        self._save(token=out["token"])

    # ------------------------------------------------------------------ attestation

    def _logs(self) -> list[Any]:
        from tboot_py.eventlog.parse import read_log_bytes
        from tboot_py.tpm.evidence import EventLogBlob

        out = []
        for name, path in self.config.event_logs:
            # Without blocking, regular files only (or the securityfs log), at most MAX_LOG_SIZE.
            out.append(EventLogBlob(name, read_log_bytes(path)))
        return out

    @staticmethod
    def selection_for(logs: Sequence[Any]) -> Any:
        """PCRs 0-23 of sha256 and of every bank the logs carry (the server checks each)."""
        from tboot_py import algorithms
        from tboot_py.errors import ParseError
        from tboot_py.eventlog import parse_log
        from tboot_py.tpm.wire import PCRSelection

        banks = {"sha256"}
        for blob in logs:
            with contextlib.suppress(ParseError):
                banks |= {a.name for i in parse_log(blob.data).algorithms if (a := algorithms.by_id(i)) is not None}
        order = [b for b in ("sha1", "sha256", "sha384", "sha512") if b in banks]
        return PCRSelection.parse_spec("+".join(f"{b}:0-23" for b in order))

    def attest(self) -> Attestation:
        from tboot_py.attest import keys
        from tboot_py.attest.quote import collect_evidence

        if not self.enrolled:
            self.enroll()
        token = str(self._saved["token"])
        logs = self._logs()
        sel = self.selection_for(logs)
        n = self.client.request("POST", "/v1/attest/nonce", token=token)
        tpm = keys.open_esapi(self.config.tcti)
        try:
            ak = keys.load_or_create_ak(tpm, self.config.state, self.config.ak_alg, self.config.ak_handle)
            ev = collect_evidence(tpm, ak, sel, bytes.fromhex(n["nonce"]), logs)
        finally:
            tpm.close()
        r = self.client.request("POST", "/v1/attest", json={"nonce": n["nonce"], "evidence": ev.to_json()},
                                token=token)
        return Attestation(bool(r["allowed"]), str(r["status"]), str(r["reason"]), str(r["ear"]),
                           int(r["result_id"]), float(n["interval_s"]))

    def run(self, interval: float | None, on_result: Callable[[Attestation], None],
            on_error: Callable[[Exception], None], stop: Callable[[], bool] = lambda: False,
            wake: threading.Event | None = None) -> None:
        """Attest forever: every interval (the server's unless given), with exponential
        backoff (1 s doubling to 60 s) while the server is away or refuses. Setting ``wake``
        (SIGUSR1 in ``tboot-py agent``) attests at once: attestation on demand."""
        wake = wake or threading.Event()
        backoff = 1.0
        while not stop():
            try:
                a = self.attest()
                on_result(a)
                backoff = 1.0
                wait = interval if interval is not None else a.interval_s
            except EnrollmentPending as e:
                on_error(e)
                wait = min(backoff, 60.0)
                backoff *= 2
            except ServerError as e:
                on_error(e)
                if e.code == "bad_token":  # revoked or re-enrolled elsewhere: enroll again
                    self._save()
                wait = min(backoff, 60.0)
                backoff *= 2
            wake.wait(wait)
            wake.clear()
