"""An agent with an ECC P-256 AK (AgentConfig.ak_alg="ecc") enrolls and attests like an RSA one,
and the server binds exactly that ECDSA key."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tboot_py.agent.agent import Agent, AgentConfig
from tboot_py.server._harness import start_server
from tboot_py.tpm import wire as st
from tests.integration.server_harness import hosts, make_artifacts

pytestmark = pytest.mark.integration


def test_ecc_ak_agent_enrolls_and_attests(tmp_path: Path, ca_dir: Path) -> None:
    art = make_artifacts(tmp_path / "art")
    with hosts(tmp_path, ca_dir, 1, art) as (h,):
        srv = start_server(tmp_path / "server", "--ek-roots", str(ca_dir))
        try:
            with srv.admin() as c:
                assert c.put(f"/v1/policies/host/{h.name}", content=art.policy.read_bytes()).status_code == 200
            agent = Agent(AgentConfig((srv.url,), h.tpm.tcti, h.state, h.name, (("tboot-py", h.log),),
                                      ak_alg="ecc"))
            try:
                result = agent.attest()
            finally:
                agent.close()
            assert result.allowed, result.reason
            with srv.admin() as c:
                stored = c.get(f"/v1/results/{result.result_id}").json()
            ak = st.parse_public(base64.b64decode(stored["evidence"]["ak_public"]))
            assert ak.type == st.ALG_ECC and ak.scheme == st.ALG_ECDSA
        finally:
            srv.stop()
