"""measurements/: each reference policy is what `policy from-log` derives from its real
source, its quoted boot passes it, and a boot from another machine does not."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from tboot_py.policy.io import load_policy

POLICY = REPO / "measurements" / "policies" / "gce-windows-shielded-vm.toml"
STEM = "go-attestation__windows_gcp_shielded_vm"


def test_every_reference_policy_is_listed_and_loads() -> None:
    readme = (REPO / "measurements" / "README.md").read_text()
    files = sorted((REPO / "measurements" / "policies").glob("*.toml"))
    assert files == [POLICY]
    for f in files:
        assert f"policies/{f.name}" in readme
        assert load_policy(f).rules


def test_policy_is_what_from_log_derives(corpus_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "derived.toml"
    r = run_cli("policy", "from-log", str(corpus_dir / "logs" / f"{STEM}.bin"), "-o", str(out))
    assert r.rc == 0, r.err
    derived, kept = load_policy(out), load_policy(POLICY)
    assert kept.rules == derived.rules
    assert kept.mode == derived.mode
    assert kept.banks == derived.banks == ("sha1",)  # a SHA1-format log: the quote covers sha1


@pytest.fixture
def quoted_boot(corpus_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The corpus quote and log as a tboot-py-evidence/1 bundle, and the AK public area."""
    q = json.loads((corpus_dir / "expected" / f"{STEM}.quote.json").read_text())
    log = (corpus_dir / "logs" / f"{STEM}.bin").read_bytes()

    def b64(hexstr: str) -> str:
        return base64.b64encode(bytes.fromhex(hexstr)).decode()

    evidence = {"format": "tboot-py-evidence/1", "attest": b64(q["quote_hex"]),
                "signature": b64(q["signature_hex"]), "ak_public": b64(q["ak_public_hex"]),
                "pcrs": q["pcrs"], "event_logs": [{"name": "firmware", "log": base64.b64encode(log).decode()}],
                "ek_certificate": None}
    ev, ak = tmp_path / "evidence.json", tmp_path / "ak.tpmt"
    ev.write_text(json.dumps(evidence))
    ak.write_bytes(bytes.fromhex(q["ak_public_hex"]))
    assert q["nonce_hex"] == ""
    return ev, ak


def appraise(evidence: Path, ak: Path, policy: Path) -> tuple[int, dict[str, object]]:
    # The corpus quote carries no nonce: only an explicit re-check of archived evidence takes it.
    r = run_cli("verify", "--ak", str(ak), "--no-freshness", "--policy", str(policy), "--json", str(evidence))
    assert r.rc in (0, 1), r.err
    out: dict[str, object] = json.loads(r.out)
    return r.rc, out


def test_quoted_boot_passes_its_reference_policy(quoted_boot: tuple[Path, Path]) -> None:
    rc, out = appraise(*quoted_boot, POLICY)
    assert rc == 0 and out["verified"] is True and out["allowed"] is True and out["fresh"] is False
    verdict = out["verdict"]
    assert isinstance(verdict, dict)
    passed = {(r["rule"], r["check"]) for r in verdict["reasons"] if r["passed"]}
    assert {("expected-pcrs", "pcrs"), ("secure-boot", "secure-boot"), ("uefi-db", "uefi-db")} <= passed


def test_another_machines_policy_denies_it(quoted_boot: tuple[Path, Path], corpus_dir: Path, tmp_path: Path) -> None:
    """A policy derived from a Secure Boot-off GCE VM: the quote verifies, the policy denies,
    and the reasons name the diverging PCR and the Secure Boot state."""
    other = tmp_path / "other.toml"
    log = corpus_dir / "logs" / "go-attestation__coreos36_gce_shielded_vm_nosb.bin"
    # Its log is crypto-agile (sha1, sha256); this quote covers sha1 only, so a policy over
    # both banks denies before any rule (the next test); compare on sha1.
    assert run_cli("policy", "from-log", str(log), "--banks", "sha1", "--mode", "continue", "-o", str(other)).rc == 0
    rc, out = appraise(*quoted_boot, other)
    assert rc == 1 and out["verified"] is True and out["allowed"] is False
    verdict = out["verdict"]
    assert isinstance(verdict, dict)
    failed = [r for r in verdict["reasons"] if not r["passed"]]
    assert any(r["rule"] == "expected-pcrs" and r["pcr"] == 0 and r["bank"] == "sha1" for r in failed)
    assert any(r["rule"] == "secure-boot" and r["expected"] == ["disabled"] and r["actual"] == "enabled"
               for r in failed)


def test_policy_requiring_sha256_denies_a_sha1_only_quote(quoted_boot: tuple[Path, Path], corpus_dir: Path,
                                                           tmp_path: Path) -> None:
    other = tmp_path / "both.toml"
    log = corpus_dir / "logs" / "go-attestation__coreos36_gce_shielded_vm_nosb.bin"
    assert run_cli("policy", "from-log", str(log), "-o", str(other)).rc == 0
    rc, out = appraise(*quoted_boot, other)
    assert rc == 1 and out["verified"] is False and "sha256 is required" in str(out["reason"])
