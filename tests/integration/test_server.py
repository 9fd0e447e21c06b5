"""The attestation service end to end: a real `tboot-py serve` process (SQLite), real swtpm
agents, enrollment through ActivateCredential, policies, EARs checked offline, approvals."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tboot_py.server._harness import Postgres, Server, start_server
from tests.conftest import run_cli
from tests.integration.server_harness import Artifacts, HostTPM, hosts, json_out, make_artifacts, ok, pg

__all__ = ["pg"]  # a fixture

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    return make_artifacts(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(params=["sqlite", "postgresql"])
def fleet(request: pytest.FixtureRequest, tmp_path: Path, ca_dir: Path,
          art: Artifacts) -> Iterator[tuple[Server, list[HostTPM]]]:
    db = None
    if request.param == "postgresql":
        cluster: Postgres = request.getfixturevalue("pg")
        db = cluster.fresh_db("fleet")
    with hosts(tmp_path, ca_dir, 3, art) as hs:
        srv = start_server(tmp_path / "server", "--ek-roots", str(ca_dir), "--trust-key", str(art.pub),
                           "--interval", "30", db=db)
        try:
            yield srv, hs
        finally:
            srv.stop()


def _fleet_cli(srv: Server, *argv: str) -> dict[str, object]:
    tok = Path(srv.log).parent / "admin-token"
    r = ok(run_cli("fleet", *argv, "--server", srv.url, "--admin-token-file", str(tok), "--json"))
    out: dict[str, object] = json.loads(r.out)
    return out


def test_three_agents_enroll_attest_and_follow_policy(fleet: tuple[Server, list[HostTPM]], art: Artifacts,
                                                      tmp_path: Path) -> None:
    srv, hs = fleet
    # Three agents at once: enrolled (EK chain, ActivateCredential), then denied: no policy yet.
    with ThreadPoolExecutor(3) as pool:
        first = list(pool.map(lambda h: h.agent_once([srv.url]), hs))
    for p in first:
        assert p.returncode == 1, p.stderr
        assert json_out(p)["reason"].startswith("no policy"), json_out(p)["reason"]
    listed = _fleet_cli(srv, "hosts")
    assert {h["name"]: h["state"] for h in listed["hosts"]} == {h.name: "failing" for h in hs}  # type: ignore[index,union-attr]

    # A signed policy for their group: the stored evidence is re-appraised at once.
    for h in hs:
        _fleet_cli(srv, "set", h.name, "--group", "lab")
    put = _fleet_cli(srv, "policy", "set", "group", "lab", str(art.policy))
    assert put["version"] == 1
    assert sorted(r["status"] for r in put["reappraised"]) == ["affirming"] * 3  # type: ignore[union-attr]
    assert {h["state"] for h in _fleet_cli(srv, "hosts")["hosts"]} == {"passing"}  # type: ignore[union-attr]

    # Fresh attestations pass; the EAR verifies offline with the published JWKS.
    with ThreadPoolExecutor(3) as pool:
        second = list(pool.map(lambda h: h.agent_once([srv.url]), hs))
    assert [p.returncode for p in second] == [0, 0, 0], [p.stderr for p in second]
    import httpx

    jwks = tmp_path / "jwks.json"
    jwks.write_text(httpx.get(srv.url + "/.well-known/jwks.json").text)
    ear = json_out(second[0])["ear"]
    v = run_cli("ear", "verify", str(ear), "--key", str(jwks), "--host", hs[0].name, "--max-age", "300", "--json")
    assert v.rc == 0, v.out
    claims = json.loads(v.out)
    assert claims["status"] == "affirming" and claims["policy"].startswith("sha256:")
    assert len(claims["pcr_digest"]) == 64
    # Someone else's key does not verify it.
    other = run_cli("ear", "verify", str(ear), "--key", str(tmp_path / "artifacts-other.pem"))
    assert other.rc == 2
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    (tmp_path / "other.pem").write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert run_cli("ear", "verify", str(ear), "--key", str(tmp_path / "other.pem")).rc == 1

    # host1 launches another kernel: denied, with the expected and actual digests stored.
    evil = tmp_path / "evil-vmlinuz"
    evil.write_bytes(b"another kernel " * 4096)
    hs[1].extend(evil, art.initrd)
    bad = hs[1].agent_once([srv.url])
    assert bad.returncode == 1
    out = json_out(bad)
    assert out["status"] == "contraindicated"
    ev = run_cli("ear", "verify", str(out["ear"]), "--key", str(jwks), "--json")
    assert ev.rc == 1 and json.loads(ev.out)["status"] == "contraindicated"
    res = _fleet_cli(srv, "result", str(out["result_id"]))
    assert res["allowed"] is False and res["evidence"]["format"] == "tboot-py-evidence/1"  # type: ignore[index]
    failures = [r for r in res["appraisal"]["verdict"]["reasons"] if not r["passed"]]  # type: ignore[index]
    assert any(r["component"] == "kernel" and r["expected"] and r["actual"] for r in failures)
    detail = _fleet_cli(srv, "host", hs[1].name)
    assert detail["state"] == "failing"

    # The launch gate can require a fresh, affirming EAR first: host1's is contraindicated.
    def launch(h: HostTPM, *extra: str) -> object:
        return run_cli("launch", "--require-ear", srv.url, "--ear-host", h.name, *extra, "--policy",
                       str(art.policy), "--trust-key", str(art.pub), "--tpm", h.tpm.tcti, "--state",
                       str(h.state), "--log", str(h.log), "--kernel", str(art.kernel), "--initrd", str(art.initrd),
                       "--cmdline", "console=hvc0", "--dry-run")

    deny = launch(hs[1])
    assert deny.rc == 1 and "contraindicated" in deny.err, deny  # type: ignore[attr-defined]
    assert not (hs[1].state / "audit.jsonl").exists()  # refused before anything was measured
    assert launch(hs[0], "--ear-key", str(jwks)).rc == 0  # type: ignore[attr-defined]
    assert launch(hs[0], "--ear-max-age", "0").rc == 1  # type: ignore[attr-defined]
    assert [e["new_state"] for e in detail["events"]][:2] == ["failing", "passing"]  # type: ignore[index]


def test_changed_ak_waits_for_approval(fleet: tuple[Server, list[HostTPM]], art: Artifacts) -> None:
    srv, hs = fleet
    h = hs[0]
    assert h.agent_once([srv.url]).returncode == 1  # enrolled; no policy
    # The host comes back with a new AK (its agent state lost, another persistent handle).
    shutil.rmtree(h.state)
    import subprocess

    p = subprocess.run(h.agent_argv([srv.url], "--once", "--json", "--ak-handle", "0x81010003"),
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 1 and "pending_approval" in p.stderr, p.stderr
    assert _fleet_cli(srv, "pending")["pending"][0]["host"] == h.name  # type: ignore[index]
    _fleet_cli(srv, "approve", h.name)
    again = subprocess.run(h.agent_argv([srv.url], "--once", "--json", "--ak-handle", "0x81010003"),
                           capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 1 and json_out(again)["reason"].startswith("no policy")
    events = [e["detail"] for e in _fleet_cli(srv, "host", h.name)["events"]]  # type: ignore[union-attr]
    assert "re-enrolled with new keys" in events
