"""Attacks on the attestation service, each refused with its own error and never leaving a
passing result behind: replayed, foreign and expired nonces, another host's evidence, an AK
never activated, a forged EK chain, an oversized body, missing and wrong tokens."""

from __future__ import annotations

import base64
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tboot_py.agent.agent import Agent, AgentConfig
from tboot_py.attest import keys
from tboot_py.attest.quote import collect_evidence
from tboot_py.server._harness import Postgres, Server, start_server
from tboot_py.tpm.evidence import EventLogBlob
from tests.integration.server_harness import Artifacts, HostTPM, hosts, make_artifacts, pg

__all__ = ["pg"]  # a fixture

pytestmark = pytest.mark.integration


class Env:
    def __init__(self, srv: Server, hs: list[HostTPM]) -> None:
        self.srv, self.hs = srv, hs
        self.agents = [Agent(AgentConfig((srv.url,), h.tpm.tcti, h.state, h.name, (("tboot-py", h.log),)))
                       for h in hs]
        for a in self.agents:
            a.enroll()
        self.tokens = [str(a._saved["token"]) for a in self.agents]

    def post(self, path: str, token: str | None, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.post(self.srv.url + path, headers=headers, timeout=60, **kw)

    def nonce(self, i: int) -> str:
        r = self.post("/v1/attest/nonce", self.tokens[i])
        assert r.status_code == 200, r.text
        return str(r.json()["nonce"])

    def evidence(self, i: int, nonce: str) -> dict[str, Any]:
        h = self.hs[i]
        logs = [EventLogBlob("tboot-py", h.log.read_bytes())]
        tpm = keys.open_esapi(h.tpm.tcti)
        try:
            ak = keys.load_or_create_ak(tpm, h.state)
            return collect_evidence(tpm, ak, Agent.selection_for(logs), bytes.fromhex(nonce), logs).to_json()
        finally:
            tpm.close()

    def attest(self, i: int, nonce: str, evidence: dict[str, Any], token: str | None = None) -> httpx.Response:
        return self.post("/v1/attest", token or self.tokens[i], json={"nonce": nonce, "evidence": evidence})

    def passing_results(self) -> int:
        with self.srv.admin() as c:
            n = 0
            for h in c.get("/v1/hosts").json()["hosts"]:
                n += sum(1 for r in c.get(f"/v1/hosts/{h['name']}").json()["results"] if r["allowed"])
        return n


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, ca_dir: Path) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("attacks")
    art: Artifacts = make_artifacts(base / "art")
    db = None
    if request.param == "postgresql":
        cluster: Postgres = request.getfixturevalue("pg")
        db = cluster.fresh_db("attacks")
    with hosts(base, ca_dir, 2, art) as hs:
        srv = start_server(base / "server", "--ek-roots", str(ca_dir), "--nonce-ttl", "3", db=db)
        try:
            e = Env(srv, hs)
            with srv.admin() as c:
                for h in hs:
                    assert c.put(f"/v1/policies/host/{h.name}", content=art.policy.read_bytes()).status_code == 200
            yield e
        finally:
            srv.stop()


