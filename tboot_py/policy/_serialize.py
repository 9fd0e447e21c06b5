"""The one policy schema, shared by TOML (for authors) and JSON (for machines).

``policy_from_dict`` validates a decoded document and builds the model; every error is a
PolicyError that names the offending field by its path (``rules[1].values[0].digests.sha256``).
``policy_to_dict`` is its inverse and produces a document that both TOML and JSON can hold
(no nulls; dates as ``YYYY-MM-DD`` strings in JSON and native dates in TOML).
The schema is documented in README.md, section "Policy".
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import tomllib
from collections.abc import Mapping
from typing import Any

import tomli_w

from tboot_py import algorithms, jsonin
from tboot_py.errors import PolicyError, UnknownAlgorithmError
from tboot_py.policy.model import (
    DRTM_PCRS,
    SCHEMA_VERSION,
    VLP_MAX_PCR,
    VLP_PCR_NONE,
    AllOf,
    AnyOf,
    Component,
    DigestKind,
    EventMatcher,
    EventRule,
    Mode,
    PcrRule,
    Policy,
    ReferenceRule,
    ReferenceValue,
    Rule,
    SecureBootRule,
    SignatureDbRule,
    TbootVlpRule,
    VlpEntry,
    VlpModNum,
)

#: Caps on hostile documents (DESIGN.md, "Parsed input is hostile").
MAX_DEPTH = 16
MAX_ITEMS = 20_000
MAX_TEXT = 1 << 20  # bytes of policy text (TOML or JSON) we are willing to decode
MAX_STRING = 8192

#: TCG PC Client Platform Firmware Profile 2.0, section 10.4.1 "Event Types".
EVENT_TYPES: dict[str, int] = {
    "EV_PREBOOT_CERT": 0x0, "EV_POST_CODE": 0x1, "EV_NO_ACTION": 0x3, "EV_SEPARATOR": 0x4,
    "EV_ACTION": 0x5, "EV_EVENT_TAG": 0x6, "EV_S_CRTM_CONTENTS": 0x7, "EV_S_CRTM_VERSION": 0x8,
    "EV_CPU_MICROCODE": 0x9, "EV_PLATFORM_CONFIG_FLAGS": 0xA, "EV_TABLE_OF_DEVICES": 0xB,
    "EV_COMPACT_HASH": 0xC, "EV_IPL": 0xD, "EV_IPL_PARTITION_DATA": 0xE,
    "EV_NONHOST_CODE": 0xF, "EV_NONHOST_CONFIG": 0x10, "EV_NONHOST_INFO": 0x11,
    "EV_OMIT_BOOT_DEVICE_EVENTS": 0x12,
    "EV_EFI_VARIABLE_DRIVER_CONFIG": 0x80000001, "EV_EFI_VARIABLE_BOOT": 0x80000002,
    "EV_EFI_BOOT_SERVICES_APPLICATION": 0x80000003, "EV_EFI_BOOT_SERVICES_DRIVER": 0x80000004,
    "EV_EFI_RUNTIME_SERVICES_DRIVER": 0x80000005, "EV_EFI_GPT_EVENT": 0x80000006,
    "EV_EFI_ACTION": 0x80000007, "EV_EFI_PLATFORM_FIRMWARE_BLOB": 0x80000008,
    "EV_EFI_HANDOFF_TABLES": 0x80000009, "EV_EFI_PLATFORM_FIRMWARE_BLOB2": 0x8000000A,
    "EV_EFI_HANDOFF_TABLES2": 0x8000000B, "EV_EFI_VARIABLE_BOOT2": 0x8000000C,
    "EV_EFI_HCRTM_EVENT": 0x80000010, "EV_EFI_VARIABLE_AUTHORITY": 0x800000E0,
    "EV_EFI_SPDM_FIRMWARE_BLOB": 0x800000E1, "EV_EFI_SPDM_FIRMWARE_CONFIG": 0x800000E2,
}
EVENT_TYPE_NAMES = {v: k for k, v in EVENT_TYPES.items()}

_HEX = re.compile(r"[0-9a-fA-F]*")
_DB_ENTRY = re.compile(r"(sha256|x509):([0-9a-fA-F]{64})")
_RULE_KEYS: dict[str, frozenset[str]] = {
    "reference": frozenset({"type", "id", "component", "values"}),
    "pcrs": frozenset({"type", "id", "values"}),
    "secure-boot": frozenset({"type", "id", "enabled"}),
    "uefi-db": frozenset({"type", "id", "db_allow", "db_forbid", "dbx_require",
                          "authorities_allow", "authorities_forbid"}),
    "events": frozenset({"type", "id", "require", "forbid"}),
    "tboot-vlp": frozenset({"type", "id", "bank", "control", "reserved", "modules", "entries"}),
    "all-of": frozenset({"type", "id", "rules"}),
    "any-of": frozenset({"type", "id", "rules"}),
}


class _Budget:
    def __init__(self) -> None:
        self.items = 0

    def take(self, path: str, n: int = 1) -> None:
        self.items += n
        if self.items > MAX_ITEMS:
            raise PolicyError(f"{path}: policy too large (more than {MAX_ITEMS} items)")


# ---------------------------------------------------------------- field helpers

def _table(obj: object, path: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise PolicyError(f"{path}: expected a table/object, got {_tname(obj)}")
    return obj


def _tname(obj: object) -> str:
    return {dict: "table", list: "array", str: "string", bool: "boolean", int: "integer",
            float: "float"}.get(type(obj), type(obj).__name__)


def _no_extra(obj: Mapping[str, Any], allowed: frozenset[str] | set[str], path: str) -> None:
    for k in obj:
        if k not in allowed:
            where = f"{path}.{k}" if path else str(k)
            raise PolicyError(f"{where}: unknown field (allowed: {', '.join(sorted(allowed))})")


def _str(obj: Mapping[str, Any], key: str, path: str, required: bool = False) -> str | None:
    if key not in obj:
        if required:
            raise PolicyError(f"{_join(path, key)}: required field is missing")
        return None
    v = obj[key]
    if not isinstance(v, str):
        raise PolicyError(f"{_join(path, key)}: expected a string, got {_tname(v)}")
    if len(v) > MAX_STRING:
        raise PolicyError(f"{_join(path, key)}: string longer than {MAX_STRING} characters")
    return v


def _req_str(obj: Mapping[str, Any], key: str, path: str) -> str:
    v = _str(obj, key, path, required=True)
    assert v is not None
    return v


def _bool(obj: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
    if key not in obj:
        return default
    v = obj[key]
    if not isinstance(v, bool):
        raise PolicyError(f"{_join(path, key)}: expected true or false, got {_tname(v)}")
    return v


def _int(v: object, path: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise PolicyError(f"{path}: expected an integer, got {_tname(v)}")
    if not lo <= v <= hi:
        raise PolicyError(f"{path}: {v} is out of range {lo}..{hi}")
    return v


def _list(obj: Mapping[str, Any], key: str, path: str, budget: _Budget) -> list[Any]:
    if key not in obj:
        return []
    v = obj[key]
    if not isinstance(v, list):
        raise PolicyError(f"{_join(path, key)}: expected an array, got {_tname(v)}")
    budget.take(_join(path, key), len(v))
    return v


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _bank(name: object, path: str) -> str:
    if not isinstance(name, str):
        raise PolicyError(f"{path}: expected a bank name string, got {_tname(name)}")
    try:
        return algorithms.by_name(name).name
    except UnknownAlgorithmError as e:
        raise PolicyError(f"{path}: {e}") from e


def _hex(v: object, path: str, size: int | None = None) -> bytes:
    if not isinstance(v, str):
        raise PolicyError(f"{path}: expected a hex string, got {_tname(v)}")
    if len(v) > 2 * 4096 or not _HEX.fullmatch(v) or len(v) % 2:
        raise PolicyError(f"{path}: not a hex string")
    b = bytes.fromhex(v)
    if size is not None and len(b) != size:
        raise PolicyError(f"{path}: expected {size} bytes ({2 * size} hex digits), got {len(b)}")
    return b


def _digest_for(bank: str, v: object, path: str) -> bytes:
    return _hex(v, path, algorithms.by_name(bank).size)


def _enum(enum_cls: Any, v: object, path: str) -> Any:
    if not isinstance(v, str):
        raise PolicyError(f"{path}: expected a string, got {_tname(v)}")
    try:
        return enum_cls(v)
    except ValueError:
        allowed = ", ".join(m.value for m in enum_cls)
        raise PolicyError(f"{path}: unknown value {v!r} (allowed: {allowed})") from None


def _date(v: object, path: str) -> _dt.date:
    if isinstance(v, _dt.datetime):
        raise PolicyError(f"{path}: expected a date (YYYY-MM-DD), got a date-time")
    if isinstance(v, _dt.date):
        return v
    if isinstance(v, str):
        try:
            return _dt.date.fromisoformat(v)
        except ValueError:
            pass
        raise PolicyError(f"{path}: {v!r} is not a date (YYYY-MM-DD)")
    raise PolicyError(f"{path}: expected a date (YYYY-MM-DD), got {_tname(v)}")


def _event_type(v: object, path: str) -> int:
    if isinstance(v, str):
        if v in EVENT_TYPES:
            return EVENT_TYPES[v]
        raise PolicyError(f"{path}: unknown event type {v!r} (use a TCG name such as EV_IPL, or a number)")
    return _int(v, path, 0, 0xFFFFFFFF)


# ---------------------------------------------------------------- decoding

def policy_from_dict(doc: object, allow_empty: bool = False) -> Policy:
    """Validate a decoded TOML/JSON document and build a Policy. Raises PolicyError only.

    ``allow_empty`` accepts a draft without rules (``policy init`` writes one); such a
    policy never loads for evaluation."""
    budget = _Budget()
    top = _table(doc, "policy")
    _no_extra(top, {"version", "mode", "name", "description", "rules", "allow_launch", "warnings", "banks",
                    "record_pcrs"}, "")
    if "version" not in top:
        raise PolicyError(f"version: required field is missing (this tboot-py reads version {SCHEMA_VERSION})")
    version = _int(top["version"], "version", 0, 1 << 31)
    if version != SCHEMA_VERSION:
        raise PolicyError(f"version: unsupported policy version {version} (this tboot-py reads {SCHEMA_VERSION})")
    mode = _enum(Mode, top["mode"], "mode") if "mode" in top else Mode.HALT
    rules = tuple(_rule(r, f"rules[{i}]", budget, 1) for i, r in enumerate(_list(top, "rules", "", budget)))
    if not rules and not allow_empty:
        raise PolicyError("rules: a policy needs at least one rule (an empty policy would allow everything)")
    return Policy(rules=rules, mode=mode, name=_str(top, "name", ""),
                  description=_str(top, "description", ""), version=version,
                  allow_launch=_strings(top, "allow_launch", budget), warnings=_strings(top, "warnings", budget),
                  banks=_banks(top), record_pcrs=_record_pcrs(top))


def _record_pcrs(top: Mapping[str, Any]) -> tuple[int, ...] | None:
    """``record_pcrs = [9]``: the PCRs that hold tboot-py's records."""
    if "record_pcrs" not in top:
        return None
    raw = top["record_pcrs"]
    if not isinstance(raw, list) or not raw:
        raise PolicyError("record_pcrs: must be a non-empty list of PCR indices")
    out: list[int] = []
    for i, v in enumerate(raw):
        out.append(_int(v, f"record_pcrs[{i}]", 0, 23))
    if len(set(out)) != len(out):
        raise PolicyError("record_pcrs: a PCR is listed twice")
    return tuple(out)


