"""Reading and writing policy files: TOML, JSON, and DSSE-signed JSON.

``load_policy(path, trust_keys)`` is what a launch gate or verifier calls. With trust keys,
only a DSSE envelope with a valid signature by one of them is accepted; without, TOML, JSON
and (unverified) envelopes load. Any failure raises; a caller that catches it must deny.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from tboot_py import jsonin
from tboot_py.errors import InputError, PolicyError, PolicySignatureError
from tboot_py.fileio import STDIN, read_input
from tboot_py.fileio import write_atomic as write_atomic  # callers that write policies
from tboot_py.policy import _serialize, signing
from tboot_py.policy.model import Policy


def read_bytes(path: Path | str, what: str = "policy") -> bytes:
    """A policy file's bytes, or standard input's for ``-``; PolicyError if unreadable."""
    try:
        return read_input(path, what, _serialize.MAX_TEXT + signing.MAX_ENVELOPE)
    except InputError as e:
        raise PolicyError(e.diagnostics()) from e


def _decode_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PolicyError(f"policy is not UTF-8 text (byte {e.start})") from e


def _sniff_json(text: str) -> object | None:
    if not text.lstrip().startswith("{"):
        return None
    try:
        doc: object = jsonin.loads(text)
    except (ValueError, RecursionError) as e:
        raise PolicyError(f"policy is not valid JSON: {e}") from e
    return doc


def loads_policy(data: bytes, trust_keys: Sequence[signing.PublicKey] | None = None,
                 source: str = "policy", allow_empty: bool = False) -> Policy:
    """Parse policy bytes (TOML, JSON or a DSSE envelope). See :func:`load_policy`."""
    try:
        text = _decode_text(data)
        doc = _sniff_json(text)
        if doc is not None and signing.looks_like_envelope(doc):
            env = signing.parse_envelope(doc)
            signed_by: tuple[str, ...] = ()
            if trust_keys is not None:
                signed_by = signing.verify_envelope(env, trust_keys)
            policy = _serialize.loads_json(env.payload, allow_empty)
            return dataclasses.replace(policy, signed_by=signed_by)
        if trust_keys is not None:
            raise PolicySignatureError("the policy is not signed, but trusted keys are configured: "
                                       "only a signed policy (DSSE envelope) is accepted")
        if doc is not None:
            return _serialize.policy_from_dict(doc, allow_empty)
        return _serialize.loads_toml(text, allow_empty)
    except PolicyError as e:
        raise PolicyError(f"{source}: {e}") from e
    except PolicySignatureError as e:
        raise PolicySignatureError(f"{source}: {e}") from e


def load_policy(path: Path | str, trust_keys: Sequence[Path | str] | None = None,
                allow_empty: bool = False) -> Policy:
    """Load and validate a policy file.

    ``trust_keys``: PEM public keys (Ed25519 / ECDSA P-256). When given (even empty), the
    file must be a DSSE envelope signed by at least one of them, else PolicySignatureError
    (exit 1). A file that cannot be read, parsed or validated raises PolicyError (exit 2).
    Either way the caller must deny.
    """
    keys = None if trust_keys is None else [signing.load_public_key(Path(k)) for k in trust_keys]
    source = "<stdin>" if str(path) == STDIN else str(path)
    return loads_policy(read_bytes(path), keys, source=source, allow_empty=allow_empty)


def dumps_policy(policy: Policy, fmt: str) -> str:
    if fmt == "toml":
        return _serialize.dumps_toml(policy)
    if fmt == "json":
        return _serialize.dumps_json(policy)
    raise InputError(f"unknown policy format {fmt!r} (toml or json)")


def format_for(path: Path) -> str:
    return "json" if path.suffix.lower() == ".json" else "toml"


def save_policy(policy: Policy, path: Path | str, fmt: str | None = None) -> None:
    """Write atomically (temp file + rename), as TOML unless the name ends in .json."""
    p = Path(path)
    write_atomic(p, dumps_policy(policy, fmt or format_for(p)).encode(), what="policy")


def sign_policy(policy: Policy, keys: Sequence[signing.PrivateKey]) -> signing.Envelope:
    """A DSSE envelope over the policy's canonical JSON."""
    return signing.sign_payload(_serialize.dumps_canonical_json(policy), keys)
