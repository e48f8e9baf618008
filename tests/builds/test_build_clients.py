"""Each real client's flow, request by request: the LuCI app, owut, auc and the Firmware
Selector, as api-contract.md describes what they send and read.

The worker's part is played by setting the Build row the way builds.tasks records it;
the last tests run the whole path with a real worker, the test mirror and its stand-in
ImageBuilder.
"""

import hashlib
import time

import pytest
import requests
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from builds.models import Build
from tests.builds.catalogue import (
    ATH79_DEFAULTS,
    finish,
    fresh_start,
    make_catalogue,
    missing_package_request,
    seed_branches,
    start,
)

# Every answer is also checked against the OpenAPI description (tests/schema.py).
pytestmark = pytest.mark.usefixtures("documented_api")
ORIGIN = "https://firmware-selector.openwrt.org"
STEPS = {
    "init",
    "container_setup",
    "validate_revision",
    "validate_manifest",
    "calculate_packages_hash",
    "building_image",
    "signing_images",
    "done",
    "failed",
    "download_imagebuilder",
    "unpack_imagebuilder",
}


@pytest.fixture
def catalogue(db, settings, tmp_path) -> dict:
    fresh_start(settings, tmp_path)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "store")},
        },
    }
    return make_catalogue()


def finish_with_image(build: Build) -> bytes:
    """The worker's end: the image in the store and the row done."""
    finish(build)
    data = b"\x27\x05\x19\x56" + build.bin_dir.encode() * 100
    image = build.images[0]
    image["sha256"] = hashlib.sha256(data).hexdigest()
    build.images = [image]
    build.result["images"] = [image]
    build.save()
    default_storage.save(f"{build.bin_dir}/{image['name']}", ContentFile(data))
    return data


def sysupgrade_image(body: dict, filesystem: str) -> dict:
    types = {"sysupgrade", "combined", "combined-efi", "sdcard"}
    return next(
        image
        for image in body["images"]
        if image["type"] in types and image["filesystem"] == filesystem
    )