def _strings(top: Mapping[str, Any], key: str, budget: _Budget) -> tuple[str, ...]:
    if key not in top:
        return ()
    items = _list(top, key, "", budget)
    for i, v in enumerate(items):
        if not isinstance(v, str) or not v or len(v) > MAX_STRING:
            raise PolicyError(f"{key}[{i}]: expected a non-empty string")
    return tuple(items)


def _banks(top: Mapping[str, Any]) -> tuple[str, ...] | None:
    """``banks = ["sha256", ...]``: the PCR banks every quote must cover and replay."""
    if "banks" not in top:
        return None
    raw = top["banks"]
    if not isinstance(raw, list) or not raw or not all(isinstance(b, str) for b in raw):
        raise PolicyError("banks: must be a non-empty list of bank names")
    out: list[str] = []
    for b in raw:
        try:
            name = algorithms.by_name(b).name
        except UnknownAlgorithmError as e:
            raise PolicyError(f"banks: unknown bank {b!r}") from e
        if name in out:
            raise PolicyError(f"banks: {name} is listed twice")
        out.append(name)
    return tuple(out)


def _rule(obj: object, path: str, budget: _Budget, depth: int) -> Rule:
    if depth > MAX_DEPTH:
        raise PolicyError(f"{path}: rules nested deeper than {MAX_DEPTH}")
    budget.take(path)
    t = _table(obj, path)
    rtype = _req_str(t, "type", path)
    if rtype not in _RULE_KEYS:
        raise PolicyError(f"{path}.type: unknown rule type {rtype!r} (known: {', '.join(_RULE_KEYS)})")
    _no_extra(t, _RULE_KEYS[rtype], path)
    rid = _str(t, "id", path)
    if rtype == "reference":
        return _reference(t, path, budget, rid)
    if rtype == "pcrs":
        return _pcrs(t, path, budget, rid)
    if rtype == "secure-boot":
        return SecureBootRule(enabled=_bool(t, "enabled", path, True), id=rid)
    if rtype == "uefi-db":
        lists = {k: _db_list(t, k, path, budget) for k in sorted(_RULE_KEYS["uefi-db"] - {"type", "id"})}
        if not any(lists.values()):
            raise PolicyError(f"{path}: a uefi-db rule needs at least one non-empty list")
        return SignatureDbRule(id=rid, **lists)
    if rtype == "events":
        req = tuple(_matcher(m, f"{path}.require[{i}]", budget)
                    for i, m in enumerate(_list(t, "require", path, budget)))
        forb = tuple(_matcher(m, f"{path}.forbid[{i}]", budget)
                     for i, m in enumerate(_list(t, "forbid", path, budget)))
        if not req and not forb:
            raise PolicyError(f"{path}: an events rule needs 'require' or 'forbid' entries")
        return EventRule(require=req, forbid=forb, id=rid)
    if rtype == "tboot-vlp":
        return _vlp(t, path, budget, rid)
    children = tuple(_rule(r, f"{path}.rules[{i}]", budget, depth + 1)
                     for i, r in enumerate(_list(t, "rules", path, budget)))
    if not children:
        raise PolicyError(f"{path}.rules: an {rtype} rule needs at least one rule")
    return AllOf(children, rid) if rtype == "all-of" else AnyOf(children, rid)