def _refused(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"] == code, r.text


def test_an_honest_attestation_passes(env: Env) -> None:
    n = env.nonce(0)
    r = env.attest(0, n, env.evidence(0, n))
    assert r.status_code == 200 and r.json()["allowed"] is True, r.text


def test_replayed_nonce(env: Env) -> None:
    n = env.nonce(0)
    ev = env.evidence(0, n)
    assert env.attest(0, n, ev).json()["allowed"] is True
    before = env.passing_results()
    _refused(env.attest(0, n, ev), 409, "nonce_reused")
    assert env.passing_results() == before


def test_nonce_of_another_host(env: Env) -> None:
    n = env.nonce(1)
    before = env.passing_results()
    _refused(env.attest(0, n, env.evidence(0, n)), 403, "nonce_other_host")
    assert env.passing_results() == before
    # The nonce is still good for its own host.
    assert env.attest(1, n, env.evidence(1, n)).json()["allowed"] is True


def test_unknown_nonce(env: Env) -> None:
    n = "ab" * 32
    _refused(env.attest(0, n, env.evidence(0, n)), 403, "nonce_unknown")


def test_expired_nonce(env: Env) -> None:
    n = env.nonce(0)
    ev = env.evidence(0, n)
    time.sleep(3.5)
    before = env.passing_results()
    _refused(env.attest(0, n, ev), 403, "nonce_expired")
    assert env.passing_results() == before


def test_evidence_of_another_host(env: Env) -> None:
    """Host 1's TPM quotes host 0's nonce; host 0 sends it: the quote is not by host 0's AK."""
    n = env.nonce(0)
    r = env.attest(0, n, env.evidence(1, n))
    assert r.status_code == 200 and r.json()["allowed"] is False
    assert r.json()["status"] == "contraindicated"
    assert "signature" in r.json()["reason"].lower() or "ak" in r.json()["reason"].lower(), r.json()["reason"]
    with env.srv.admin() as c:
        stored = c.get(f"/v1/results/{r.json()['result_id']}").json()
    assert stored["allowed"] is False and stored["host"] == env.hs[0].name


def test_ak_never_activated(env: Env) -> None:
    """Enrollment without the credential: no token, nothing to attest with."""
    h = env.hs[0]
    tpm = keys.open_esapi(h.tpm.tcti)
    try:
        ek = keys.create_ek(tpm, "rsa")
        ak = keys.load_or_create_ak(tpm, h.state)
    finally:
        tpm.close()
    assert ek.certificate is not None
    r = env.post("/v1/enroll", None, json={"name": "intruder", "ek_certificate": base64.b64encode(ek.certificate)
                                           .decode(), "ak_public": base64.b64encode(ak.public.raw).decode()})
    assert r.status_code == 200, r.text
    eid = r.json()["enrollment_id"]
    _refused(env.post(f"/v1/enroll/{eid}/activate", None, json={"secret": base64.b64encode(b"x" * 32).decode()}),
             403, "activation_failed")
    # A failed activation is final, even with the right secret afterwards.
    _refused(env.post(f"/v1/enroll/{eid}/activate", None, json={"secret": base64.b64encode(b"y" * 32).decode()}),
             403, "activation_failed")
    with env.srv.admin() as c:
        assert all(x["name"] != "intruder" for x in c.get("/v1/hosts").json()["hosts"])


def test_forged_ek_chain(env: Env) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "swtpm-localca")])  # the right name, another key
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    from cryptography.hazmat.primitives import serialization

    h = env.hs[0]
    tpm = keys.open_esapi(h.tpm.tcti)
    try:
        ak = keys.load_or_create_ak(tpm, h.state)
    finally:
        tpm.close()
    der = cert.public_bytes(serialization.Encoding.DER)
    r = env.post("/v1/enroll", None, json={"name": "forged", "ek_certificate": base64.b64encode(der).decode(),
                                           "ak_public": base64.b64encode(ak.public.raw).decode()})
    _refused(r, 403, "ek_chain_invalid")


def test_oversized_body(env: Env) -> None:
    n = env.nonce(0)
    big = {"nonce": n, "evidence": {"format": "tboot-py-evidence/1", "pad": "A" * (5 * 1024 * 1024)}}
    _refused(env.post("/v1/attest", env.tokens[0], json=big), 413, "body_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap counts what arrives
        for _ in range(6):
            yield b" " * (1024 * 1024)

    _refused(env.post("/v1/attest", env.tokens[0], content=chunks()), 413, "body_too_large")
    # The nonce was never consumed: it still works.
    assert env.attest(0, n, env.evidence(0, n)).json()["allowed"] is True


def test_missing_and_wrong_tokens(env: Env) -> None:
    _refused(env.post("/v1/attest/nonce", None), 401, "missing_token")
    _refused(env.post("/v1/attest/nonce", "tpa_not-a-token"), 401, "bad_token")
    n = env.nonce(0)
    _refused(env.attest(0, n, {}, token="tpa_forged"), 401, "bad_token")
    # An agent token is not an admin token, and the admin token is not an agent's.
    r = httpx.get(env.srv.url + "/v1/hosts", headers={"Authorization": f"Bearer {env.tokens[0]}"})
    _refused(r, 401, "bad_token")
    _refused(httpx.get(env.srv.url + "/v1/hosts"), 401, "missing_token")
    _refused(env.post("/v1/attest/nonce", env.srv.token), 401, "bad_token")


def test_bad_evidence_is_refused_after_the_nonce_is_spent(env: Env) -> None:
    n = env.nonce(0)
    _refused(env.attest(0, n, {"format": "something else"}), 400, "bad_evidence")
    _refused(env.attest(0, n, env.evidence(0, n)), 409, "nonce_reused")


def test_concurrent_replays_of_one_nonce_are_accepted_once(env: Env) -> None:
    """The evidence is appraised before the nonce is consumed (in the transaction that stores
    the result): of many simultaneous submissions of one nonce, exactly one is accepted."""
    from concurrent.futures import ThreadPoolExecutor

    n = env.nonce(1)
    ev = env.evidence(1, n)
    before = env.passing_results()
    with ThreadPoolExecutor(8) as ex:
        rs = list(ex.map(lambda _: env.attest(1, n, ev), range(8)))
    assert sorted(r.status_code for r in rs) == [200] + [409] * 7, [r.text for r in rs]
    assert all(r.json()["error"] == "nonce_reused" for r in rs if r.status_code == 409)
    assert env.passing_results() == before + 1
