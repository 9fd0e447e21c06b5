"""from-log and boot facts on real firmware logs, checked against TPM-read PCR values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tboot_py.eventlog import read_log
from tboot_py.policy import BootFacts, Inputs, PcrRule, SecureBootRule, SignatureDbRule, evaluate
from tboot_py.policy.derive import boot_facts, firmware_events, policy_from_log

# Logs whose expected PCRs were read from the machine's TPM (corpus MANIFEST.tsv).
TPM_READ = ["go-tpm-tools__rhel8-uefi", "go-tpm-tools__cos-85-amd-sev", "go-attestation__windows_gcp_shielded_vm"]


def tpm_pcrs(corpus: Path, stem: str) -> dict[str, dict[int, bytes]]:
    doc = json.loads((corpus / "expected" / f"{stem}.pcrs.json").read_text())
    return {b: {int(i): bytes.fromhex(v) for i, v in regs.items()} for b, regs in doc.items()}


@pytest.mark.parametrize("stem", TPM_READ)
def test_from_log_policy_admits_the_tpm_values(corpus_dir: Path, stem: str) -> None:
    log = read_log(corpus_dir / "logs" / f"{stem}.bin")
    truth = tpm_pcrs(corpus_dir, stem)
    pol = policy_from_log(log, pcrs=[p for p in log.pcrs() if p <= 7], banks=sorted(set(truth) & set(log.bank_names)))
    facts = boot_facts(log)
    ins = Inputs(pcrs=truth, boot=facts, events=firmware_events(log))
    v = evaluate(pol, ins)
    assert v.allowed, [f.message for f in v.failures]
    # flip one bit of the TPM's PCR 7: denied, and the reason points at PCR 7
    bank = next(iter(truth))
    bad = {b: dict(r) for b, r in truth.items()}
    bad[bank][7] = bytes([bad[bank][7][0] ^ 1]) + bad[bank][7][1:]
    v = evaluate(pol, Inputs(pcrs=bad, boot=facts))
    assert not v.allowed and (v.failures[0].pcr, v.failures[0].bank) == (7, bank)
    assert v.failures[0].actual == bad[bank][7].hex()


def test_boot_facts_of_a_secure_boot_log(corpus_dir: Path) -> None:
    log = read_log(corpus_dir / "logs" / "secboot__eventlog1_qemu_ovmf_sb.bin")
    facts = boot_facts(log)
    assert facts.secure_boot is True
    assert facts.db and all(e.startswith(("x509:", "sha256:")) for e in facts.db)
    assert facts.authorities and facts.authorities <= (facts.db | {a for a in facts.authorities})
    pol = policy_from_log(log)
    kinds = {type(r) for r in pol.rules}
    assert {PcrRule, SecureBootRule, SignatureDbRule} <= kinds
    # the same policy denies when Secure Boot is off or an authority is not allowed
    off = BootFacts(secure_boot=False, db=facts.db, dbx=facts.dbx, authorities=facts.authorities)
    rules_sb = type(pol)(rules=tuple(r for r in pol.rules if isinstance(r, SecureBootRule | SignatureDbRule)))
    assert evaluate(rules_sb, Inputs(boot=facts)).allowed
    assert not evaluate(rules_sb, Inputs(boot=off)).allowed
    rogue = BootFacts(True, facts.db, facts.dbx, (facts.authorities or frozenset()) | {"x509:" + "00" * 32})
    v = evaluate(rules_sb, Inputs(boot=rogue))
    assert not v.allowed and v.failures[0].actual == "x509:" + "00" * 32


def test_boot_facts_secure_boot_off(corpus_dir: Path) -> None:
    log = read_log(corpus_dir / "logs" / "go-tpm-tools__ubuntu-2104-no-secure-boot.bin")
    assert boot_facts(log).secure_boot is False


def test_boot_facts_ignore_secure_boot_data_that_was_not_extended(corpus_dir: Path) -> None:
    """Flipping the SecureBoot byte in the event data (digest untouched, so the replay is the
    same) must not turn Secure Boot on in the facts a policy sees."""
    from tboot_py.eventlog import parse_log, replay
    from tboot_py.policy.derive import boot_facts

    raw = (corpus_dir / "logs" / "go-tpm-tools__ubuntu-2104-no-secure-boot.bin").read_bytes()
    log = parse_log(raw)
    assert boot_facts(log).secure_boot is False
    sb = next(e for e in log.events if e.pcr == 7 and b"S\x00e\x00c\x00u\x00r\x00e\x00B\x00o\x00o\x00t\x00" in e.data)
    end = sb.offset + len(raw[sb.offset:]) - len(raw[sb.offset:].split(sb.data, 1)[1])
    forged = bytearray(raw)
    assert forged[end - 1] == 0
    forged[end - 1] = 1
    flog = parse_log(bytes(forged))
    assert replay(flog) == replay(log)
    assert boot_facts(flog).secure_boot is not True
