"""Policy schema: TOML and JSON load to the same model; every bad field is named."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest

from tboot_py.errors import PolicyError
from tboot_py.policy import (
    AnyOf,
    Component,
    DigestKind,
    Mode,
    PcrRule,
    ReferenceRule,
    load_policy,
    loads_policy,
    save_policy,
)
from tboot_py.policy._serialize import policy_from_dict, policy_to_dict

K256 = hashlib.sha256(b"kernel").hexdigest()
K1 = hashlib.sha1(b"kernel").hexdigest()
P17 = hashlib.sha256(b"pcr17").hexdigest()

TOML = f"""
version = 1
mode = "continue"
name = "xen host"

[[rules]]
type = "reference"
component = "kernel"
[[rules.values]]
label = "6.1.0-18"
kind = "pe"
expires = 2030-01-31
digests = {{ sha256 = "{K256}", sha1 = "{K1}" }}

[[rules]]
type = "pcrs"
[rules.values.sha256]
17 = "{P17}"

[[rules]]
type = "any-of"
[[rules.rules]]
type = "secure-boot"
enabled = true
[[rules.rules]]
type = "events"
require = [{{ type = "EV_IPL", pcr = 9, data_contains = "tboot-py" }}]
"""


def doc() -> dict:  # type: ignore[type-arg]
    return json.loads(json.dumps({
        "version": 1,
        "rules": [{"type": "reference", "component": "kernel",
                   "values": [{"label": "a", "kind": "pe", "digests": {"sha256": K256}}]}],
    }))


def test_toml_and_json_give_the_same_model() -> None:
    pol = loads_policy(TOML.encode())
    assert pol.mode is Mode.CONTINUE and pol.name == "xen host"
    ref = pol.rules[0]
    assert isinstance(ref, ReferenceRule) and ref.component is Component.KERNEL
    v = ref.values[0]
    assert v.kind is DigestKind.PE and v.expires == dt.date(2030, 1, 31)
    assert v.digest("sha256") == hashlib.sha256(b"kernel").digest()
    assert v.digest("sha1") == hashlib.sha1(b"kernel").digest()
    pcrs = pol.rules[1]
    assert isinstance(pcrs, PcrRule) and pcrs.as_dict() == {"sha256": {17: bytes.fromhex(P17)}}
    assert isinstance(pol.rules[2], AnyOf) and len(pol.rules[2].rules) == 2
    as_json = json.dumps(policy_to_dict(pol)).encode()
    assert loads_policy(as_json) == pol


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    pol = loads_policy(TOML.encode())
    for name in ("p.toml", "p.json"):
        save_policy(pol, tmp_path / name)
        assert load_policy(tmp_path / name) == pol
    assert (tmp_path / "p.json").read_text().lstrip().startswith("{")
    assert "[[rules]]" in (tmp_path / "p.toml").read_text()


def test_default_mode_is_halt() -> None:
    assert policy_from_dict(doc()).mode is Mode.HALT


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda d: d.pop("version"), "version"),
    (lambda d: d.update(version=2), "version"),
    (lambda d: d.update(mode="lenient"), "mode"),
    (lambda d: d.update(extra=1), "extra"),
    (lambda d: d.update(rules=[]), "rules"),
    (lambda d: d["rules"][0].update(type="magic"), "rules[0].type"),
    (lambda d: d["rules"][0].pop("type"), "rules[0].type"),
    (lambda d: d["rules"][0].update(component="bios"), "rules[0].component"),
    (lambda d: d["rules"][0].update(values=[]), "rules[0].values"),
    (lambda d: d["rules"][0]["values"][0].update(kind="elf"), "rules[0].values[0].kind"),
    (lambda d: d["rules"][0]["values"][0].update(expires="tomorrow"), "rules[0].values[0].expires"),
    (lambda d: d["rules"][0]["values"][0].update(digests={"sha256": "abcd"}), "rules[0].values[0].digests.sha256"),
    (lambda d: d["rules"][0]["values"][0].update(digests={"sha256": "zz" * 32}),
     "rules[0].values[0].digests.sha256"),
    (lambda d: d["rules"][0]["values"][0].update(digests={"md5": "00" * 16}), "rules[0].values[0].digests.md5"),
    (lambda d: d["rules"][0]["values"][0].update(digests={}), "rules[0].values[0].digests"),
    (lambda d: d["rules"][0]["values"][0].update(label=7), "rules[0].values[0].label"),
    (lambda d: d["rules"][0]["values"][0].update(colour="red"), "rules[0].values[0].colour"),
    (lambda d: d["rules"].append({"type": "pcrs", "values": {"sha256": {"24": "00" * 32}}}),
     "rules[1].values.sha256.24"),
    (lambda d: d["rules"].append({"type": "pcrs", "values": {"sha256": {"17": "00" * 32}}}),
     "rules[1].values.sha256.17"),
    (lambda d: d["rules"].append({"type": "pcrs", "values": {"sha256": {"18": "ff" * 32}}}),
     "rules[1].values.sha256.18"),
    (lambda d: d["rules"].append({"type": "pcrs", "values": {"sha1": {"7": "00" * 32}}}),
     "rules[1].values.sha1.7"),
    (lambda d: d["rules"].append({"type": "any-of", "rules": []}), "rules[1].rules"),
    (lambda d: d["rules"].append({"type": "any-of", "rules": [{"type": "secure-boot", "enabled": "yes"}]}),
     "rules[1].rules[0].enabled"),
    (lambda d: d["rules"].append({"type": "uefi-db", "db_allow": ["sha256:12"]}), "rules[1].db_allow[0]"),
    (lambda d: d["rules"].append({"type": "events", "require": [{}]}), "rules[1].require[0]"),
    (lambda d: d["rules"].append({"type": "events", "forbid": [{"type": "EV_BOGUS"}]}), "rules[1].forbid[0].type"),
    (lambda d: d["rules"].append({"type": "tboot-vlp", "bank": "sha256",
                                  "entries": [{"mod_num": 128, "pcr": 18, "hash_type": "any"}]}),
     "rules[1].entries[0].mod_num"),
])
def test_bad_field_is_named(mutate, field: str) -> None:  # type: ignore[no-untyped-def]
    d = doc()
    mutate(d)
    with pytest.raises(PolicyError) as ei:
        policy_from_dict(d)
    msg = ei.value.diagnostics()
    assert msg.startswith(field + ":"), msg
    assert ei.value.exit_code == 2


def test_unreadable_and_garbage_policies(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.toml")
    with pytest.raises(PolicyError, match="directory"):
        load_policy(tmp_path)
    (tmp_path / "bad.toml").write_text("version = 1\nrules = [")
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(tmp_path / "bad.toml")
    (tmp_path / "bad.json").write_text('{"version": 1,')
    with pytest.raises(PolicyError, match="not valid JSON"):
        load_policy(tmp_path / "bad.json")
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(PolicyError, match="UTF-8"):
        load_policy(tmp_path / "bin")


def test_deep_nesting_is_refused() -> None:
    rule: dict = {"type": "secure-boot"}  # type: ignore[type-arg]
    for _ in range(40):
        rule = {"type": "all-of", "rules": [rule]}
    with pytest.raises(PolicyError, match="nested deeper"):
        policy_from_dict({"version": 1, "rules": [rule]})