def _reference(t: Mapping[str, Any], path: str, budget: _Budget, rid: str | None) -> ReferenceRule:
    if "component" not in t:
        raise PolicyError(f"{path}.component: required field is missing")
    comp = _enum(Component, t["component"], f"{path}.component")
    raw = _list(t, "values", path, budget)
    if not raw:
        raise PolicyError(f"{path}.values: a reference rule needs at least one value")
    values = tuple(_value(v, f"{path}.values[{i}]", comp, budget) for i, v in enumerate(raw))
    return ReferenceRule(component=comp, values=values, id=rid)


def _value(obj: object, path: str, comp: Component, budget: _Budget) -> ReferenceValue:
    t = _table(obj, path)
    _no_extra(t, {"label", "version", "kind", "expires", "digests", "cmdline"}, path)
    kind = _enum(DigestKind, t["kind"], f"{path}.kind") if "kind" in t else DigestKind.FILE
    digests: list[tuple[str, bytes]] = []
    if "digests" in t:
        dt = _table(t["digests"], f"{path}.digests")
        budget.take(f"{path}.digests", len(dt))
        for name, hexv in dt.items():
            bank = _bank(name, f"{path}.digests.{name}")
            if any(b == bank for b, _ in digests):
                raise PolicyError(f"{path}.digests.{name}: bank {bank} given twice")
            digests.append((bank, _digest_for(bank, hexv, f"{path}.digests.{name}")))
    cmdline = _str(t, "cmdline", path)
    if not digests and not (comp.is_cmdline and cmdline is not None):
        raise PolicyError(f"{path}.digests: a reference value needs at least one digest"
                          + (" (or a literal 'cmdline')" if comp.is_cmdline else ""))
    label = _str(t, "label", path) or _str(t, "version", path) or f"value-{path.rsplit('[', 1)[-1].rstrip(']')}"
    return ReferenceValue(label=label, digests=tuple(digests), kind=kind, version=_str(t, "version", path),
                          expires=_date(t["expires"], f"{path}.expires") if "expires" in t else None,
                          cmdline=cmdline)


