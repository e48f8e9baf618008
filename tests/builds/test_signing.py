"""Images signed with the server's usign key: the fwtool trailer, the ucert chain and the
Ed25519 signatures, checked with the project's verifier and byte by byte against the
formats routers read; and a real build signed by a worker with a key configured."""

import base64
import hashlib
import json
import struct
import zlib
from pathlib import Path

import pytest
import requests

from asuproject.lib import usign
from builds import signing
from tests.builds.catalogue import fresh_start, seed_branches
from tests.builds.test_build_clients import poll_until_done
from tests.fixtures import usign as reference

NOW = 1_780_000_000
IMAGE = b"OpenWrt firmware image\n" + bytes(range(256)) * 40


def new_key(tmp_path: Path, name: str) -> tuple[usign.SecretKey, Path, str]:
    """A fresh key pair: the parsed secret key, its file, and the public key text."""
    secret, public = reference.generate(name)
    path = tmp_path / f"{name}.sec"
    path.write_text(secret)
    return usign.read_secret_key(secret), path, public


def with_metadata(image: bytes) -> bytes:
    payload = struct.pack(">II", 0, 0) + json.dumps({"supported_devices": ["a,b"]}).encode()
    return signing.append_chunk(image, signing.METADATA_CHUNK, payload)


def blobs(data: bytes) -> list[tuple[int, bool, bytes]]:
    """(id, extended flag, data) of each libubox blob, read independently of the code."""
    found, offset = [], 0
    while offset < len(data):
        (id_len,) = struct.unpack_from(">I", data, offset)
        length = id_len & 0xFFFFFF
        found.append(
            ((id_len >> 24) & 0x7F, bool(id_len >> 31), data[offset + 4 : offset + length])
        )
        offset += (length + 3) // 4 * 4
    assert offset == len(data)
    return found


