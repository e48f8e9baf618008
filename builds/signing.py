"""Images signed with the server's usign key, in the formats routers verify.

An OpenWrt image ends in fwtool chunks, read backwards from the end of the file:

    [image][metadata JSON][trailer][ucert][trailer]
    trailer (16 bytes, big-endian): "FWx0" | crc32 | type (0 signature, 1 metadata) | 3 pad
                                    | size of the chunk's payload + 16
    crc32: reflected 0xEDB88320, initial 0xFFFFFFFF, no final xor, over every byte from
           the start of the file through the chunk's payload

The signature chunk holds a ucert certificate chain: blobs (libubox `blob_attr`: u32
big-endian id << 24 | length, data padded to 4 bytes), each a root blob holding a
usign signature (id 0) and optionally a signed payload (id 1). The first element is the
server key's own certificate: its payload is a blobmsg table "ucert" {certtype: 1,
validfrom, expiresat, pubkey} signed by that key; the second is the usign signature of
the image without its signature chunk, made with the key the certificate names.

A router with `ucert` (lib/upgrade/fwtool.sh) checks the first element against the keys
in /etc/opkg/keys and the image against the second: it must hold the server's public
key (GET /api/v1/signing-key) under its fingerprint.
"""

import hashlib
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.http import HttpResponse

from asuproject.api_errors import error_response
from asuproject.lib import usign

FWTOOL_MAGIC = 0x46577830  # "FWx0"
SIGNATURE_CHUNK, METADATA_CHUNK = 0, 1
TRAILER = struct.Struct(">IIB3xI")

# ucert: the ids of a chain element's blobs, and blobmsg's types and flag.
CERT_SIGNATURE, CERT_PAYLOAD = 0, 1
BLOBMSG_TABLE, BLOBMSG_STRING, BLOBMSG_INT64, BLOBMSG_INT32 = 2, 3, 4, 5
BLOB_EXTENDED = 0x80000000
CERTTYPE_AUTH = 1
CERT_LIFETIME = 365 * 24 * 3600  # as `ucert -I` issues them
# The certificate counts from a day before signing, so that a router whose clock runs
# somewhat behind still accepts it.
CLOCK_SLACK = 24 * 3600


UNSIGNED = (
    "This server has no signing key (ASU_SIGNING_KEY): the images are as the ImageBuilder made them"
)


class ImageSignatureError(Exception):
    """An image whose chunks or signature do not check out; the message says which."""


def signing_key() -> usign.SecretKey | None:
    """The server's key (ASU_SIGNING_KEY or ASU_SIGNING_KEY_FILE), or None: no signing."""
    text = settings.ASU_SIGNING_KEY
    return usign.read_secret_key(text) if text else None


def public_key_response() -> HttpResponse:
    """The body of GET /api/v1/signing-key (`builds.views.SigningKeyView`): the public key
    routers trust, as a usign key file, to be saved as /etc/opkg/keys/<fingerprint>."""
    key = signing_key()
    if key is None:
        return error_response(404, "This server does not sign images: it has no signing key")
    response = HttpResponse(key.public_key_text(), content_type="text/plain; charset=utf-8")
    response["X-Key-Fingerprint"] = key.fingerprint
    response["Content-Disposition"] = f'inline; filename="{key.fingerprint}"'
    return response


# fwtool chunks


def fwtool_crc32(data: bytes) -> int:
    return zlib.crc32(data) ^ 0xFFFFFFFF


@dataclass(frozen=True)
class Chunk:
    kind: int  # SIGNATURE_CHUNK or METADATA_CHUNK
    start: int  # offset of the payload in the file
    payload: bytes


def last_chunk(image: bytes) -> Chunk | None:
    """The chunk at the end of the image, None if there is none; a damaged one raises."""
    if len(image) < TRAILER.size:
        return None
    magic, crc, kind, size = TRAILER.unpack(image[-TRAILER.size :])
    if magic != FWTOOL_MAGIC:
        return None
    start = len(image) - size
    if size < TRAILER.size or start < 0:
        raise ImageSignatureError("the fwtool trailer gives an impossible size")
    if fwtool_crc32(image[: len(image) - TRAILER.size]) != crc:
        raise ImageSignatureError("the fwtool trailer's CRC does not match the image")
    return Chunk(kind, start, image[start : len(image) - TRAILER.size])


def append_chunk(image: bytes, kind: int, payload: bytes) -> bytes:
    crc = fwtool_crc32(image + payload)
    return image + payload + TRAILER.pack(FWTOOL_MAGIC, crc, kind, len(payload) + TRAILER.size)


def without_signature(image: bytes) -> bytes:
    """The image with its signature chunk removed, as `fwtool -t -s /dev/null` leaves it."""
    chunk = last_chunk(image)
    return image[: chunk.start] if chunk is not None and chunk.kind == SIGNATURE_CHUNK else image


# ucert certificates


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def blob(blob_id: int, data: bytes) -> bytes:
    """One libubox blob attribute, padded."""
    return _pad(struct.pack(">I", (blob_id << 24) | (4 + len(data))) + data)


def blobmsg(kind: int, name: str, data: bytes) -> bytes:
    """One named blobmsg attribute, padded."""
    header = _pad(struct.pack(">H", len(name)) + name.encode() + b"\0")
    length = 4 + len(header) + len(data)
    return _pad(struct.pack(">I", BLOB_EXTENDED | (kind << 24) | length) + header + data)