def _pcrs(t: Mapping[str, Any], path: str, budget: _Budget, rid: str | None) -> PcrRule:
    if "values" not in t:
        raise PolicyError(f"{path}.values: required field is missing")
    banks = _table(t["values"], f"{path}.values")
    out: list[tuple[str, tuple[tuple[int, bytes], ...]]] = []
    for name, regs in banks.items():
        bpath = f"{path}.values.{name}"
        bank = _bank(name, bpath)
        if any(b == bank for b, _ in out):
            raise PolicyError(f"{bpath}: bank {bank} given twice")
        rt = _table(regs, bpath)
        budget.take(bpath, len(rt))
        vals: dict[int, bytes] = {}
        for k, hexv in rt.items():
            ppath = f"{bpath}.{k}"
            if not isinstance(k, str) or not k.isascii() or not k.isdigit() or len(k) > 2:
                raise PolicyError(f"{ppath}: a PCR index must be a number 0..23")
            idx = _int(int(k), ppath, 0, 23)
            if idx in vals:
                raise PolicyError(f"{ppath}: PCR {idx} given twice")
            val = _digest_for(bank, hexv, ppath)
            if idx in DRTM_PCRS and val in (b"\x00" * len(val), b"\xff" * len(val)):
                raise PolicyError(f"{ppath}: an all-zero or all-FF value for DRTM PCR {idx} means no "
                                  "dynamic launch happened; it cannot be an expected value")
            vals[idx] = val
        if not vals:
            raise PolicyError(f"{bpath}: no PCR values for bank {bank}")
        out.append((bank, tuple(sorted(vals.items()))))
    if not out:
        raise PolicyError(f"{path}.values: a pcrs rule needs at least one bank")
    return PcrRule(expected=tuple(out), id=rid)


