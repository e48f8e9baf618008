"""The production settings the README shows pass Django's deployment checks."""

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def readme_production_settings() -> dict[str, str]:
    """The NAME=value lines of the first shell block of the README's "Production" section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Production", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    settings = {}
    for line in block.splitlines():
        name, _, value = line.split("#", 1)[0].strip().partition("=")
        if value:
            settings[name] = value
    return settings


def check_deploy(settings: dict[str, str], var_dir: Path) -> subprocess.CompletedProcess:
    # Not this process's own: the browser tests set DJANGO_ALLOW_ASYNC_UNSAFE for themselves.
    unwanted = ("SECRET_KEY", "SECURE_", "DJANGO_ALLOW_ASYNC_UNSAFE")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(unwanted)}
    env = {**environ, **settings, "ASU_VAR_DIR": str(var_dir)}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def production() -> dict[str, str]:
    settings = readme_production_settings()
    assert settings["DEBUG"] == "false"
    assert settings["SECRET_KEY"] == "..."  # a placeholder: a real key stands in for it
    return {**settings, "SECRET_KEY": secrets.token_urlsafe(50)}


def test_check_deploy_is_clean_with_the_readme_production_settings(production, tmp_path):
    run = check_deploy(production, tmp_path)
    assert run.returncode == 0, run.stderr
    assert "System check identified no issues" in run.stdout
    assert "WARNINGS" not in run.stderr


def test_check_deploy_warns_without_the_https_settings(production, tmp_path):
    plain = {k: v for k, v in production.items() if not k.startswith("SECURE_")}
    run = check_deploy(plain, tmp_path)
    assert run.returncode != 0
    for warning in ("security.W004", "security.W008"):
        assert warning in run.stderr


def test_a_malformed_proxy_header_stops_start_up(production, tmp_path):
    run = check_deploy(
        {**production, "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto: https"}, tmp_path
    )
    assert run.returncode != 0
    assert "SECURE_PROXY_SSL_HEADER must be an HTTP header name" in run.stderr


def test_a_firmware_selector_url_that_is_not_http_stops_start_up(production, tmp_path):
    run = check_deploy({**production, "ASU_FIRMWARE_SELECTOR_URL": "file:///srv/ofs"}, tmp_path)
    assert run.returncode != 0
    assert "ASU_FIRMWARE_SELECTOR_URL must be a URL starting with http:// or https://" in (
        run.stderr
    )