def certificate_payload(key: usign.SecretKey, now: int) -> bytes:
    """The signed part of the key's own certificate, as `ucert -I` writes it."""
    valid_from = now - CLOCK_SLACK
    fields = (
        blobmsg(BLOBMSG_INT32, "certtype", struct.pack(">I", CERTTYPE_AUTH))
        + blobmsg(BLOBMSG_INT64, "validfrom", struct.pack(">Q", valid_from))
        + blobmsg(BLOBMSG_INT64, "expiresat", struct.pack(">Q", valid_from + CERT_LIFETIME))
        + blobmsg(BLOBMSG_STRING, "pubkey", key.public_key_text("ASU signing key").encode() + b"\0")
    )
    return blobmsg(BLOBMSG_TABLE, "ucert", fields)


def certificate_chain(key: usign.SecretKey, message: bytes, now: int) -> bytes:
    """The key's certificate, then its signature of `message` (`ucert -A`)."""
    payload = certificate_payload(key, now)
    certificate = blob(
        0, blob(CERT_SIGNATURE, key.sign(payload).encode()) + blob(CERT_PAYLOAD, payload)
    )
    return certificate + blob(0, blob(CERT_SIGNATURE, key.sign(message).encode()))


def sign_image(path: Path, key: usign.SecretKey, now: int | None = None) -> str:
    """Replace the image's signature chunk (the ImageBuilder's own key, if any) with the
    server's; return the sha256 of the signed file."""
    image = without_signature(path.read_bytes())
    chain = certificate_chain(key, image, int(time.time()) if now is None else now)
    signed = append_chunk(image, SIGNATURE_CHUNK, chain)
    path.write_bytes(signed)
    return hashlib.sha256(signed).hexdigest()


def update_sha256sums(bin_dir: Path, images: list[dict]) -> None:
    """Correct the lines of the signed images in the ImageBuilder's sha256sums file."""
    sums = bin_dir / "sha256sums"
    if not sums.is_file():
        return
    hashes = {image["name"]: image["sha256"] for image in images}
    lines = []
    for line in sums.read_text().splitlines():
        digest, _, name = line.partition(" *")
        lines.append(f"{hashes.get(name, digest)} *{name}" if name else line)
    sums.write_text("\n".join(lines) + "\n")


# Verification, as a router's fwtool and ucert do it


def _blobs(data: bytes) -> list[tuple[int, bytes]]:
    """(id, data) of each blob attribute in `data`."""
    found = []
    offset = 0
    while offset + 4 <= len(data):
        (id_len,) = struct.unpack_from(">I", data, offset)
        length = id_len & 0x00FFFFFF
        if length < 4 or offset + length > len(data):
            raise ImageSignatureError("the certificate is malformed")
        found.append(((id_len >> 24) & 0x7F, data[offset + 4 : offset + length]))
        offset += length + (-length % 4)
    return found


def _blobmsg_fields(table: bytes) -> dict[str, bytes]:
    """{name: data} of the blobmsg attributes in `table`'s data."""
    fields = {}
    for _kind, data in _blobs(table):
        (name_length,) = struct.unpack_from(">H", data)
        header_length = 2 + name_length + 1
        header_length += -header_length % 4
        fields[data[2 : 2 + name_length].decode(errors="replace")] = data[header_length:]
    return fields


def _certified_key(payload: bytes, now: int) -> usign.PublicKey:
    """The public key a valid auth certificate names."""
    fields = _blobmsg_fields(_blobmsg_fields(payload).get("ucert", b""))
    try:
        certtype = struct.unpack(">I", fields["certtype"])[0]
        valid_from = struct.unpack(">Q", fields["validfrom"])[0]
        expires_at = struct.unpack(">Q", fields["expiresat"])[0]
        public_text = fields["pubkey"].rstrip(b"\0").decode()
    except (KeyError, struct.error, UnicodeDecodeError):
        raise ImageSignatureError("the certificate lacks a field ucert requires") from None
    if certtype != CERTTYPE_AUTH:
        raise ImageSignatureError("the certificate is not an authorisation certificate")
    if not valid_from <= now < expires_at:
        raise ImageSignatureError("the certificate is not valid now")
    return usign.read_public_key(public_text)


def verify_image(image: bytes, trusted: dict[str, usign.PublicKey], now: int | None = None) -> str:
    """Check the image's signature chunk as a router does; return the fingerprint of the
    key that signed the image. Raises ImageSignatureError (or usign.SignatureError)."""
    now = int(time.time()) if now is None else now
    chunk = last_chunk(image)
    if chunk is None or chunk.kind != SIGNATURE_CHUNK:
        raise ImageSignatureError("the image has no signature chunk")
    message = image[: chunk.start]
    keys, signer = trusted, ""
    for _root, element in _blobs(chunk.payload):
        parts = dict(_blobs(element))
        signature = parts.get(CERT_SIGNATURE, b"").decode(errors="replace")
        if CERT_PAYLOAD in parts:
            usign.verify_with(parts[CERT_PAYLOAD], signature, keys)
            chained = _certified_key(parts[CERT_PAYLOAD], now)
            keys = {chained.fingerprint: chained}
        else:
            signer = usign.verify_with(message, signature, keys)
    if not signer:
        raise ImageSignatureError("the certificate chain signs no image")
    return signer