def _db_list(t: Mapping[str, Any], key: str, path: str, budget: _Budget) -> tuple[str, ...]:
    out: list[str] = []
    for i, v in enumerate(_list(t, key, path, budget)):
        p = f"{path}.{key}[{i}]"
        if not isinstance(v, str) or not _DB_ENTRY.fullmatch(v):
            raise PolicyError(f"{p}: expected 'sha256:<64 hex>' or 'x509:<64 hex sha256 of the DER>'")
        out.append(v.lower())
    return tuple(out)


def _matcher(obj: object, path: str, budget: _Budget) -> EventMatcher:
    t = _table(obj, path)
    _no_extra(t, {"pcr", "type", "digest", "data_contains", "description"}, path)
    digest: tuple[str, bytes] | None = None
    if "digest" in t:
        d = t["digest"]
        if not isinstance(d, str) or ":" not in d:
            raise PolicyError(f"{path}.digest: expected '<bank>:<hex>'")
        bname, hexv = d.split(":", 1)
        bank = _bank(bname, f"{path}.digest")
        digest = (bank, _digest_for(bank, hexv, f"{path}.digest"))
    m = EventMatcher(
        pcr=_int(t["pcr"], f"{path}.pcr", 0, 0xFFFFFFFF) if "pcr" in t else None,
        event_type=_event_type(t["type"], f"{path}.type") if "type" in t else None,
        digest=digest,
        data_contains=_str(t, "data_contains", path),
        description=_str(t, "description", path),
    )
    if m.pcr is None and m.event_type is None and m.digest is None and m.data_contains is None:
        raise PolicyError(f"{path}: an event matcher needs at least one of pcr, type, digest, data_contains")
    return m


