"""TCG EK Credential Profile for TPM Family 2.0 (version 2.3), section 2.2.1.4 and annex B:
the default EK templates and their certificate NV indices (low range: L-1 RSA 2048 at
0x01c00002, L-2 ECC NIST P256 at 0x01c0000a; high range: H-3 ECC NIST P384 at 0x01c00016,
which swtpm uses). Data only: the verifier derives EK names from them, attest creates EKs.
"""

from __future__ import annotations

from dataclasses import dataclass

from tboot_py import algorithms
from tboot_py.tpm import wire as st

# PolicySecret(TPM_RH_ENDORSEMENT) digests: the authPolicy of the EK templates
# (EK Credential Profile 2.3: "PolicyA" with SHA-256 for the low range; the high-range
# SHA-384 templates use "PolicyB", an OR of PolicyA and a PolicyAuthorizeNV branch).
POLICY_A_SHA256 = bytes.fromhex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")
POLICY_B_SHA384 = bytes.fromhex(
    "b26e7d28d11a50bc53d882bcf5fd3a1a074148bb35d3b4e4cb1c0ad9bde419cacb47ba09699646150f9fc000f3f80e12")

# fixedTPM | fixedParent | sensitiveDataOrigin | adminWithPolicy | restricted | decrypt
_EK_ATTRS_L = (st.OA_FIXED_TPM | st.OA_FIXED_PARENT | st.OA_SENSITIVE_DATA_ORIGIN | st.OA_ADMIN_WITH_POLICY
               | st.OA_RESTRICTED | st.OA_DECRYPT)
# The high-range templates also set userWithAuth (EK Credential Profile 2.3, B.4).
_EK_ATTRS_H = _EK_ATTRS_L | st.OA_USER_WITH_AUTH
_AES128_CFB = (st.ALG_AES, 128, st.ALG_CFB)
_AES256_CFB = (st.ALG_AES, 256, st.ALG_CFB)


@dataclass(frozen=True)
class EKKind:
    """One EK flavour: its template, certificate NV index and policy session hash."""

    name: str
    nv_index: int
    template: st.Public
    policy_hash: int  # hash of the PolicySecret session that authorises the EK
    activatable: bool  # whether tboot-py can satisfy the EK's authPolicy for ActivateCredential


EK_KINDS: dict[str, EKKind] = {
    # Template L-1 (B.3.3): RSA 2048, unique = 256 zero bytes.
    "rsa": EKKind("rsa", 0x01C00002,
                  st.rsa_template(_EK_ATTRS_L, policy=POLICY_A_SHA256, symmetric=_AES128_CFB, unique=bytes(256)),
                  algorithms.SHA256.alg_id, True),
    # Template L-2 (B.3.4): ECC NIST P256, unique x and y = 32 zero bytes each.
    "ecc": EKKind("ecc", 0x01C0000A,
                  st.ecc_template(_EK_ATTRS_L, st.CURVE_NIST_P256, policy=POLICY_A_SHA256, symmetric=_AES128_CFB,
                                  unique_size=32),
                  algorithms.SHA256.alg_id, True),
    # Template H-3 (B.4.5): ECC NIST P384, SHA-384 name, empty unique. Its PolicyB is an
    # OR that includes PolicyAuthorizeNV, which tboot-py does not drive.
    "ecc384": EKKind("ecc384", 0x01C00016,
                     st.ecc_template(_EK_ATTRS_H, st.CURVE_NIST_P384, name_alg=algorithms.SHA384.alg_id,
                                     policy=POLICY_B_SHA384, symmetric=_AES256_CFB),
                     algorithms.SHA384.alg_id, False),
}
