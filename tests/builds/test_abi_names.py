"""Package names with their ABI version ("libubox20230523"), as 23.05-era clients and
tools report them: accepted wherever the plain name is, built as the plain name."""

import pytest
import requests

from packages.indexes import parse_packages_with_abi
from tests.builds.catalogue import fresh_start, seed_branches
from tests.builds.test_build_clients import poll_until_done

LIBUBOX_23_05 = "2023-05-23-75a3b870-1"


def test_the_index_parser_keeps_each_abi_version():
    text = (
        "Package: libubox20230523\nABIVersion: 20230523\nVersion: 1\nFilename: a.ipk\n\n"
        "Package: kmod-usb2\nVersion: 2\nFilename: b.ipk\n\n"
    )

    packages, abi_versions = parse_packages_with_abi(text, "https://x/Packages")

    assert packages == {"libubox": "1", "kmod-usb2": "2"}
    assert abi_versions == {"libubox": "20230523"}


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_23_05_build_with_abi_suffixed_names(upstream, live_server, start_worker):
    fresh_start()
    seed_branches()
    start_worker(concurrency=1)
    base = live_server.url
    request = {
        "version": "23.05.5",
        "target": "ath79/generic",
        "profile": "tplink,archer-c7-v5",
        "packages": ["libubox20230523", "luci"],
    }

    response = requests.post(f"{base}/api/v1/build", json=request, timeout=120)

    assert response.status_code == 202, response.text
    done = poll_until_done(base, response.json()["request_hash"])
    assert done.status_code == 200, done.text
    assert done.json()["manifest"]["libubox"] == LIBUBOX_23_05
    # The plain name is the same effective build.
    plain = requests.post(
        f"{base}/api/v1/build", json={**request, "packages": ["libubox", "luci"]}, timeout=30
    )
    assert plain.status_code == 200
    assert plain.json()["request_hash"] == response.json()["request_hash"]

    # packages_versions may name it so too, and its version is checked against the manifest.
    pinned = {**request, "packages": [], "packages_versions": {"libubox20230523": LIBUBOX_23_05}}
    response = requests.post(f"{base}/api/v1/build", json=pinned, timeout=30)
    assert response.status_code in (200, 202), response.text
    assert poll_until_done(base, response.json()["request_hash"]).status_code == 200

    # The package-change dry run reads it the same way.
    dry_run = requests.post(
        f"{base}/api/v1/package-changes/apply",
        json={"version": "23.05.5", "target": "ath79/generic", "packages": ["libubox20230523"]},
        timeout=30,
    )
    assert dry_run.status_code == 200, dry_run.text
    assert dry_run.json()["packages"] == ["libubox"]


@pytest.mark.django_db
def test_an_unknown_suffix_is_still_refused(client, upstream):
    fresh_start()
    seed_branches()

    response = client.post(
        "/api/v1/build",
        {
            "version": "23.05.5",
            "target": "ath79/generic",
            "profile": "tplink_archer-c7-v5",
            "packages": ["libubox20990101"],
        },
        content_type="application/json",
    )

    assert response.status_code == 400
    assert response.json()["detail"] == "Impossible package selection: missing (libubox20990101)"
