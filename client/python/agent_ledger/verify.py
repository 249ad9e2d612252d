"""Offline checks in pure Python, so an auditor need not trust the server:
C2SP signed notes with Ed25519 (RFC 8032), C2SP tlog-checkpoints, RFC 6962 /
RFC 9162 leaf hashes and inclusion proofs. The same formats as the Rust
verifier (``ledger-verify``).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import List, Optional, Sequence

__all__ = [
    "VerificationError",
    "VerifierKey",
    "Checkpoint",
    "open_checkpoint",
    "leaf_hash",
    "node_hash",
    "verify_inclusion",
    "ed25519_verify",
]


class VerificationError(Exception):
    """A note, checkpoint or proof did not verify."""


# --- Ed25519 verification (RFC 8032, section 6) ----------------------------

_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P
_Q = 2**252 + 27742317777372353535851937790883648493
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _add(a, b):
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa = (y1 - x1) * (y2 - x2) % _P
    bb = (y1 + x1) * (y2 + x2) % _P
    cc = t1 * 2 * _D * t2 % _P
    dd = z1 * 2 * z2 % _P
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _mul(s: int, pt):
    q = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            q = _add(q, pt)
        pt = _add(pt, pt)
        s >>= 1
    return q


def _equal(a, b) -> bool:
    x1, y1, z1, _ = a
    x2, y2, z2, _ = b
    return (x1 * z2 - x2 * z1) % _P == 0 and (y1 * z2 - y2 * z1) % _P == 0


def _recover_x(y: int, sign: int) -> Optional[int]:
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P)
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P != 0:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P != 0:
        return None
    if (x & 1) != sign:
        x = _P - x
    return x


_GY = 4 * pow(5, _P - 2, _P) % _P
_GX = _recover_x(_GY, 0)
_G = (_GX, _GY, 1, _GX * _GY % _P)


def _decompress(s: bytes):
    if len(s) != 32:
        return None
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % _P)


def ed25519_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``message``."""
    if len(public) != 32 or len(signature) != 64:
        return False
    a = _decompress(public)
    r = _decompress(signature[:32])
    if a is None or r is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= _Q:
        return False
    h = int.from_bytes(hashlib.sha512(signature[:32] + public + message).digest(), "little") % _Q
    return _equal(_mul(s, _G), _add(r, _mul(h, a)))


# --- C2SP signed notes and checkpoints --------------------------------------


@dataclass(frozen=True)
class VerifierKey:
    """A C2SP signed-note verifier key: ``<name>+<key id hex>+<base64(0x01 ‖ key)>``."""

    name: str
    key_id: bytes
    public_key: bytes

    @staticmethod
    def parse(text: str) -> "VerifierKey":
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise VerificationError("a verifier key is <name>+<key id>+<base64 key>")
        name, kid, b64 = parts
        try:
            raw = base64.b64decode(b64, validate=True)
            key_id = bytes.fromhex(kid)
        except ValueError as e:
            raise VerificationError(f"malformed verifier key: {e}") from None
        if len(raw) != 33 or raw[0] != 0x01 or len(key_id) != 4:
            raise VerificationError("not an Ed25519 verifier key (type 0x01, 32 bytes)")
        want = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
        if want != key_id:
            raise VerificationError("the key id does not match the key")
        return VerifierKey(name, key_id, raw[1:])

    def __str__(self) -> str:
        b64 = base64.b64encode(b"\x01" + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{b64}"


@dataclass(frozen=True)
class Checkpoint:
    """A verified C2SP tlog-checkpoint."""

    origin: str
    size: int
    root: bytes
    note: str


def _verify_note(note: str, key: VerifierKey) -> str:
    """The text of a signed note signed by ``key``; raises otherwise."""
    sep = note.find("\n\n")
    if sep < 0:
        raise VerificationError("not a signed note: no blank line before the signatures")
    body = note[: sep + 1]
    for line in note[sep + 2 :].splitlines():
        if not line.startswith("\u2014 "):
            raise VerificationError(f"not a signature line: {line[:64]!r}")
        try:
            name, sig = line[2:].rsplit(" ", 1)
            raw = base64.b64decode(sig, validate=True)
        except ValueError:
            raise VerificationError(f"malformed signature line: {line[:64]!r}") from None
        if name != key.name or len(raw) != 68 or raw[:4] != key.key_id:
            continue  # Another key's signature: ignored, as the spec says.
        if ed25519_verify(key.public_key, body.encode(), raw[4:]):
            return body
        raise VerificationError(f"the signature by {key.name} does not verify")
    raise VerificationError(f"no signature by {key.name}")


def open_checkpoint(note: str, key: "VerifierKey | str") -> Checkpoint:
    """Verifies a signed checkpoint note against the log's verifier key and
    returns what it says; raises :class:`VerificationError` otherwise."""
    if isinstance(key, str):
        key = VerifierKey.parse(key)
    body = _verify_note(note, key)
    lines = body.split("\n")
    if len(lines) < 4:
        raise VerificationError("a checkpoint has an origin, a size and a root hash")
    origin, size, root = lines[0], lines[1], lines[2]
    if origin != key.name:
        raise VerificationError(f"checkpoint of {origin!r}, the key is for {key.name!r}")
    if not size.isdigit() or (size != "0" and size.startswith("0")):
        raise VerificationError(f"tree size {size!r} is not a decimal number")
    try:
        root_bytes = base64.b64decode(root, validate=True)
    except ValueError:
        raise VerificationError("the root hash is not base64") from None
    if len(root_bytes) != 32:
        raise VerificationError("the root hash is not 32 bytes")
    return Checkpoint(origin, int(size), root_bytes, note)


# --- RFC 6962 / RFC 9162 hashing and inclusion proofs ----------------------


def leaf_hash(entry: bytes) -> bytes:
    """The leaf hash of stored entry bytes: SHA-256(0x00 ‖ entry)."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 section 2.1.3.2: raises :class:`VerificationError` unless
    ``proof`` proves ``leaf`` at ``index`` in the tree of ``size`` with
    ``root``."""
    if index >= size:
        raise VerificationError(f"index {index} is not below the tree size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if len(p) != 32:
            raise VerificationError("a proof hash is not 32 bytes")
        if sn == 0:
            raise VerificationError("the proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn != 0 and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("the proof is too short")
    if r != root:
        raise VerificationError("the proof does not lead to the checkpoint's root")


def proof_hashes(hashes: List[bytes]) -> List[bytes]:
    return [bytes(h) for h in hashes]
