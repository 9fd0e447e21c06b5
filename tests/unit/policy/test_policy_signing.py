"""DSSE policy signatures: good, tampered, wrong key, unsigned, rotated keys."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tboot_py.errors import PolicyError, PolicySignatureError
from tboot_py.fileio import write_atomic
from tboot_py.policy import load_policy, loads_policy, sign_policy
from tboot_py.policy.signing import PAYLOAD_TYPE, generate_key, keyid, write_keypair

POLICY = f"""version = 1
[[rules]]
type = "reference"
component = "kernel"
[[rules.values]]
label = "k"
digests = {{ sha256 = "{hashlib.sha256(b'k').hexdigest()}" }}
"""


@pytest.fixture(params=["ed25519", "ecdsa-p256"])
def keypair(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path]:
    key = tmp_path / f"{request.param}.key"
    pub = write_keypair(generate_key(request.param), key)
    return key, pub


def signed_file(tmp_path: Path, key: Path, name: str = "signed.json") -> Path:
    from tboot_py.policy.signing import load_private_key

    env = sign_policy(loads_policy(POLICY.encode()), [load_private_key(key)])
    out = tmp_path / name
    write_atomic(out, env.to_json().encode())
    return out


def test_pae_matches_the_dsse_spec_example() -> None:
    from tboot_py.policy.signing import pae

    # DSSE protocol.md: PAE("http://example.com/HelloWorld", "hello world")
    assert pae("http://example.com/HelloWorld", b"hello world") == \
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"


def test_sign_and_verify(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    key, pub = keypair
    signed = signed_file(tmp_path, key)
    pol = load_policy(signed, trust_keys=[pub])
    assert pol == loads_policy(POLICY.encode())
    pub_key = serialization.load_pem_public_key(pub.read_bytes())
    der = pub_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert pol.signed_by == (hashlib.sha256(der).hexdigest(),)
    env = json.loads(signed.read_text())
    assert env["payloadType"] == PAYLOAD_TYPE
    assert env["signatures"][0]["keyid"] == hashlib.sha256(der).hexdigest()
    assert (key.stat().st_mode & 0o777) == 0o600


def test_signature_verifies_with_cryptography_directly(tmp_path: Path) -> None:
    """An independent check of the PAE bytes: verify with cryptography, not our code."""
    key = tmp_path / "k"
    pub = write_keypair(generate_key("ed25519"), key)
    env = json.loads(signed_file(tmp_path, key).read_text())
    payload = base64.b64decode(env["payload"])
    t = PAYLOAD_TYPE.encode()
    msg = b"DSSEv1 " + str(len(t)).encode() + b" " + t + b" " + str(len(payload)).encode() + b" " + payload
    pk = serialization.load_pem_public_key(pub.read_bytes())
    assert isinstance(pk, ed25519.Ed25519PublicKey)
    pk.verify(base64.b64decode(env["signatures"][0]["sig"]), msg)


def test_tampered_payload(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    key, pub = keypair
    signed = signed_file(tmp_path, key)
    env = json.loads(signed.read_text())
    doc = json.loads(base64.b64decode(env["payload"]))
    doc["mode"] = "nonfatal"
    env["payload"] = base64.b64encode(json.dumps(doc).encode()).decode()
    signed.write_text(json.dumps(env))
    with pytest.raises(PolicySignatureError, match="no signature on the policy verifies") as ei:
        load_policy(signed, trust_keys=[pub])
    assert ei.value.exit_code == 1


def test_tampered_payload_type(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    key, pub = keypair
    signed = signed_file(tmp_path, key)
    env = json.loads(signed.read_text())
    env["payloadType"] = "application/json"
    signed.write_text(json.dumps(env))
    with pytest.raises(PolicyError, match="payloadType"):
        load_policy(signed, trust_keys=[pub])


def test_wrong_key(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    key, _ = keypair
    other = write_keypair(generate_key("ed25519"), tmp_path / "other")
    with pytest.raises(PolicySignatureError):
        load_policy(signed_file(tmp_path, key), trust_keys=[other])


def test_unsigned_policy_with_trust_keys(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    _, pub = keypair
    for name, text in (("p.toml", POLICY),
                       ("p.json", json.dumps({"version": 1, "rules": [{"type": "secure-boot"}]}))):
        (tmp_path / name).write_text(text)
        with pytest.raises(PolicySignatureError, match="not signed"):
            load_policy(tmp_path / name, trust_keys=[pub])
        load_policy(tmp_path / name)  # loads fine without trust keys


def test_empty_trust_key_list_refuses(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    key, _ = keypair
    with pytest.raises(PolicySignatureError, match="no trusted keys"):
        load_policy(signed_file(tmp_path, key), trust_keys=[])


def test_no_signatures(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    key, pub = keypair
    signed = signed_file(tmp_path, key)
    env = json.loads(signed.read_text())
    env["signatures"] = []
    signed.write_text(json.dumps(env))
    with pytest.raises(PolicySignatureError, match="no signatures"):
        load_policy(signed, trust_keys=[pub])


def test_key_rotation(tmp_path: Path) -> None:
    old_key, new_key = tmp_path / "old", tmp_path / "new"
    old_pub = write_keypair(generate_key("ed25519"), old_key)
    new_pub = write_keypair(generate_key("ecdsa-p256"), new_key)
    by_old = signed_file(tmp_path, old_key, "old.json")
    by_new = signed_file(tmp_path, new_key, "new.json")
    # during rotation both keys are trusted
    assert load_policy(by_old, trust_keys=[old_pub, new_pub]).signed_by
    assert load_policy(by_new, trust_keys=[old_pub, new_pub]).signed_by
    # after it, only the new one
    load_policy(by_new, trust_keys=[new_pub])
    with pytest.raises(PolicySignatureError):
        load_policy(by_old, trust_keys=[new_pub])
    # a keyid that names the wrong key is only a hint: the signature still verifies
    env = json.loads(by_new.read_text())
    env["signatures"][0]["keyid"] = "00" * 32
    by_new.write_text(json.dumps(env))
    assert load_policy(by_new, trust_keys=[old_pub, new_pub]).signed_by


def test_unsupported_trust_keys(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    key, _ = keypair
    rsa_pub = tmp_path / "rsa.pub"
    rsa_pub.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(PolicyError, match="only Ed25519 and ECDSA P-256"):
        load_policy(signed_file(tmp_path, key), trust_keys=[rsa_pub])
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("not a key")
    with pytest.raises(PolicyError, match="not a PEM public key"):
        load_policy(signed_file(tmp_path, key), trust_keys=[garbage])


def test_ecdsa_signature_from_another_signer_verifies(tmp_path: Path) -> None:
    """An envelope built by hand with cryptography (not our signer) loads."""
    priv = ec.generate_private_key(ec.SECP256R1())
    pub = tmp_path / "p.pub"
    pub.write_bytes(priv.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    payload = json.dumps({"version": 1, "rules": [{"type": "secure-boot"}]}).encode()
    t = PAYLOAD_TYPE.encode()
    msg = b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)
    env = {"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(payload).decode(),
           "signatures": [{"keyid": keyid(priv.public_key()),
                           "sig": base64.b64encode(priv.sign(msg, ec.ECDSA(hashes.SHA256()))).decode()}]}
    f = tmp_path / "hand.json"
    f.write_text(json.dumps(env))
    assert load_policy(f, trust_keys=[pub]).rules[0].type_name == "secure-boot"
