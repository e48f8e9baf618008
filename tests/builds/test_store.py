"""GET and HEAD /store/<bin_dir>/<file>: exact lengths, byte ranges, CORS, and nothing
outside the store."""

import os
from pathlib import Path

import pytest
import requests
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

IMAGE = bytes(range(256)) * 1000  # 256000 bytes, every byte value
NAME = "0123abcd/openwrt-24.10.1-ath79-generic-tplink_archer-c7-v5-squashfs-sysupgrade.bin"


@pytest.fixture
def store(settings, tmp_path: Path) -> Path:
    """A private store folder holding one image, a manifest and a secret beside it."""
    root = tmp_path / "store"
    root.mkdir()
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(root)},
        },
    }
    default_storage.save(NAME, ContentFile(IMAGE))
    default_storage.save("0123abcd/openwrt.manifest", ContentFile(b"base-files - 1655-r1\n"))
    (tmp_path / "secret.txt").write_text("not for you")
    return root


def test_it_serves_a_file_with_its_exact_length(client, store):
    response = client.get(f"/store/{NAME}")

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == IMAGE
    assert response["Content-Length"] == str(len(IMAGE))
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Accept-Ranges"] == "bytes"


def test_head_gives_the_length_without_the_body(client, store):
    response = client.head(f"/store/{NAME}")

    assert response.status_code == 200
    assert response["Content-Length"] == str(len(IMAGE))
    assert response.content == b""


@pytest.mark.parametrize("method", ["get", "head"])
def test_every_file_is_opaque_bytes_to_download(client, store, method):
    default_storage.save("0123abcd/openwrt-sysupgrade.img.gz", ContentFile(b"\x1f\x8b\x08gz"))

    for name in ("openwrt-sysupgrade.img.gz", "openwrt.manifest"):
        response = getattr(client, method)(
            f"/store/0123abcd/{name}", HTTP_ORIGIN="https://x.example"
        )

        assert response["Content-Type"] == "application/octet-stream"
        assert response["Content-Disposition"] == f'attachment; filename="{name}"'
        assert "Content-Encoding" not in response
        assert response["Access-Control-Allow-Origin"] == "*"


def test_a_range_of_a_compressed_image_keeps_its_type(client, store):
    default_storage.save("0123abcd/openwrt-sysupgrade.img.gz", ContentFile(b"\x1f\x8b\x08gz"))

    response = client.get("/store/0123abcd/openwrt-sysupgrade.img.gz", HTTP_RANGE="bytes=1-2")

    assert response.status_code == 206
    assert b"".join(response.streaming_content) == b"\x8b\x08"
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"] == 'attachment; filename="openwrt-sysupgrade.img.gz"'


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=1000-", 1000, len(IMAGE) - 1),
        ("bytes=-500", len(IMAGE) - 500, len(IMAGE) - 1),
        ("bytes=255990-999999", 255990, len(IMAGE) - 1),
        ("bytes=0-0", 0, 0),
    ],
)
def test_it_answers_a_byte_range_with_206(client, store, header, start, end):
    response = client.get(f"/store/{NAME}", headers={"Range": header})

    assert response.status_code == 206
    assert b"".join(response.streaming_content) == IMAGE[start : end + 1]
    assert response["Content-Length"] == str(end - start + 1)
    assert response["Content-Range"] == f"bytes {start}-{end}/{len(IMAGE)}"


def test_a_range_past_the_end_is_416(client, store):
    response = client.get(f"/store/{NAME}", headers={"Range": f"bytes={len(IMAGE)}-"})

    assert response.status_code == 416
    assert response["Content-Range"] == f"bytes */{len(IMAGE)}"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "lines=1-2", "bytes=9-3", "bytes=-"])
def test_ranges_it_cannot_serve_get_the_whole_file(client, store, header):
    response = client.get(f"/store/{NAME}", headers={"Range": header})

    assert response.status_code == 200
    assert response["Content-Length"] == str(len(IMAGE))


def test_browsers_on_other_origins_may_read_it(client, store):
    response = client.get(f"/store/{NAME}", headers={"Origin": "https://firmware-selector.org"})
    preflight = client.options(
        f"/store/{NAME}",
        headers={"Origin": "https://x.example", "Access-Control-Request-Method": "GET"},
    )

    assert response["Access-Control-Allow-Origin"] == "*"
    assert preflight.status_code == 200
    assert preflight["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize(
    "path",
    [
        "/store/0123abcd/../secret.txt",
        "/store/../secret.txt",
        "/store/0123abcd/%2e%2e/%2e%2e/secret.txt",
        "/store/%2e%2e/secret.txt",
        "/store/0123abcd/..%2f..%2fsecret.txt",
        "/store//etc/passwd",
        "/store/0123abcd//etc/passwd",
        "/store/0123abcd/..%5c..%5csecret.txt",
        "/store/0123abcd",
        "/store/0123abcd/",
        "/store/0123abcd/missing.bin",
        "/store/0123abcd/.hidden",
    ],
)
def test_nothing_outside_a_build_folder_is_served(client, store, path):
    response = client.get(path)

    assert response.status_code == 404
    assert response.json()["status"] == 404


def test_a_symlink_out_of_the_store_is_not_followed(client, store):
    os.symlink(store.parent / "secret.txt", store / "0123abcd" / "link.bin")
    (store / "linked").symlink_to(store.parent)

    assert client.get("/store/0123abcd/link.bin").status_code == 404
    assert client.get("/store/linked/secret.txt").status_code == 404


def test_a_symlink_inside_the_store_is_served(client, store):
    os.symlink(store / NAME, store / "0123abcd" / "alias.bin")

    response = client.get("/store/0123abcd/alias.bin")

    assert response.status_code == 200
    assert response["Content-Length"] == str(len(IMAGE))


def test_a_folder_is_not_a_file(client, store):
    (store / "0123abcd" / "sub").mkdir()

    assert client.get("/store/0123abcd/sub").status_code == 404


def test_the_store_is_read_only(client, store):
    response = client.post(f"/store/{NAME}", b"x", content_type="application/octet-stream")

    assert response.status_code == 405
    assert response.json()["status"] == 405


@pytest.mark.django_db(transaction=True)
def test_over_real_http_the_length_is_exact_and_not_chunked(live_server, store):
    url = f"{live_server.url}/store/{NAME}"

    full = requests.get(url, timeout=30)
    head = requests.head(url, timeout=30)
    part = requests.get(url, headers={"Range": "bytes=100-199"}, timeout=30)
    escape = requests.get(f"{live_server.url}/store/0123abcd/%2e%2e/%2e%2e/secret.txt", timeout=30)

    assert full.content == IMAGE
    assert full.headers["Content-Length"] == str(len(IMAGE))
    assert "Transfer-Encoding" not in full.headers
    assert head.headers["Content-Length"] == str(len(IMAGE))
    assert head.content == b""
    assert part.status_code == 206
    assert part.content == IMAGE[100:200]
    assert escape.status_code == 404
