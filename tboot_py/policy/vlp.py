"""tboot Verified Launch policy files (the binary that ``tb_polgen`` writes), version 2.

Layout (tboot docs, include/tb_policy.h; all fields packed, little-endian)::

    tb_policy_t        u8 version (=2) | u8 policy_type | u8 hash_alg | u32 policy_control
                       | u32 reserved | u8 num_entries | entries[num_entries]
    tb_policy_entry_t  u8 mod_num | u8 pcr | u8 hash_type | u32 nv_index (reserved)
                       | u8 num_hashes | hashes[num_hashes] (digest size of hash_alg)

policy_type: 0 TB_POLTYPE_CONT_NON_FATAL, 1 TB_POLTYPE_CONT_VERIFY_FAIL, 2 TB_POLTYPE_HALT.
hash_alg is a TPM_ALG_ID since tboot 1.9 (sha1 4, sha256 11, sha384 12, sha512 13).
mod_num: 0..127, 129 any, 130 nv, 131 nv_raw. pcr: 0..23 or 255 none. hash_type: 0 any, 1 image.
An import followed by an export gives back the same bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tboot_py import algorithms
from tboot_py.errors import InputError, ParseError, PolicyError
from tboot_py.policy.model import (
    VLP_MAX_PCR,
    VLP_PCR_NONE,
    AllOf,
    Component,
    DigestKind,
    Mode,
    Policy,
    ReferenceRule,
    Rule,
    TbootVlpRule,
    VlpEntry,
    VlpModNum,
)

VERSION = 2
MAX_FILE = 8 << 20
_HEADER = struct.Struct("<BBBIIB")  # 12 bytes
_ENTRY = struct.Struct("<BBBIB")  # 8 bytes

POLICY_TYPES = {0: Mode.NONFATAL, 1: Mode.CONTINUE, 2: Mode.HALT}
POLICY_TYPE_OF = {m: t for t, m in POLICY_TYPES.items()}
HASH_ALGS = {a.alg_id: a.name for a in (algorithms.SHA1, algorithms.SHA256, algorithms.SHA384, algorithms.SHA512)}

#: tboot's default PCR mapping (tboot docs, "Verified Launch"): module 0 (the hypervisor)
#: goes to PCR 18, every other module to PCR 19.
DEFAULT_MODULE_PCRS = {Component.HYPERVISOR: (0, 18), Component.KERNEL: (1, 19), Component.INITRD: (2, 19)}


@dataclass(frozen=True)
class Vlp:
    """A parsed tb_policy_t."""

    policy_type: int
    hash_alg: int
    control: int
    reserved: int
    entries: tuple[VlpEntry, ...]

    @property
    def bank(self) -> str:
        return HASH_ALGS[self.hash_alg]


def parse_vlp(data: bytes, source: str | None = None) -> Vlp:
    """Parse a VLP file. Raises only ParseError (with the offset)."""
    if len(data) > MAX_FILE:
        raise ParseError(f"file larger than {MAX_FILE} bytes", 0, source)
    if len(data) < _HEADER.size:
        raise ParseError(f"truncated header: {len(data)} of {_HEADER.size} bytes", len(data), source)
    version, ptype, halg, control, reserved, n = _HEADER.unpack_from(data, 0)
    if version != VERSION:
        raise ParseError(f"unsupported policy version {version} (tboot-py reads version 2)", 0, source)
    if ptype not in POLICY_TYPES:
        raise ParseError(f"unknown policy_type {ptype}", 1, source)
    if halg not in HASH_ALGS:
        raise ParseError(f"unsupported hash_alg {halg} (sha1 4, sha256 11, sha384 12, sha512 13)", 2, source)
    size = algorithms.by_id(halg).size  # type: ignore[union-attr]
    off = _HEADER.size
    entries = []
    for i in range(n):
        if len(data) - off < _ENTRY.size:
            raise ParseError(f"entry {i}: truncated entry header", off, source)
        mod, pcr, htype, nv_index, nh = _ENTRY.unpack_from(data, off)
        if mod > VlpModNum.MAX and mod not in (VlpModNum.ANY, VlpModNum.NV, VlpModNum.NV_RAW):
            raise ParseError(f"entry {i}: invalid mod_num {mod}", off, source)
        if pcr > VLP_MAX_PCR and pcr != VLP_PCR_NONE:
            raise ParseError(f"entry {i}: invalid pcr {pcr}", off + 1, source)
        if htype > 1:
            raise ParseError(f"entry {i}: invalid hash_type {htype}", off + 2, source)
        off += _ENTRY.size
        if len(data) - off < nh * size:
            raise ParseError(f"entry {i}: {nh} hashes of {size} bytes overrun the file", off, source)
        hashes = tuple(data[off + j * size: off + (j + 1) * size] for j in range(nh))
        off += nh * size
        entries.append(VlpEntry(mod_num=mod, pcr=pcr, hash_any=htype == 0, hashes=hashes, nv_index=nv_index))
    if off != len(data):
        raise ParseError(f"{len(data) - off} trailing bytes after {n} entries", off, source)
    return Vlp(policy_type=ptype, hash_alg=halg, control=control, reserved=reserved, entries=tuple(entries))


def serialize_vlp(vlp: Vlp) -> bytes:
    size = algorithms.by_id(vlp.hash_alg).size  # type: ignore[union-attr]
    if len(vlp.entries) > 255:
        raise InputError("a tboot policy holds at most 255 entries")
    out = bytearray(_HEADER.pack(VERSION, vlp.policy_type, vlp.hash_alg, vlp.control, vlp.reserved,
                                 len(vlp.entries)))
    for e in vlp.entries:
        if len(e.hashes) > 255:
            raise InputError("a tboot policy entry holds at most 255 hashes")
        out += _ENTRY.pack(e.mod_num, e.pcr, 0 if e.hash_any else 1, e.nv_index, len(e.hashes))
        for h in e.hashes:
            if len(h) != size:
                raise InputError(f"a {len(h)}-byte hash in a {HASH_ALGS[vlp.hash_alg]} policy")
            out += h
    return bytes(out)


#: Prefix of the name of a policy imported from a permissive VLP: every verdict names its
#: policy, so every decision under it repeats the warning.
UNSAFE = "UNSAFE (allows launches it does not verify)"


def permissive_reasons(vlp: Vlp) -> list[str]:
    """Why a VLP would let any launch through (tboot docs, "Verified Launch policy"):
    TB_POLTYPE_CONT_NON_FATAL continues whatever the hashes; no entries verify nothing;
    entries that all accept any hash (hash_type any) verify nothing either."""
    out = []
    if vlp.policy_type == POLICY_TYPE_OF[Mode.NONFATAL]:
        out.append("policy type is nonfatal (TB_POLTYPE_CONT_NON_FATAL): mismatches do not stop the launch")
    if not vlp.entries:
        out.append("the policy has no entries: no module is verified")
    elif all(e.hash_any for e in vlp.entries):
        out.append("every entry accepts any hash (hash_type any): no module is verified")
    return out


def vlp_to_policy(vlp: Vlp, name: str | None = None, *, allow_permissive: bool = False) -> Policy:
    """The tboot-py policy for a VLP. A VLP that lets any launch through is refused
    (PolicyError) unless ``allow_permissive``; then the policy's name starts with
    :data:`UNSAFE` and its ``warnings`` say why, so the policy and every verdict carry them."""
    rule = TbootVlpRule(bank=vlp.bank, entries=vlp.entries, control=vlp.control, reserved=vlp.reserved)
    why = permissive_reasons(vlp)
    if why and not allow_permissive:
        raise PolicyError(f"{name or 'tboot policy'}: refusing an allow-all import: {'; '.join(why)} "
                          "(--allow-permissive imports it anyway, marked UNSAFE)")
    if why:
        name = f"{UNSAFE}: {name}" if name else UNSAFE
    return Policy(rules=(rule,), mode=POLICY_TYPES[vlp.policy_type], name=name, warnings=tuple(why))


def policy_to_vlp(policy: Policy, bank: str | None = None) -> Vlp:
    """Express a policy as a VLP: its tboot-vlp rule if it has one, else its tboot-module
    reference values (hypervisor module 0 / PCR 18, kernel 1 and initrd 2 / PCR 19).
    Anything a VLP cannot express raises InputError naming the rule."""
    ptype = POLICY_TYPE_OF[policy.mode]
    rules = _flatten(policy.rules, "rules")
    vlps = [(p, r) for p, r in rules if isinstance(r, TbootVlpRule)]
    if vlps:
        if len(rules) != 1:
            other = next(p for p, r in rules if not isinstance(r, TbootVlpRule) or p != vlps[0][0])
            raise InputError(f"{other}: a policy with a tboot-vlp rule can only be exported if that is its only rule")
        vr = vlps[0][1]
        if bank is not None and algorithms.by_name(bank).name != vr.bank:
            raise InputError(f"the policy's tboot-vlp rule uses {vr.bank}, not {bank}")
        alg = algorithms.by_name(vr.bank)
        if alg.alg_id not in HASH_ALGS:
            raise InputError(f"tboot policies cannot use {vr.bank}")
        return Vlp(ptype, alg.alg_id, vr.control, vr.reserved, vr.entries)
    refs: list[tuple[str, ReferenceRule]] = []
    for p, rule in rules:
        if not isinstance(rule, ReferenceRule) or rule.component not in DEFAULT_MODULE_PCRS:
            raise InputError(f"{p}: a {rule.type_name} rule cannot be expressed in a tboot policy")
        bad = next((i for i, v in enumerate(rule.values) if v.kind is not DigestKind.TBOOT_MODULE), None)
        if bad is not None:
            raise InputError(f"{p}.values[{bad}]: only tboot-module reference values can be exported")
        refs.append((p, rule))
    if not refs:
        raise InputError("the policy has no tboot-module reference values to export")
    chosen = algorithms.by_name(bank).name if bank else _common_bank(refs)
    alg = algorithms.by_name(chosen)
    if alg.alg_id not in HASH_ALGS:
        raise InputError(f"tboot policies cannot use {chosen}")
    by_mod: dict[int, list[bytes]] = {}
    pcr_of: dict[int, int] = {}
    for p, r in refs:
        mod, pcr = DEFAULT_MODULE_PCRS[r.component]
        for i, v in enumerate(r.values):
            d = v.digest(chosen)
            if d is None:
                raise InputError(f"{p}.values[{i}] ({v.label}) has no {chosen} digest")
            by_mod.setdefault(mod, []).append(d)
        pcr_of[mod] = pcr
    entries = tuple(VlpEntry(mod_num=m, pcr=pcr_of[m], hash_any=False, hashes=tuple(by_mod[m]))
                    for m in sorted(by_mod))
    return Vlp(ptype, alg.alg_id, 1, 0, entries)


def _flatten(rules: tuple[Rule, ...], path: str) -> list[tuple[str, Rule]]:
    out: list[tuple[str, Rule]] = []
    for i, r in enumerate(rules):
        p = f"{path}[{i}]"
        if isinstance(r, AllOf):
            out.extend(_flatten(r.rules, f"{p}.rules"))
        else:
            out.append((p, r))
    return out


def _common_bank(refs: list[tuple[str, ReferenceRule]]) -> str:
    for bank in ("sha256", "sha384", "sha512", "sha1"):
        if all(v.digest(bank) is not None for _, r in refs for v in r.values):
            return bank
    raise InputError("the tboot-module reference values share no bank; pass --alg")
