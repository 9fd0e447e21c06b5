"""Hostile input: the VLP parser raises only ParseError, the policy loader only PolicyError."""

from __future__ import annotations

import contextlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from tboot_py.errors import ParseError, PolicyError, PolicySignatureError
from tboot_py.policy import loads_policy
from tboot_py.policy._serialize import policy_from_dict
from tboot_py.policy.vlp import parse_vlp, serialize_vlp

HEADER = bytes([2, 2, 0x0B, 1, 0, 0, 0, 0, 0, 0, 0])


@settings(max_examples=200)
@given(st.binary(max_size=600))
def test_vlp_random_bytes(data: bytes) -> None:
    try:
        vlp = parse_vlp(data)
    except ParseError:
        return
    assert serialize_vlp(vlp) == data  # whatever parses, round-trips


@settings(max_examples=200)
@given(st.integers(0, 255), st.binary(max_size=400))
def test_vlp_plausible_header(n: int, body: bytes) -> None:
    try:
        vlp = parse_vlp(HEADER + bytes([n]) + body)
    except ParseError as e:
        assert 0 <= e.offset <= len(HEADER) + 1 + len(body)
        return
    assert serialize_vlp(vlp) == HEADER + bytes([n]) + body


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.sampled_from(
        ["reference", "pcrs", "any-of", "all-of", "kernel", "pe", "sha256", "halt", "00" * 32, "2030-01-01"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["version", "mode", "rules", "type", "component", "values", "digests", "sha256",
                         "kind", "label", "expires", "17", "entries", "bank", "require", "x"]), children,
        max_size=5),
    max_leaves=30)


@settings(max_examples=200)
@given(json_values)
def test_policy_random_documents(doc: object) -> None:
    with contextlib.suppress(PolicyError):
        policy_from_dict(doc)


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_policy_random_bytes(data: bytes) -> None:
    with contextlib.suppress(PolicyError):
        loads_policy(data)
    with contextlib.suppress(PolicyError, PolicySignatureError):
        loads_policy(json.dumps({"payloadType": "application/vnd.tboot-py.policy+json",
                                 "payload": data.hex(), "signatures": []}).encode(), trust_keys=[])
