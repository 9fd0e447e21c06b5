"""Benchmark: full appraisals per second on one core, next to tpm2_checkquote.

A full appraisal is what the appraisal core does for every attestation: parse the evidence
JSON, verify the quote (signature, nonce, selection, pcrDigest), parse + replay a 100-event
log against the verified PCRs, bind every event's data to its digest, and evaluate a policy
(a PCR rule and an events rule) on what the quote proves.
The quotes come from a real swtpm. tpm2_checkquote is timed per process (it checks the
signature, nonce and pcrDigest of the same quote, without a log), so its figure includes
process start-up.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tboot_py import algorithms

if TYPE_CHECKING:
    from tboot_py.verify.quote import AKPublic


def _setup(tmp: Path, alg: str) -> tuple[bytes, AKPublic, bytes, Path, str]:
    from tboot_py.attest import keys
    from tboot_py.attest.quote import collect_evidence
    from tboot_py.eventlog import NewEvent, encode_log
    from tboot_py.tpm import wire as st
    from tboot_py.tpm.esapi import EsapiTPM
    from tboot_py.tpm.evidence import EventLogBlob
    from tboot_py.tpm.swtpm import Swtpm, free_port
    from tboot_py.verify.quote import TrustedAK
    from tboot_py.verify.tpm2_tools import export_quote

    sw = Swtpm(state_dir=tmp / f"swtpm-{alg}", port=free_port(), ca_dir=tmp / "ca").start()
    try:
        tpm = EsapiTPM(sw.tcti)
        try:
            banks = tpm.banks()
            events = []
            for i in range(100):
                data = f"bench event {i}".encode()
                digests = {b.name: b.digest(data) for b in banks}
                tpm.extend(9, digests)
                events.append(NewEvent(9, 0x0D, {"sha256": digests["sha256"]}, data))
            log = encode_log(events, [algorithms.SHA256])
            ak = keys.load_or_create_ak(tpm, tmp / f"ak-{alg}", alg)
            ek = keys.create_ek(tpm, "rsa")
            sel = st.PCRSelection.parse_spec("sha256:0-9")
            nonce = os.urandom(20)
            ev = collect_evidence(tpm, ak, sel, nonce, [EventLogBlob("bench", log)])
            export_quote(ev, sel, tmp / f"tt-{alg}")
        finally:
            tpm.close()
    finally:
        sw.stop()
    return ev.dumps().encode(), TrustedAK.under_ek(ak.public, ek.public), nonce, tmp / f"tt-{alg}", "sha256"


def _rate(fn: Callable[[], object], seconds: float = 2.0) -> float:
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        el = time.perf_counter() - start
        if el >= seconds:
            return n / el


def _policy(doc: bytes, ak: AKPublic, nonce: bytes) -> object:
    """A policy the bench evidence passes: its PCR 9 value and one of its events."""
    from tboot_py.policy._serialize import policy_from_dict
    from tboot_py.tpm.evidence import parse_evidence
    from tboot_py.verify.evidence import verify_evidence

    boot = verify_evidence(parse_evidence(doc), ak, nonce)
    pcr9 = boot.pcrs.pcrs["sha256"][9].hex()
    return policy_from_dict({"version": 1, "rules": [
        {"type": "pcrs", "values": {"sha256": {"9": pcr9}}},
        {"type": "events", "require": [{"pcr": 9, "data_contains": "bench event 99"}],
         "forbid": [{"data_contains": "evil"}]}]})


def run() -> str:
    from tboot_py.appraise import Appraiser, TrustConfig
    from tboot_py.policy import Policy
    from tboot_py.tpm.evidence import Evidence, parse_evidence
    from tboot_py.verify.evidence import verify_evidence
    from tboot_py.verify.quote import verify_quote

    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for alg, label in (("rsa", "RSA-2048 RSASSA-SHA256"), ("ecc", "ECC P-256 ECDSA-SHA256")):
            doc, ak, nonce, tt, h = _setup(tmp, alg)
            ev = parse_evidence(doc)

            policy = _policy(doc, ak, nonce)
            assert isinstance(policy, Policy)
            appraiser = Appraiser(TrustConfig(ak=ak, policy=policy))
            assert appraiser.appraise(parse_evidence(doc), nonce).allowed

            def full(doc: bytes = doc, nonce: bytes = nonce, appraiser: Appraiser = appraiser) -> None:
                appraiser.appraise(parse_evidence(doc), nonce)

            def verify_only(doc: bytes = doc, ak: AKPublic = ak, nonce: bytes = nonce) -> None:
                verify_evidence(parse_evidence(doc), ak, nonce)

            def quote_only(ev: Evidence = ev, ak: AKPublic = ak, nonce: bytes = nonce) -> None:
                verify_quote(ev, ak, nonce)

            full_rate = _rate(full)
            verify_rate = _rate(verify_only)
            quote_rate = _rate(quote_only)
            cmd = ["tpm2_checkquote", "-u", str(tt / "ak.pem"), "-m", str(tt / "quote.msg"), "-s",
                   str(tt / "quote.sig"), "-f", str(tt / "quote.pcrs"), "-g", h, "-q", nonce.hex()]
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < 2.0:
                subprocess.run(cmd, capture_output=True, check=True)
                n += 1
            cq_rate = n / (time.perf_counter() - start)
            rows.append(f"| {label} | {full_rate:,.0f} | {verify_rate:,.0f} | {quote_rate:,.0f} | {cq_rate:,.0f} |")
    return "\n".join([
        "## appraise: the appraisal core",
        "",
        "One core, single process. *Full appraisal* = what the core does per attestation: parse the evidence",
        "JSON + verify the quote + parse and replay a 100-event log (PCR 9, sha256) + bind every event's data",
        "+ evaluate a policy (PCR rule, events rule). *Verification* = the same without binding and policy.",
        "*Quote only* = `verify_quote` on parsed evidence. `tpm2_checkquote` (tpm2-tools 5.4) checks the",
        "same quote; it is timed per process, so its rate includes process start-up and loading the files.",
        "",
        "| AK | full appraisals/s | verifications/s | quote verifications/s | tpm2_checkquote runs/s |",
        "|---|---:|---:|---:|---:|",
        *rows,
    ])


if __name__ == "__main__":
    print(run())
