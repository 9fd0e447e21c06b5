"""A minimal TPM 2.0 command client over swtpm's TCP socket: TPM2_PCR_Read and TPM2_Quote
with a password session, marshalled by hand (TPM 2.0 Part 3, 22.4 and 18.4; command and
response framing Part 1, 18).

For load generation (``make bench-server``), where hundreds of quotes a second through the
ESAPI would cost more client CPU than the server's appraisal. The TPM still does the real
work: the PCR values are the TPM's, the quote is signed by the key at ``handle`` over the
caller's nonce. The caller verifies nothing here; the server appraises the evidence.
"""

from __future__ import annotations

import socket
import struct

from tboot_py.errors import TPMError
from tboot_py.tpm import wire as st

ST_NO_SESSIONS = 0x8001
ST_SESSIONS = 0x8002
CC_QUOTE = 0x00000158
CC_PCR_READ = 0x0000017E
RS_PW = 0x40000009  # TPM_RS_PW: the password authorization session (Part 1, 19.6.8)
ALG_NULL = 0x0010
#: Warnings that ask the caller to send the command again (Part 2, 6.6.3): TPM_RC_YIELDED,
#: TPM_RC_TESTING, TPM_RC_RETRY.
_RETRY = frozenset({0x908, 0x90A, 0x922})
_ATTEMPTS = 10
#: TPM2_PCR_Read returns at most 8 digests per call on swtpm (Part 3, 22.4: the TPM may return fewer).
_MAX_READ = 8


class RawTPM:
    """One connection to swtpm's command port; not thread-safe (serialize callers)."""

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @classmethod
    def from_tcti(cls, tcti: str) -> RawTPM:
        """From ``swtpm:host=H,port=P`` (the TCTI string the rest of tboot-py uses)."""
        kind, _, conf = tcti.partition(":")
        opts = dict(kv.split("=", 1) for kv in conf.split(",") if "=" in kv)
        if kind != "swtpm" or "port" not in opts or not opts["port"].isdigit():
            raise TPMError(f"raw TPM commands need a swtpm:host=H,port=P TCTI, got {tcti!r}")
        return cls(opts.get("host", "127.0.0.1"), int(opts["port"]))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawTPM:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _recv(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise TPMError("swtpm closed the connection")
            buf += chunk
        return bytes(buf)

    def command(self, tag: int, cc: int, body: bytes, what: str) -> bytes:
        """Send one command (again while the TPM asks for a retry); returns the response after
        its 10-byte header, or raises on any other non-zero response code."""
        cmd = struct.pack(">HII", tag, 10 + len(body), cc) + body
        for _ in range(_ATTEMPTS):
            self.sock.sendall(cmd)
            _tag, size, rc = struct.unpack(">HII", self._recv(10))
            if size < 10 or size > 1 << 16:
                raise TPMError(f"{what}: bad response size {size}")
            rest = self._recv(size - 10)
            if rc not in _RETRY:
                break
        if rc != 0:
            raise TPMError(f"{what}: TPM response code 0x{rc:08x}")
        return rest

    def read_pcrs(self, selection: st.PCRSelection) -> dict[str, dict[int, bytes]]:
        """The selected PCR values, in chunks of at most 8 per TPM2_PCR_Read."""
        out: dict[str, dict[int, bytes]] = {}
        for bank in selection.banks:
            got: dict[int, bytes] = {}
            todo = list(bank.pcrs)
            while todo:
                ask = st.PCRSelection((st.PCRBankSelection(bank.alg_id, tuple(todo[:_MAX_READ]),
                                                           bank.size_of_select),))
                r = st.Reader(self.command(ST_NO_SESSIONS, CC_PCR_READ, ask.marshal(), "TPM2_PCR_Read"),
                              "TPM2_PCR_Read response")
                r.u32("pcrUpdateCounter")
                returned = [i for b in st.read_pcr_selection(r).banks for i in b.pcrs]
                count = r.u32("TPML_DIGEST.count")
                values = [r.tpm2b("TPM2B_DIGEST") for _ in range(count)]
                if not returned or len(returned) != len(values):
                    raise TPMError(f"TPM2_PCR_Read({bank.bank}) returned no usable values")
                got.update(zip(returned, values, strict=True))
                todo = [i for i in todo if i not in got]
            out[bank.bank] = {i: got[i] for i in bank.pcrs}
        return out

    def quote(self, handle: int, selection: st.PCRSelection, nonce: bytes) -> tuple[bytes, bytes]:
        """TPM2_Quote by the key at ``handle`` (empty password, the key's own scheme);
        returns (TPMS_ATTEST, TPMT_SIGNATURE) bytes."""
        auth = struct.pack(">IHBH", RS_PW, 0, 0, 0)  # handle, empty nonce, no attributes, empty password
        body = (struct.pack(">II", handle, len(auth)) + auth + st.tpm2b(nonce) + struct.pack(">H", ALG_NULL)
                + selection.marshal())
        r = st.Reader(self.command(ST_SESSIONS, CC_QUOTE, body, "TPM2_Quote"), "TPM2_Quote response")
        size = r.u32("parameterSize")
        params = st.Reader(r.take(size, "parameters"), "TPM2_Quote response")
        attest = params.tpm2b("TPM2B_ATTEST")
        signature = params.buf[params.pos:]
        return attest, signature
