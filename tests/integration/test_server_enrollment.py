"""Enrollment rules of the service (in-process, real swtpm TPMs, SQLite): with
--require-approval nothing is bound before an administrator approves, a second TPM cannot
slip in under a name that awaits approval, and approving one enrollment refuses the others."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tboot_py.attest import credential, keys
from tboot_py.server.db import make_engine, migrate
from tboot_py.server.service import Config, Service, ServiceError
from tboot_py.tpm.swtpm import Swtpm
from tests.conftest import start_swtpm

pytestmark = pytest.mark.integration


@pytest.fixture
def two_tpms(tmp_path: Path, ca_dir: Path) -> Iterator[list[Swtpm]]:
    tpms = [start_swtpm(tmp_path / f"tpm{i}", ca_dir, banks="sha256") for i in range(2)]
    try:
        yield tpms
    finally:
        for t in tpms:
            t.stop()


def _enroll(svc: Service, tpm: Swtpm, state: Path, name: str) -> tuple[str, bytes]:
    """Start an enrollment and activate its credential in the TPM: (enrollment id, secret)."""
    t = keys.open_esapi(tpm.tcti)
    try:
        ak = keys.load_or_create_ak(t, state)
        ek = keys.create_ek(t, "rsa")
        assert ek.certificate is not None
        ch = svc.enroll_start(name, ek.certificate, ak.public.raw)
        return ch.enrollment_id, credential.activate(t, ak, "rsa", ch.id_object, ch.encrypted_secret)
    finally:
        t.close()


def test_require_approval_and_no_second_tpm_under_a_pending_name(two_tpms: list[Swtpm], tmp_path: Path,
                                                                 ca_dir: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    svc = Service(engine, Config(ek_roots=ca_dir, require_approval=True))
    first = _enroll(svc, two_tpms[0], tmp_path / "a", "web1")
    assert svc.enroll_finish(*first).status == "pending"
    assert svc.host_by_name("web1").state == "pending"
    # Another TPM under the same name while the first waits: it waits too.
    second = _enroll(svc, two_tpms[1], tmp_path / "b", "web1")
    out = svc.enroll_finish(*second)
    assert out.status == "pending" and out.token is None
    assert svc.host_by_name("web1").ak_public is None
    assert len(svc.pending_enrollments()) == 2
    # Approving takes the newest; the other is refused for good.
    assert svc.approve("web1") == second[0]
    done = svc.enroll_finish(*second)
    assert done.status == "enrolled" and done.token
    host = svc.host_for_token(done.token)
    assert host.state == "enrolled" and host.ak_public is not None
    with pytest.raises(ServiceError) as e:
        svc.enroll_finish(*first)
    assert e.value.code == "enrollment_refused"
    with pytest.raises(ServiceError) as e:
        svc.enroll_finish(*second)
    assert e.value.code == "already_issued"