def blobmsg(data: bytes) -> tuple[str, bytes]:
    (name_length,) = struct.unpack_from(">H", data)
    name = data[2 : 2 + name_length].decode()
    assert data[2 + name_length] == 0
    return name, data[(2 + name_length + 1 + 3) // 4 * 4 :]


def test_signed_image_in_the_formats_routers_read(tmp_path) -> None:
    key, _, public = new_key(tmp_path, "server")
    unsigned = with_metadata(IMAGE)
    path = tmp_path / "image.bin"
    path.write_bytes(unsigned)

    sha256 = signing.sign_image(path, key, now=NOW)
    signed = path.read_bytes()

    assert sha256 == hashlib.sha256(signed).hexdigest()
    # The fwtool trailer: magic, CRC over everything before it, type 0, payload size + 16.
    magic, crc, kind, pad, size = struct.unpack(">IIB3sI", signed[-16:])
    assert (magic, kind, pad) == (0x46577830, 0, b"\0\0\0")
    assert signed[: len(signed) - size] == unsigned  # the metadata chunk is kept
    assert crc == zlib.crc32(signed[:-16]) ^ 0xFFFFFFFF
    chain = signed[len(unsigned) : -16]

    # ucert: the key's own certificate, then the image's signature.
    elements = blobs(chain)
    assert [(blob_id, extended) for blob_id, extended, _ in elements] == [(0, False)] * 2
    certificate, image_signature = (data for _, _, data in elements)
    parts = blobs(certificate)
    assert [(blob_id, extended) for blob_id, extended, _ in parts] == [(0, False), (1, False)]
    cert_signature, payload = (data for _, _, data in parts)
    [(table_type, table_extended, table)] = blobs(payload)
    assert (table_type, table_extended) == (2, True)  # a blobmsg table
    name, fields_data = blobmsg(table)
    assert name == "ucert"
    fields = {}
    for kind, extended, data in blobs(fields_data):
        assert extended
        field, value = blobmsg(data)
        fields[field] = (kind, value)
    assert fields["certtype"] == (5, struct.pack(">I", 1))
    valid_from = struct.unpack(">Q", fields["validfrom"][1])[0]
    expires_at = struct.unpack(">Q", fields["expiresat"][1])[0]
    assert valid_from <= NOW < expires_at
    kind, pubkey = fields["pubkey"]
    assert kind == 3 and pubkey.endswith(b"\0")
    assert reference.fingerprint(pubkey.rstrip(b"\0").decode()) == key.fingerprint

    # Ed25519, checked by the test mirror's independent usign code: the certificate by the
    # key itself, the image (without its signature chunk) by the certified key.
    [(signature_id, _, message_signature)] = blobs(image_signature)
    assert signature_id == 0
    assert reference.verify(payload, cert_signature.decode(), public)
    assert reference.verify(unsigned, message_signature.decode(), public)
    assert message_signature.decode().startswith(
        f"untrusted comment: signed by key {key.fingerprint}\n"
    )

    # And by the project's own verifier, as a router trusting the key checks it.
    trusted = {key.fingerprint: usign.read_public_key(public)}
    assert signing.verify_image(signed, trusted, now=NOW) == key.fingerprint


def test_tampered_or_foreign_images_do_not_verify(tmp_path) -> None:
    key, _, public = new_key(tmp_path, "server")
    builder, _, builder_public = new_key(tmp_path, "imagebuilder")
    trusted = {key.fingerprint: usign.read_public_key(public)}
    path = tmp_path / "image.bin"
    # As an opkg ImageBuilder leaves it: signed with its own random key.
    path.write_bytes(with_metadata(IMAGE))
    signing.sign_image(path, builder, now=NOW)
    with pytest.raises(usign.SignatureError, match="not trusted"):
        signing.verify_image(path.read_bytes(), trusted, now=NOW)

    # Signing replaces the ImageBuilder's chunk: one signature chunk, the server's.
    signing.sign_image(path, key, now=NOW)
    signed = path.read_bytes()
    assert signing.without_signature(signed) == with_metadata(IMAGE)
    assert signing.verify_image(signed, trusted, now=NOW) == key.fingerprint
    builder_trust = {builder.fingerprint: usign.read_public_key(builder_public)}
    with pytest.raises(usign.SignatureError, match="not trusted"):
        signing.verify_image(signed, builder_trust, now=NOW)

    tampered = bytearray(signed)
    tampered[100] ^= 0x01
    with pytest.raises(signing.ImageSignatureError, match="CRC"):
        signing.verify_image(bytes(tampered), trusted, now=NOW)
    # An attacker who also fixes the CRC still fails on the Ed25519 signature.
    body = bytes(tampered[:-16])
    fixed = body + struct.pack(">I", signing.fwtool_crc32(body)).join(
        [tampered[-16:-12], tampered[-8:]]
    )
    with pytest.raises(usign.SignatureError, match="does not match"):
        signing.verify_image(fixed, trusted, now=NOW)
    # A certificate past its year is refused.
    with pytest.raises(signing.ImageSignatureError, match="not valid now"):
        signing.verify_image(signed, trusted, now=NOW + 400 * 24 * 3600)


def test_a_key_that_is_not_usable_is_refused(tmp_path) -> None:
    key, _, public = new_key(tmp_path, "server")
    with pytest.raises(usign.SignatureError):
        usign.read_secret_key(public)
    secret = (tmp_path / "server.sec").read_text()
    blob = bytearray(base64.b64decode(secret.splitlines()[-1]))
    blob[-1] ^= 1  # the public key no longer matches the checksum
    with pytest.raises(usign.SignatureError, match="checksum"):
        usign.read_secret_key(base64.b64encode(bytes(blob)).decode())


def build(base: str, profile: str) -> dict:
    body = {
        "version": "24.10.1",
        "target": "ath79/generic",
        "profile": profile,
        "packages": ["owut"],
    }
    response = requests.post(f"{base}/api/v1/build", json=body, timeout=60)
    assert response.status_code == 202, response.text
    done = poll_until_done(base, response.json()["request_hash"])
    assert done.status_code == 200, done.text
    return done.json()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_signs_the_images_it_builds(
    upstream, live_server, start_worker, settings, tmp_path
) -> None:
    fresh_start()
    seed_branches()
    base = live_server.url
    # Without a key: built as before, and the answer says the images are not signed.
    unsigned_worker = start_worker(concurrency=1)
    unsigned = build(base, "8dev_carambola2")
    assert unsigned["signature"]["signed"] is False
    assert "ASU_SIGNING_KEY" in unsigned["signature"]["detail"]
    assert requests.get(f"{base}/api/v1/signing-key", timeout=10).status_code == 404
    unsigned_worker.terminate()
    unsigned_worker.wait(timeout=30)

    key, key_file, public = new_key(tmp_path, "server")
    settings.ASU_SIGNING_KEY = key_file.read_text()
    start_worker(concurrency=1, ASU_SIGNING_KEY_FILE=str(key_file))
    signed = build(base, "tplink_archer-c7-v5")
    assert signed["signature"]["signed"] is True
    assert signed["signature"]["key"] == key.fingerprint

    served = requests.get(f"{base}/api/v1/signing-key", timeout=10)
    assert served.status_code == 200
    assert served.headers["X-Key-Fingerprint"] == key.fingerprint
    trusted = {key.fingerprint: usign.read_public_key(served.text)}
    sysupgrade = [image for image in signed["images"] if image["type"] == "sysupgrade"]
    assert [image["name"] for image in sysupgrade] == signed["signature"]["images"]
    for image in signed["images"]:
        data = requests.get(f"{base}/store/{signed['bin_dir']}/{image['name']}", timeout=10).content
        assert hashlib.sha256(data).hexdigest() == image["sha256"]
        if image["type"] == "sysupgrade":
            assert signing.verify_image(data, trusted) == key.fingerprint
            assert (
                hashlib.sha256(signing.without_signature(data)).hexdigest()
                == (image["sha256_unsigned"])
            )
        else:  # the factory image stays as the ImageBuilder made it
            assert signing.last_chunk(data) is None
    sums = requests.get(f"{base}/store/{signed['bin_dir']}/sha256sums", timeout=10).text
    for image in sysupgrade:
        assert f"{image['sha256']} *{image['name']}" in sums.splitlines()
    # The worker reported the step, as its timing line shows.
    log = (Path(settings.ASU_CACHE_DIR).parent / "worker-1.log").read_text()
    assert "signing_images" in log
