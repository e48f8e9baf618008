"""The deployment files people copy: docs/deploy.md's settings pass `check --deploy`, the nginx
site passes `nginx -t` and serves the store as the server does, the systemd units restart each
process on its own, and the compose file names every part (and runs, where containers can)."""

import hashlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml

from tests.asuproject.test_deploy_settings import check_deploy
from tests.conftest import ROOT, TRUSTED_KEYS

GUIDE = ROOT / "docs" / "deploy.md"
SITE = ROOT / "deploy" / "nginx" / "asu.conf"
COMPOSE = ROOT / "deploy" / "compose.yaml"


def guide_blocks(containing: str) -> list[str]:
    """The ```sh blocks of the deploy guide that contain `containing`."""
    blocks = re.findall(r"```sh\n(.*?)```", GUIDE.read_text(), re.S)
    return [block for block in blocks if containing in block]


def settings_of(block: str) -> dict[str, str]:
    """The NAME=value lines of a block."""
    pairs = (line.split("#", 1)[0].strip().partition("=") for line in block.splitlines())
    return {name: value for name, _, value in pairs if value}


def test_the_guides_settings_pass_check_deploy_with_and_without_a_bucket(tmp_path):
    (settings_block,) = guide_blocks("DEBUG=false")
    (bucket_block,) = guide_blocks("ASU_STORE_URL=")
    settings = settings_of(settings_block)
    (tmp_path / "secret_key").write_text(secrets.token_urlsafe(50))
    (tmp_path / "s3_secret").write_text("s3-secret")
    settings["SECRET_KEY_FILE"] = str(tmp_path / "secret_key")
    run = check_deploy(settings, tmp_path)
    assert run.returncode == 0, run.stderr

    bucket = settings_of(bucket_block)
    bucket["AWS_SECRET_ACCESS_KEY_FILE"] = str(tmp_path / "s3_secret")
    run = check_deploy({**settings, **bucket}, tmp_path)
    assert run.returncode == 0, run.stderr
    assert "System check identified no issues" in run.stdout
    # The same variables the two-worker S3 test gives its workers.
    names = {name.removesuffix("_FILE") for name in bucket}
    assert names == {
        "ASU_STORE_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
    }


def test_each_systemd_unit_is_restarted_on_its_own_and_runs_the_procfile_command():
    procfile = {
        name: command.split()[0].removeprefix(".venv/bin/")
        for name, _, command in (
            line.partition(": ") for line in (ROOT / "Procfile").read_text().splitlines()
        )
        if command
    }
    for name in ("web", "worker", "beat"):
        unit = (ROOT / "deploy" / "systemd" / f"asu-{name}.service").read_text()
        assert "\nRestart=always\n" in unit
        assert "\nEnvironmentFile=/etc/asu/env\n" in unit
        (exec_start,) = re.findall(r"^ExecStart=(\S+)", unit, re.M)
        assert exec_start == f"/srv/asu/.venv/bin/{procfile[name]}"
    assert "sudo cp deploy/systemd/asu-*.service /etc/systemd/system/" in GUIDE.read_text()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def nginx_config(tmp_path: Path, store: Path, web_port: int) -> tuple[Path, int, int]:
    """The site as the guide installs it, with a self-signed certificate, this test's
    store and ports, inside an nginx.conf of its own; returns it and the two ports."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=sysupgrade.example.org", "-keyout", str(tmp_path / "privkey.pem"),
         "-out", str(tmp_path / "fullchain.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    http, https = free_port(), free_port()
    site = (
        SITE.read_text()
        .replace("/etc/letsencrypt/live/sysupgrade.example.org/", f"{tmp_path}/")
        .replace("/srv/asu/var/store/", f"{store}/")
        .replace("127.0.0.1:8000", f"127.0.0.1:{web_port}")
        .replace("listen 80;", f"listen 127.0.0.1:{http};")
        .replace("listen 443 ssl", f"listen 127.0.0.1:{https} ssl")
    )
    site = re.sub(r"\s*listen \[::\]:\d+[^;]*;", "", site)
    (tmp_path / "site.conf").write_text(site)
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        # Run as root here, the workers may read the test's private folders.
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        "events {}\n"
        f"http {{\n include /etc/nginx/mime.types;\n access_log off;\n"
        f" client_body_temp_path {tmp_path}/body;\n proxy_temp_path {tmp_path}/proxy;\n"
        f" include {tmp_path}/site.conf;\n}}\n"
    )
    return conf, http, https


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_the_nginx_site_passes_nginx_t_and_serves_the_store_and_the_web_process(
    tmp_path, live_server
):
    store = tmp_path / "store"
    (store / "abc123").mkdir(parents=True)
    image = bytes(range(256)) * 100
    (store / "abc123" / "openwrt-sysupgrade.img.gz").write_bytes(image)
    (store / "abc123" / ".partial.bin").write_bytes(b"not yet")
    (tmp_path / "secret").write_bytes(b"secret")
    (store / "abc123" / "escape.bin").symlink_to(tmp_path / "secret")
    web_port = int(live_server.url.rsplit(":", 1)[1])
    conf, http, https = nginx_config(tmp_path, store, web_port)
    nginx = ["nginx", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")]

    checked = subprocess.run([*nginx, "-t"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    server = subprocess.Popen([*nginx, "-g", "daemon off;"])
    try:
        base = f"https://127.0.0.1:{https}"
        wait_for_port(https)
        got = requests.get(f"{base}/store/abc123/openwrt-sysupgrade.img.gz", verify=False)
        assert got.status_code == 200 and got.content == image
        assert got.headers["Content-Type"] == "application/octet-stream"
        assert "Content-Encoding" not in got.headers
        assert got.headers["Access-Control-Allow-Origin"] == "*"
        assert got.headers["Content-Disposition"] == "attachment"
        ranged = requests.get(
            f"{base}/store/abc123/openwrt-sysupgrade.img.gz",
            headers={"Range": "bytes=1-2"},
            verify=False,
        )
        assert (ranged.status_code, ranged.content) == (206, b"\x01\x02")
        for hidden in ("abc123/.partial.bin", "abc123/escape.bin", "../secret"):
            assert requests.get(f"{base}/store/{hidden}", verify=False).status_code in (403, 404)

        # Everything else goes to the web process, which knows the request was https.
        stats = requests.get(f"{base}/api/v1/stats", verify=False)
        assert stats.status_code == 200 and "queue_length" in stats.json()
        plain = requests.get(f"http://127.0.0.1:{http}/api/v1/stats", allow_redirects=False)
        assert plain.status_code == 301
        assert plain.headers["Location"].startswith("https://")
    finally:
        server.terminate()
        server.wait(timeout=20)


def wait_for_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port}")


# The compose file.


def compose_services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_the_compose_file_runs_every_part_from_one_image():
    services = compose_services()
    assert set(services) >= {"db", "redis", "s3", "bucket", "web", "worker", "beat"}
    commands = {name: " ".join(services[name]["command"]) for name in ("web", "worker", "beat")}
    assert "gunicorn asuproject.wsgi" in commands["web"]
    assert "migrate" in commands["web"]
    assert commands["worker"].startswith("celery -A asuproject worker")
    assert commands["beat"].startswith("celery -A asuproject beat")
    for name in ("web", "worker", "beat"):
        service = services[name]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert service["image"] == "asu-django"
        env = service["environment"]
        assert env["DATABASE_URL"].startswith("postgres://asu:asu@db:5432/")
        assert env["CELERY_BROKER_URL"].startswith("redis://redis:6379/")
        assert env["ASU_STORE_URL"].startswith("s3://asu/")
        assert env["AWS_ENDPOINT_URL"] == "http://s3:9000"
        assert env["DEBUG"] == "false"
    assert services["worker"]["deploy"]["replicas"] == "${ASU_WORKERS:-2}"
    assert services["db"]["environment"]["POSTGRES_USER"] == "asu"
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "pip install --no-cache-dir -r requirements.txt" in dockerfile
    assert "USER asu" in dockerfile


def compose_command() -> list[str] | None:
    """`docker compose` or `docker-compose`, whichever works here; None if neither."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        if subprocess.run([*command, "version"], capture_output=True).returncode == 0:
            return command
    return None