def test_luci_with_a_raw_board_name(client, catalogue):
    """LuCI posts the board name from `ubus call system board`, the absolute package list
    and a null rootfs size, polls with a cache-buster, and downloads the sysupgrade image."""
    cors = {"Origin": "https://192.168.1.1"}
    preflight = client.options(
        "/api/v1/build",
        headers={
            **cors,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight["Access-Control-Allow-Origin"] == "*"

    installed = [p for p in ATH79_DEFAULTS if p != "ppp"] + ["luci", "luci-ssl", "kmod-ath10k-ct"]
    response = client.post(
        "/api/v1/build",
        {
            "client": "luci/25.103.51521~2ac26e5",
            "packages": installed,
            "profile": "tplink,archer-c7-v5",
            "target": "ath79/generic",
            "version": "24.10.1",
            "diff_packages": True,
            "filesystem": "squashfs",
            "rootfs_size_mb": None,
        },
        content_type="application/json",
        headers=cors,
    )
    assert response.status_code == 202
    assert response["Access-Control-Allow-Origin"] == "*"
    body = response.json()
    # LuCI shows the queue message only when the key is there.
    assert body["queue_position"] == 0
    request_hash = body["request_hash"]
    build = Build.objects.get(request_hash=request_hash)
    assert build.profile == "tplink_archer-c7-v5"
    assert "-ppp" in build.packages
    assert build.client == "luci/25.103.51521~2ac26e5"

    poll = client.get(f"/api/v1/build/{request_hash}?1712345678901", headers=cors)
    assert poll.status_code == 202
    assert poll.json()["detail"] == "queued"

    start(build, "building_image")
    poll = client.get(f"/api/v1/build/{request_hash}?1712345678906", headers=cors)
    assert poll.status_code == 202
    assert "queue_position" not in poll.json()
    assert poll.json()["imagebuilder_status"] in STEPS

    data = finish_with_image(build)
    done = client.get(f"/api/v1/build/{request_hash}?1712345678911", headers=cors).json()
    assert done["status"] == 200
    image = sysupgrade_image(done, "squashfs")
    download = client.get(f"/store/{done['bin_dir']}/{image['name']}", headers=cors)
    assert download.status_code == 200
    assert download["Access-Control-Allow-Origin"] == "*"
    content = b"".join(download.streaming_content)
    assert (
        hashlib.sha256(content).hexdigest() == image["sha256"] == hashlib.sha256(data).hexdigest()
    )


def test_owut_with_packages_versions_and_head_polling(client, catalogue):
    """owut sends packages_versions and the expected revision, polls with HEAD, then reads
    request.version_code, request.rootfs_size_mb and request.defaults from the result."""
    response = client.post(
        "/api/v1/build",
        {
            "client": "owut/2026.04.09",
            "target": "ath79/generic",
            "profile": "tplink_archer-c7-v5",
            "version": "24.10.1",
            "version_code": "r28427-6df0e3d02a",
            "filesystem": "squashfs",
            "diff_packages": True,
            "packages_versions": {"luci": "25.100-r1", "base-files": "1655-r1", "+owut": "1.0"},
            "rootfs_size_mb": 128,
        },
        content_type="application/json",
        headers={"User-Agent": "owut/2026.04.09"},
    )
    assert response.status_code == 202
    request_hash = response.json()["request_hash"]
    build = Build.objects.get(request_hash=request_hash)
    assert build.request["packages_versions"] == {
        "luci": "25.100-r1",
        "base-files": "1655-r1",
        "owut": "1.0",
    }

    head = client.head(f"/api/v1/build/{request_hash}")
    assert head.status_code == 202
    assert head["X-Imagebuilder-Status"] == "queued"
    assert head["X-Queue-Position"] == "0"

    start(build, "validate_revision")
    head = client.head(f"/api/v1/build/{request_hash}")
    assert head.status_code == 202
    assert head["X-Imagebuilder-Status"] == "validate_revision"

    finish_with_image(build)
    head = client.head(f"/api/v1/build/{request_hash}")
    assert head.status_code == 200
    assert head["X-Imagebuilder-Status"] == "done"

    done = client.get(f"/api/v1/build/{request_hash}").json()
    assert done["status"] == 200
    assert done["detail"] == "done"
    assert done["request"]["version_code"] == "r28427-6df0e3d02a"
    assert done["request"]["rootfs_size_mb"] == 128
    assert done["request"]["defaults"] is None
    assert done["version_code"] == "r28427-6df0e3d02a"
    assert isinstance(done["manifest"], dict)
    assert isinstance(done["build_cmd"], list)
    assert sysupgrade_image(done, "squashfs")["sha256"]


def test_auc_with_only_a_user_agent(client, catalogue):
    """auc sends no `client`, names itself in its User-Agent, and posts text/json."""
    body = (
        '{"version": "24.10.1", "version_code": "r28427-6df0e3d02a", '
        '"target": "ath79/generic", "filesystem": "squashfs", "profile": "8dev_carambola2", '
        '"diff_packages": true, "packages_versions": {"base-files": "1655-r1", "auc": "0.3.2-1"}}'
    )
    response = client.post(
        "/api/v1/build", body, content_type="text/json", headers={"User-Agent": "auc (0.3.2-1)"}
    )
    assert response.status_code == 202
    assert response["X-Imagebuilder-Status"] == "queued"
    request_hash = response.json()["request_hash"]
    build = Build.objects.get(request_hash=request_hash)
    assert build.client == "auc/0.3.2-1"

    finish_with_image(build)
    done = client.get(f"/api/v1/build/{request_hash}", headers={"User-Agent": "auc (0.3.2-1)"})
    assert done.status_code == 200
    assert done.json()["bin_dir"] == build.bin_dir


def test_auc_reads_unknown_packages_from_a_header(client, catalogue):
    response = client.post(
        "/api/v1/build",
        '{"version": "24.10.1", "target": "ath79/generic", "profile": "8dev_carambola2", '
        '"diff_packages": true, "packages_versions": {"base-files": "1", "not-here": "1"}}',
        content_type="text/json",
        headers={"User-Agent": "auc (0.3.2-1)"},
    )

    assert response.status_code == 400
    assert response["X-Unknown-Package"] == "not-here"


def test_the_firmware_selector_with_empty_defaults_and_preflights(client, catalogue):
    """The selector sends `defaults: ""`, empty version_code, repositories and keys, and
    polls with Content-Type: application/json, so every poll is preceded by a preflight."""
    cors = {"Origin": ORIGIN}
    response = client.post(
        "/api/v1/build",
        {
            "profile": "8dev_carambola2",
            "target": "ath79/generic",
            "packages": ["luci", "-dnsmasq"],
            "defaults": "",
            "version_code": "",
            "version": "24.10.1",
            "diff_packages": False,
            "client": "ofs/4.3.2",
            "repositories": {},
            "repository_keys": [],
        },
        content_type="application/json",
        headers=cors,
    )
    assert response.status_code == 202
    assert response["Access-Control-Allow-Origin"] == "*"
    request_hash = response.json()["request_hash"]

    preflight = client.options(
        f"/api/v1/build/{request_hash}",
        headers={
            **cors,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight["Access-Control-Allow-Origin"] == "*"
    assert "GET" in preflight["Access-Control-Allow-Methods"]

    poll = client.get(
        f"/api/v1/build/{request_hash}", content_type="application/json", headers=cors
    )
    assert poll.status_code == 202
    exposed = poll["Access-Control-Expose-Headers"].lower()
    assert "x-imagebuilder-status" in exposed

    finish_with_image(Build.objects.get(request_hash=request_hash))
    done = client.get(
        f"/api/v1/build/{request_hash}", content_type="application/json", headers=cors
    ).json()
    assert done["status"] == 200
    assert isinstance(done["detail"], str)
    image = done["images"][0]
    assert client.head(f"/store/{done['bin_dir']}/{image['name']}").status_code == 200


def test_the_selector_reads_a_string_detail_on_422(client, catalogue):
    response = client.post(
        "/api/v1/build",
        {"profile": "8dev_carambola2", "target": "ath79/generic", "version": "24.10.1",
         "packages": [1, {"x": 2}]},
        content_type="application/json",
        headers={"Origin": ORIGIN},
    )  # fmt: skip

    assert response.status_code == 422
    assert isinstance(response.json()["detail"], str)
    assert response["Access-Control-Allow-Origin"] == "*"


# The whole path, with a real worker --------------------------------------------------------


def poll_until_done(base: str, request_hash: str, method: str = "GET", timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = requests.request(method, f"{base}/api/v1/build/{request_hash}", timeout=30)
        if response.status_code != 202:
            return response
        assert response.headers["X-Imagebuilder-Status"] in STEPS | {"queued"}
        time.sleep(0.5)
    raise AssertionError(f"build {request_hash} not finished after {timeout} s")


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_release_new_to_the_server_builds_without_a_restart(
    upstream, live_server, start_worker, settings
):
    """The catalogue has never been synced: the request reads version and target from
    upstream, the worker builds with the stand-in ImageBuilder, owut's HEAD polling sees
    it through, and the image downloads with its published sha256."""
    fresh_start()
    seed_branches()
    start_worker(concurrency=1)
    body = {
        "client": "owut/2026.04.09",
        "version": "24.10.1",
        "target": "ath79/generic",
        "profile": "tplink,archer-c7-v5",
        "packages": ["luci"],
        "filesystem": "squashfs",
    }

    response = requests.post(f"{live_server.url}/api/v1/build", json=body, timeout=120)

    assert response.status_code == 202, response.text
    request_hash = response.json()["request_hash"]
    assert poll_until_done(live_server.url, request_hash, "HEAD").status_code == 200
    done = requests.get(f"{live_server.url}/api/v1/build/{request_hash}", timeout=30).json()
    assert done["id"] == "tplink_archer-c7-v5"
    image = sysupgrade_image(done, "squashfs")
    download = requests.get(
        f"{live_server.url}/store/{done['bin_dir']}/{image['name']}", timeout=30
    )
    assert download.status_code == 200
    assert download.headers["Content-Length"] == str(len(download.content))
    assert hashlib.sha256(download.content).hexdigest() == image["sha256"]
    assert "luci" in done["manifest"]

    # The same request again is answered from the cache at once.
    again = requests.post(f"{live_server.url}/api/v1/build", json=body, timeout=30)
    assert again.status_code == 200
    assert again.json()["request_hash"] == request_hash


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_missing_package_fails_the_build_with_the_header_auc_reads(
    upstream, live_server, start_worker, settings
):
    """With extra repositories the pre-check is skipped: the ImageBuilder finds the
    missing package, and the 500 answer names it."""
    fresh_start()
    seed_branches()
    settings.ASU_REPOSITORY_ALLOW_LIST = [f"{upstream}/nothing-here"]
    start_worker(concurrency=1)
    body = missing_package_request(upstream)

    response = requests.post(
        f"{live_server.url}/api/v1/build",
        json=body,
        headers={"User-Agent": "auc (0.3.2-1)"},
        timeout=120,
    )
    assert response.status_code == 202, response.text
    failed = poll_until_done(live_server.url, response.json()["request_hash"])

    assert failed.status_code == 500
    assert failed.json()["detail"] == (
        "Error: Impossible package selection: missing (surely-not-a-package)"
    )
    assert failed.headers["X-Unknown-Package"] == "surely-not-a-package"
    assert failed.headers["X-Imagebuilder-Status"] == "failed"
