"""usign signatures: the Ed25519 signatures OpenWrt puts on `sha256sums` (checked here)
and on images (made here with the server's key, `builds.signing`).

Formats, each a base64 line under an `untrusted comment:` line:

- public key: "Ed" + fingerprint[8] + Ed25519 public key[32]
- secret key: "Ed" "BK" + u32 KDF rounds (0: not encrypted) + salt[16]
  + sha512(seed + public key)[:8] + fingerprint[8] + seed[32] + public key[32]
- signature: "Ed" + fingerprint[8] + Ed25519 signature[64]

usign signs the message itself (pure Ed25519, no pre-hash), so a signature verifies
directly against the file's bytes.
"""

import base64
import binascii
import hashlib
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = logging.getLogger(__name__)

_ALGORITHM = b"Ed"
_PUBLIC_KEY_LENGTH = 2 + 8 + 32
_SIGNATURE_LENGTH = 2 + 8 + 64
_SECRET_KEY = struct.Struct("!2s2sI16s8s8s32s32s")


class SignatureError(Exception):
    """A signature is malformed, made by an unknown key, or does not match the data."""


@dataclass(frozen=True)
class PublicKey:
    fingerprint: str  # 16 hex digits, also the key's usual file name
    key: bytes  # raw Ed25519 public key


@dataclass(frozen=True)
class SecretKey:
    fingerprint: str
    seed: bytes  # raw Ed25519 private key
    public: PublicKey

    def sign(self, message: bytes) -> str:
        """The text of the `.sig` file `usign -S` writes for `message`."""
        signature = Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)
        blob = _ALGORITHM + bytes.fromhex(self.fingerprint) + signature
        return (
            f"untrusted comment: signed by key {self.fingerprint}\n"
            f"{base64.b64encode(blob).decode()}\n"
        )

    def public_key_text(self, comment: str = "") -> str:
        """The public key file, as routers keep it in /etc/opkg/keys/<fingerprint>."""
        blob = _ALGORITHM + bytes.fromhex(self.fingerprint) + self.public.key
        comment = comment or f"public key {self.fingerprint}"
        return f"untrusted comment: {comment}\n{base64.b64encode(blob).decode()}\n"


@dataclass(frozen=True)
class Signature:
    fingerprint: str
    signature: bytes  # raw Ed25519 signature


def _payload(text: str, what: str, length: int, algorithm: bytes = _ALGORITHM) -> bytes:
    """The decoded base64 line of a usign file: the first line that is not a comment."""
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.startswith("untrusted comment:")
    ]
    if not lines:
        raise SignatureError(f"not a usign {what}: no base64 line")
    try:
        blob = base64.b64decode(lines[0], validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"not a usign {what}: the key line is not base64") from None
    if len(blob) != length or blob[: len(algorithm)] != algorithm:
        raise SignatureError(f"not a usign {what}: wrong length or algorithm")
    return blob


def read_public_key(text: str) -> PublicKey:
    """Parse a usign public key (the file, or just its base64 line)."""
    blob = _payload(text, "public key", _PUBLIC_KEY_LENGTH)
    return PublicKey(fingerprint=blob[2:10].hex(), key=blob[10:])


def read_secret_key(text: str) -> SecretKey:
    """Parse an unencrypted usign secret key (what `usign -G -s` writes)."""
    blob = _payload(text, "secret key", _SECRET_KEY.size, algorithm=b"EdBK")
    _alg, _kdf, rounds, _salt, checksum, fingerprint, seed, public = _SECRET_KEY.unpack(blob)
    if rounds != 0:
        raise SignatureError("not a usable usign secret key: it is protected by a password")
    if hashlib.sha512(seed + public).digest()[:8] != checksum:
        raise SignatureError("not a usign secret key: its checksum does not match")
    return SecretKey(fingerprint.hex(), seed, PublicKey(fingerprint.hex(), public))


def read_signature(text: str) -> Signature:
    """Parse a usign signature file (`.sig`)."""
    blob = _payload(text, "signature", _SIGNATURE_LENGTH)
    return Signature(fingerprint=blob[2:10].hex(), signature=blob[10:])


def load_keys(folder: str | Path) -> dict[str, PublicKey]:
    """Every usign public key in `folder`, by fingerprint. Files that are not keys are
    skipped with a warning, so a README next to the keys does no harm."""
    keys: dict[str, PublicKey] = {}
    for path in sorted(Path(folder).iterdir()):
        if not path.is_file():
            continue
        try:
            key = read_public_key(path.read_text(errors="replace"))
        except SignatureError as exc:
            log.warning("Skipping %s in the trusted keys folder: %s", path, exc)
            continue
        keys[key.fingerprint] = key
    return keys


def verify(message: bytes, signature_text: str, keys_folder: str | Path) -> str:
    """Check that `signature_text` signs `message` with one of the keys in `keys_folder`.

    Returns the fingerprint of the key that made it; raises SignatureError otherwise.
    """
    return verify_with(message, signature_text, load_keys(keys_folder))


def verify_with(message: bytes, signature_text: str, keys: dict[str, PublicKey]) -> str:
    """Check that `signature_text` signs `message` with one of `keys` (by fingerprint).

    Returns the fingerprint of the key that made it; raises SignatureError otherwise.
    """
    signature = read_signature(signature_text)
    key = keys.get(signature.fingerprint)
    if key is None:
        raise SignatureError(f"signed by key {signature.fingerprint}, which is not trusted")
    try:
        Ed25519PublicKey.from_public_bytes(key.key).verify(signature.signature, message)
    except InvalidSignature:
        raise SignatureError(
            f"the signature by key {signature.fingerprint} does not match the data"
        ) from None
    return signature.fingerprint
