"""Liveness, webhooks and the loss of a server: stale hosts are found whichever process
served them, state changes reach webhooks (HMAC-signed, retried), and `kill -9` of one of
two servers on one PostgreSQL loses no result and accepts no nonce twice."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tboot_py.server._harness import Postgres, start_server
from tboot_py.tpm.swtpm import free_port
from tests.integration.server_harness import Artifacts, hosts, make_artifacts, pg

__all__ = ["pg"]  # a fixture

pytestmark = pytest.mark.integration

SECRET = "s3cret-for-the-webhook-hmac"


class Receiver:
    """A webhook endpoint on loopback: answers 500 to the first delivery, 200 after."""

    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []
        self.bad_signatures = 0
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                want = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(want, self.headers.get("X-Tboot-Signature", "")):
                    outer.bad_signatures += 1
                first = not outer.got
                outer.got.append(json.loads(body))
                self.send_response(500 if first else 200)
                self.end_headers()

            def log_message(self, *a: object) -> None:
                pass

        self.port = free_port()
        self.httpd = HTTPServer(("127.0.0.1", self.port), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    return make_artifacts(tmp_path_factory.mktemp("artifacts"))


def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_stale_host_and_signed_retried_webhooks(tmp_path: Path, ca_dir: Path, art: Artifacts) -> None:
    rcv = Receiver()
    with hosts(tmp_path, ca_dir, 1, art) as (h,):
        srv = start_server(tmp_path / "server", "--ek-roots", str(ca_dir), "--interval", "2")
        try:
            with srv.admin() as c:
                assert c.post("/v1/webhooks", json={"url": rcv.url, "secret": SECRET}).status_code == 200
            assert h.agent_once([srv.url]).returncode == 1  # enrolled, then failing: no policy
            _wait(lambda: any(e["new_state"] == "stale" for e in rcv.got), 20, "the stale webhook")
            with srv.admin() as c:
                state = c.get(f"/v1/hosts/{h.name}").json()["state"]
                log = c.get("/v1/webhooks/deliveries").json()["deliveries"]
        finally:
            srv.stop()
    assert state == "stale"
    assert [(e["old_state"], e["new_state"]) for e in rcv.got][-2:] == [("enrolled", "failing"), ("failing", "stale")]
    assert rcv.got[0] == rcv.got[1]  # the first delivery failed (HTTP 500) and was retried
    assert rcv.bad_signatures == 0
    first = min(log, key=lambda d: d["id"])
    assert first["status"] == "delivered" and first["attempts"] == 2


AGENT_RESULT = re.compile(r"\(result (\d+)\)")


def test_kill_one_of_two_servers_under_load(tmp_path: Path, ca_dir: Path, art: Artifacts, pg: Postgres) -> None:
    db = pg.fresh_db("fault")
    interval = 3.0
    with hosts(tmp_path, ca_dir, 4, art) as hs:
        tok = tmp_path / "admin-token"
        a = start_server(tmp_path / "a", "--ek-roots", str(ca_dir), "--interval", str(interval), db=db,
                         token_file=tok)
        b = start_server(tmp_path / "b", "--ek-roots", str(ca_dir), "--interval", str(interval), db=db,
                         token_file=tok)
        agents: list[subprocess.Popen[str]] = []
        try:
            for h in hs:  # enrolled through A; denied until the policy arrives
                assert h.agent_once([a.url]).returncode == 1
            with a.admin() as c:
                for h in hs:
                    assert c.patch(f"/v1/hosts/{h.name}", json={"group": "lab"}).status_code == 200
                assert c.put("/v1/policies/group/lab", content=art.policy.read_bytes()).status_code == 200
            logs = []
            for h in hs[:3]:  # three agents that know both servers, A first
                f = (tmp_path / f"{h.name}.agent.log").open("w")
                logs.append(f)
                agents.append(subprocess.Popen(h.agent_argv([a.url, b.url], "--interval", "1"), stdout=f, stderr=f,
                                               text=True))
            time.sleep(6)
            # host3 attests once more, only through A, and goes silent as A dies.
            assert hs[3].agent_once([a.url]).returncode == 0
            a_id = httpx.get(a.url + "/v1/health").json()["server_id"]
            b_id = httpx.get(b.url + "/v1/health").json()["server_id"]
            a.kill()
            killed_at = time.time()
            time.sleep(2 * interval + 2)
            for p in agents:
                p.terminate()
                p.wait(timeout=30)
            for f in logs:
                f.close()
            with b.admin() as c:
                reported = {int(n) for h in hs[:3]
                            for n in AGENT_RESULT.findall((tmp_path / f"{h.name}.agent.log").read_text())}
                assert len(reported) >= 9, reported
                for rid in sorted(reported):  # every result an agent was told about is stored
                    assert c.get(f"/v1/results/{rid}").status_code == 200, rid
                listed = {h["name"]: h for h in c.get("/v1/hosts").json()["hosts"]}
                details = {h.name: c.get(f"/v1/hosts/{h.name}", params={"limit": 1000}).json() for h in hs}
        finally:
            for p in agents:
                if p.poll() is None:
                    p.kill()
            a.stop()
            b.stop()
    import psycopg

    with psycopg.connect(db) as conn:
        dup = conn.execute("SELECT nonce, count(*) FROM results WHERE kind = 'attest' GROUP BY nonce "
                           "HAVING count(*) > 1").fetchall()
        used = conn.execute("SELECT count(*) FROM nonces WHERE used_at IS NOT NULL").fetchone()
        n_attest = conn.execute("SELECT count(*) FROM results WHERE kind = 'attest'").fetchone()
    assert dup == []  # no nonce was accepted twice
    assert used is not None and n_attest is not None and used[0] == n_attest[0]
    for h in hs[:3]:
        after = sorted(r["created_at"] for r in details[h.name]["results"]
                       if r["created_at"] > killed_at and r["kind"] == "attest")
        assert after and after[0] - killed_at <= interval, (h.name, after[:1])  # the survivor took over
        assert all(r["server_id"] == b_id for r in details[h.name]["results"] if r["created_at"] > killed_at + 0.5)
        assert listed[h.name]["state"] == "passing"
    assert {r["server_id"] for h in hs[:3] for r in details[h.name]["results"]} >= {a_id, b_id}
    # host3 was last seen by the dead server; the survivor marked it stale.
    assert listed[hs[3].name]["state"] == "stale"
    stale = [e for e in details[hs[3].name]["events"] if e["new_state"] == "stale"]
    assert stale and stale[0]["server_id"] == b_id



def test_agent_attests_on_demand_and_backs_off_while_the_server_is_away(tmp_path: Path, ca_dir: Path,
                                                                        art: Artifacts) -> None:
    import signal

    with hosts(tmp_path, ca_dir, 1, art) as (h,):
        srv = start_server(tmp_path / "server", "--ek-roots", str(ca_dir))
        log = tmp_path / "agent.log"
        with log.open("w") as f:
            p = subprocess.Popen(h.agent_argv([srv.url], "--interval", "600"), stdout=f, stderr=f, text=True)
        try:
            _wait(lambda: len(AGENT_RESULT.findall(log.read_text())) == 1, 60, "the first attestation")
            p.send_signal(signal.SIGUSR1)  # on demand: no waiting for the 600 s interval
            _wait(lambda: len(AGENT_RESULT.findall(log.read_text())) == 2, 30, "the attestation on demand")
            srv.stop()
            p.send_signal(signal.SIGUSR1)
            _wait(lambda: "no server answered" in log.read_text() or "ConnectError" in log.read_text(), 30,
                  "the agent to notice the server is away")
            assert p.poll() is None  # it keeps trying (with backoff) instead of dying
        finally:
            p.terminate()
            p.wait(timeout=30)
            srv.stop()