@pytest.mark.skipif(compose_command() is None, reason="no docker compose here")
def test_docker_compose_accepts_the_file():
    run = subprocess.run(
        [*compose_command(), "-f", str(COMPOSE), "config", "--quiet"],
        env={**os.environ, "SECRET_KEY": "x" * 50},
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr


def container_runtime() -> bool:
    if compose_command() is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.mark.skipif(not container_runtime(), reason="no container runtime here")
def test_the_compose_file_starts_and_serves_a_build(tmp_path, mirror_dir):
    """The guide's compose commands, against the test mirror mounted into the containers."""
    port = free_port()
    override = tmp_path / "override.yaml"
    mounts = {
        "volumes": [f"{mirror_dir}:/mirror:ro", f"{TRUSTED_KEYS}:/keys:ro"],
        "environment": {"ASU_UPSTREAM_URL": "file:///mirror", "ASU_UPSTREAM_KEYS": "/keys"},
    }
    override.write_text(
        yaml.safe_dump({"services": dict.fromkeys(["web", "worker", "beat"], mounts)})
    )
    compose = [*compose_command(), "-p", f"asu-test-{uuid.uuid4().hex[:6]}"]
    compose += ["-f", str(COMPOSE), "-f", str(override)]
    env = {**os.environ, "SECRET_KEY": "x" * 50, "ASU_PORT": str(port)}

    def run(*args: str, timeout: float = 900) -> str:
        done = subprocess.run([*compose, *args], env=env, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
        assert done.returncode == 0, done.stderr[-4000:]
        return done.stdout

    try:
        run("up", "-d", "--build", "--wait", "--scale", "worker=2")
        run("exec", "-T", "web", "python", "manage.py", "sync_upstream", "-v", "0")
        base = f"http://127.0.0.1:{port}"
        request = {"version": "24.10.1", "target": "ath79/generic",
                   "profile": "tplink,archer-c7-v5", "packages": ["htop"]}  # fmt: skip
        answer = requests.post(f"{base}/api/v1/build", json=request, timeout=60)
        deadline = time.monotonic() + 300
        while answer.status_code == 202 and time.monotonic() < deadline:
            time.sleep(1)
            answer = requests.get(f"{base}/api/v1/build/{answer.json()['request_hash']}")
        assert answer.status_code == 200, answer.text
        result = answer.json()
        image = result["images"][0]
        got = requests.get(f"{base}/store/{result['bin_dir']}/{image['name']}", timeout=60)
        assert hashlib.sha256(got.content).hexdigest() == image["sha256"]
    finally:
        subprocess.run([*compose, "down", "-v"], env=env, capture_output=True, timeout=300)