def _vlp(t: Mapping[str, Any], path: str, budget: _Budget, rid: str | None) -> TbootVlpRule:
    if "bank" not in t:
        raise PolicyError(f"{path}.bank: required field is missing")
    bank = _bank(t["bank"], f"{path}.bank")
    size = algorithms.by_name(bank).size
    control = _int(t.get("control", 1), f"{path}.control", 0, 0xFFFFFFFF)
    reserved = _int(t.get("reserved", 0), f"{path}.reserved", 0, 0xFFFFFFFF)
    modules: tuple[Component, ...] = TbootVlpRule.__dataclass_fields__["modules"].default  # type: ignore[assignment]
    if "modules" in t:
        raw = _list(t, "modules", path, budget)
        modules = tuple(_enum(Component, m, f"{path}.modules[{i}]") for i, m in enumerate(raw))
    entries: list[VlpEntry] = []
    raw_entries = _list(t, "entries", path, budget)
    if len(raw_entries) > 255:
        raise PolicyError(f"{path}.entries: at most 255 entries (tb_policy_t.num_entries is one byte)")
    for i, e in enumerate(raw_entries):
        ep = f"{path}.entries[{i}]"
        et = _table(e, ep)
        _no_extra(et, {"mod_num", "pcr", "hash_type", "hashes", "nv_index"}, ep)
        mod = et.get("mod_num")
        specials = {"any": VlpModNum.ANY, "nv": VlpModNum.NV, "nv_raw": VlpModNum.NV_RAW}
        if isinstance(mod, str) and mod in specials:
            mod_num = specials[mod]
        elif mod is None:
            raise PolicyError(f"{ep}.mod_num: required field is missing")
        else:
            mod_num = _int(mod, f"{ep}.mod_num", 0, VlpModNum.MAX)
        pcr_v = et.get("pcr")
        if pcr_v == "none":
            pcr = VLP_PCR_NONE
        elif pcr_v is None:
            raise PolicyError(f"{ep}.pcr: required field is missing")
        else:
            pcr = _int(pcr_v, f"{ep}.pcr", 0, VLP_MAX_PCR)
        htype = et.get("hash_type")
        if htype not in ("any", "image"):
            raise PolicyError(f"{ep}.hash_type: expected 'any' or 'image'")
        hashes_raw = _list(et, "hashes", ep, budget)
        if len(hashes_raw) > 255:
            raise PolicyError(f"{ep}.hashes: at most 255 hashes (num_hashes is one byte)")
        hashes = tuple(_hex(h, f"{ep}.hashes[{j}]", size) for j, h in enumerate(hashes_raw))
        nv_index = _int(et.get("nv_index", 0), f"{ep}.nv_index", 0, 0xFFFFFFFF)
        entries.append(VlpEntry(mod_num=mod_num, pcr=pcr, hash_any=htype == "any", hashes=hashes,
                                nv_index=nv_index))
    return TbootVlpRule(bank=bank, entries=tuple(entries), control=control, reserved=reserved,
                        modules=modules, id=rid)


# ---------------------------------------------------------------- encoding

def policy_to_dict(policy: Policy, dates_as_strings: bool = True) -> dict[str, Any]:
    """The inverse of :func:`policy_from_dict`."""
    d: dict[str, Any] = {"version": policy.version, "mode": policy.mode.value}
    if policy.name is not None:
        d["name"] = policy.name
    if policy.description is not None:
        d["description"] = policy.description
    if policy.banks is not None:
        d["banks"] = list(policy.banks)
    if policy.record_pcrs is not None:
        d["record_pcrs"] = list(policy.record_pcrs)
    if policy.allow_launch:
        d["allow_launch"] = list(policy.allow_launch)
    if policy.warnings:
        d["warnings"] = list(policy.warnings)
    d["rules"] = [rule_to_dict(r, dates_as_strings) for r in policy.rules]
    return d


