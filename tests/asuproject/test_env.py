"""Settings from the environment: a malformed value stops start-up and names the variable."""

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from asuproject.lib.env import env_choice, env_networks
from tests.conftest import ROOT

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def test_it_accepts_a_level_in_any_case(monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "warning")
    assert env_choice("LOG_LEVEL", "INFO", LEVELS) == "WARNING"


def test_it_uses_the_default_when_unset(monkeypatch):
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    assert env_choice("LOG_LEVEL", "INFO", LEVELS) == "INFO"


def test_it_refuses_an_unknown_level(monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "loud")
    with pytest.raises(ImproperlyConfigured, match="LOG_LEVEL must be one of DEBUG, INFO"):
        env_choice("LOG_LEVEL", "INFO", LEVELS)


def test_the_server_does_not_start_with_a_bad_log_level():
    env = {**os.environ, "DEBUG": "true", "LOG_LEVEL": "verbose"}
    run = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode != 0
    assert "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, not 'verbose'" in (
        run.stderr
    )


def test_it_reads_networks_and_refuses_what_is_not_one(monkeypatch):
    monkeypatch.setenv("ASU_SANDBOX_ALLOW_NETWORKS", "10.1.2.3/16, fd12::/64 192.168.1.5")
    assert env_networks("ASU_SANDBOX_ALLOW_NETWORKS") == [
        "10.1.0.0/16",
        "fd12::/64",
        "192.168.1.5/32",
    ]
    monkeypatch.setenv("ASU_SANDBOX_ALLOW_NETWORKS", "10.0.0.0/8 lan.example")
    with pytest.raises(ImproperlyConfigured, match="ASU_SANDBOX_ALLOW_NETWORKS must list IP"):
        env_networks("ASU_SANDBOX_ALLOW_NETWORKS")
