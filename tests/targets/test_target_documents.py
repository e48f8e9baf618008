"""Per-version documents of the catalogue: a profile's {profile}.json and /api/v1/revision."""

import json

ORIGIN = {"HTTP_ORIGIN": "https://sysupgrade.example"}


def test_profile_json_is_the_profiles_json_top_level_with_the_profile(client, synced, mirror_dir):
    upstream = json.loads(
        (mirror_dir / "releases/24.10.1/targets/ath79/generic/profiles.json").read_text()
    )
    response = client.get(
        "/json/v1/releases/24.10.1/targets/ath79/generic/tplink_archer-c7-v5.json", **ORIGIN
    )
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == "*"
    expected = {key: value for key, value in upstream.items() if key != "profiles"}
    expected |= upstream["profiles"]["tplink_archer-c7-v5"]
    expected |= {"id": "tplink_archer-c7-v5", "build_at": "2025-04-13T16:38:32.000000Z"}
    assert response.json() == expected


def test_profile_json_accepts_a_board_name(client, synced):
    response = client.get("/json/v1/releases/25.12.0/targets/ath79/generic/8dev,carambola2.json")
    assert response.status_code == 200
    assert response.json()["id"] == "8dev_carambola2"
    response = client.get("/json/v1/releases/25.12.0/targets/ath79/generic/carambola2.json")
    assert response.json()["id"] == "8dev_carambola2"


def test_profile_json_of_a_release_without_linux_kernel(client, synced):
    document = client.get("/json/v1/releases/23.05.5/targets/x86/64/generic.json").json()
    assert "linux_kernel" not in document
    assert document["version_number"] == "23.05.5"
    assert document["supported_devices"] == []


def test_revision_answers_the_version_code(client, synced):
    response = client.get("/api/v1/revision/SNAPSHOT/x86/64?1712345678901", **ORIGIN)
    assert response.status_code == 200
    assert response.json() == {"revision": "r33001-0123456789"}
    assert response["Access-Control-Allow-Origin"] == "*"
    assert client.get("/api/v1/revision/24.10.1/ath79/generic").json() == {
        "revision": "r28597-0425664679"
    }


def test_revision_of_an_unknown_version_is_400(client, synced):
    response = client.get("/api/v1/revision/9.9.9/x86/64", **ORIGIN)
    assert response.status_code == 400
    assert response.json() == {
        "status": 400,
        "title": "Bad Request",
        "detail": "Unsupported version: 9.9.9",
    }
    assert response["Access-Control-Allow-Origin"] == "*"


def test_revision_of_an_unknown_target_is_400(client, synced):
    response = client.get("/api/v1/revision/23.05.5/mediatek/filogic")
    assert response.status_code == 400
    assert response.json()["detail"] == (
        "Unsupported target: mediatek/filogic. Version 23.05.5 does not offer it."
    )


def test_revision_takes_one_query(client, synced, django_assert_num_queries):
    with django_assert_num_queries(1):
        client.get("/api/v1/revision/24.10.1/x86/64")