def rule_to_dict(rule: Rule, dates_as_strings: bool = True) -> dict[str, Any]:
    d: dict[str, Any] = {"type": rule.type_name}
    if rule.id is not None:
        d["id"] = rule.id
    if isinstance(rule, ReferenceRule):
        d["component"] = rule.component.value
        d["values"] = [_value_to_dict(v, dates_as_strings) for v in rule.values]
    elif isinstance(rule, PcrRule):
        d["values"] = {bank: {str(i): v.hex() for i, v in regs} for bank, regs in rule.expected}
    elif isinstance(rule, SecureBootRule):
        d["enabled"] = rule.enabled
    elif isinstance(rule, SignatureDbRule):
        for k in ("db_allow", "db_forbid", "dbx_require", "authorities_allow", "authorities_forbid"):
            if getattr(rule, k):
                d[k] = list(getattr(rule, k))
    elif isinstance(rule, EventRule):
        if rule.require:
            d["require"] = [_matcher_to_dict(m) for m in rule.require]
        if rule.forbid:
            d["forbid"] = [_matcher_to_dict(m) for m in rule.forbid]
    elif isinstance(rule, TbootVlpRule):
        d["bank"] = rule.bank
        d["control"] = rule.control
        if rule.reserved:
            d["reserved"] = rule.reserved
        d["modules"] = [c.value for c in rule.modules]
        d["entries"] = [_vlp_entry_to_dict(e) for e in rule.entries]
    else:
        d["rules"] = [rule_to_dict(r, dates_as_strings) for r in rule.rules]
    return d


def _value_to_dict(v: ReferenceValue, dates_as_strings: bool) -> dict[str, Any]:
    d: dict[str, Any] = {"label": v.label, "kind": v.kind.value}
    if v.version is not None:
        d["version"] = v.version
    if v.expires is not None:
        d["expires"] = v.expires.isoformat() if dates_as_strings else v.expires
    if v.cmdline is not None:
        d["cmdline"] = v.cmdline
    if v.digests:
        d["digests"] = {b: dg.hex() for b, dg in v.digests}
    return d


def _matcher_to_dict(m: EventMatcher) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if m.pcr is not None:
        d["pcr"] = m.pcr
    if m.event_type is not None:
        d["type"] = EVENT_TYPE_NAMES.get(m.event_type, m.event_type)
    if m.digest is not None:
        d["digest"] = f"{m.digest[0]}:{m.digest[1].hex()}"
    if m.data_contains is not None:
        d["data_contains"] = m.data_contains
    if m.description is not None:
        d["description"] = m.description
    return d


def _vlp_entry_to_dict(e: VlpEntry) -> dict[str, Any]:
    names = {VlpModNum.ANY: "any", VlpModNum.NV: "nv", VlpModNum.NV_RAW: "nv_raw"}
    d: dict[str, Any] = {
        "mod_num": names.get(e.mod_num, e.mod_num),
        "pcr": "none" if e.pcr == VLP_PCR_NONE else e.pcr,
        "hash_type": "any" if e.hash_any else "image",
        "hashes": [h.hex() for h in e.hashes],
    }
    if e.nv_index:
        d["nv_index"] = e.nv_index
    return d


# ---------------------------------------------------------------- text formats

def loads_toml(text: str, allow_empty: bool = False) -> Policy:
    if len(text) > MAX_TEXT:
        raise PolicyError(f"policy larger than {MAX_TEXT} bytes")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(f"policy is not valid TOML: {e}") from e
    except RecursionError as e:
        raise PolicyError("policy is not valid TOML: nested too deeply") from e
    return policy_from_dict(doc, allow_empty)


def loads_json(text: str | bytes, allow_empty: bool = False) -> Policy:
    if len(text) > MAX_TEXT:
        raise PolicyError(f"policy larger than {MAX_TEXT} bytes")
    try:
        doc = jsonin.loads(text)  # a key given twice is an error, not last-wins
    except (ValueError, RecursionError) as e:  # JSONDecodeError and bad UTF-8 are ValueErrors
        raise PolicyError(f"policy is not valid JSON: {e}") from e
    return policy_from_dict(doc, allow_empty)


def dumps_json(policy: Policy) -> str:
    return json.dumps(policy_to_dict(policy), indent=2) + "\n"


def dumps_canonical_json(policy: Policy) -> bytes:
    """Compact, key-sorted JSON: the payload that gets signed."""
    return json.dumps(policy_to_dict(policy), sort_keys=True, separators=(",", ":")).encode()


def dumps_toml(policy: Policy) -> str:
    return tomli_w.dumps(policy_to_dict(policy, dates_as_strings=False))
