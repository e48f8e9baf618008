"""Shared fixtures: the test downloads mirror, served for real, and a real Celery worker."""

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from importlib import import_module
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.db import connection

from asuproject.celery import app as celery_app
from asuproject.storage import is_local
from tally import counting
from targets import generation
from tests.fixtures.mirror import build_mirror
from tests.fixtures.serve import serve_directory

ROOT = Path(__file__).resolve().parent.parent
TRUSTED_KEYS = ROOT / "tests" / "fixtures" / "keys" / "trusted"
UNTRUSTED_KEYS = ROOT / "tests" / "fixtures" / "keys" / "untrusted"

# One Celery queue per test session, so concurrent runs sharing a broker never take each
# other's tasks. pytest-django has read the settings by now: set it where it is read.
QUEUE = f"asu-test-{uuid.uuid4().hex[:8]}"
django_settings.CELERY_TASK_DEFAULT_QUEUE = QUEUE
celery_app.conf.task_default_queue = QUEUE


@pytest.hookimpl(tryfirst=True)  # before pytest reads the option
def pytest_configure(config: pytest.Config) -> None:
    """As root, temporary folders under a root of this session's own, not the shared
    /tmp/pytest-of-root, which each new session makes private (0700) again: the sandbox's
    host user must reach the working copies there (see tmp_path)."""
    if os.geteuid() == 0 and not config.option.basetemp:
        config.option.basetemp = tempfile.mkdtemp(prefix="asu-pytest-")


def pytest_unconfigure(config: pytest.Config) -> None:
    if os.geteuid() == 0 and Path(config.option.basetemp).name.startswith("asu-pytest-"):
        shutil.rmtree(config.option.basetemp, ignore_errors=True)


@pytest.fixture
def tmp_path(tmp_path: Path) -> Path:
    """pytest's tmp_path, and the folders above it up to the system's temporary folder,
    made searchable (not listable) by others when the tests run as root: the sandbox's
    host user (ASU_SANDBOX_USER) must reach the working copies in ASU_CACHE_DIR."""
    if os.geteuid() == 0:
        top = Path(tempfile.gettempdir())
        for folder in (tmp_path, *tmp_path.parents):
            if folder == top or folder == folder.parent:
                break
            folder.chmod(folder.stat().st_mode | stat.S_IXOTH)
    return tmp_path


@pytest.fixture(scope="session", autouse=True)
def _no_counts_left_at_exit() -> Iterator[None]:
    """The WSGI module (which the live server loads) turns on the background writer of
    request counts; in tests it stays off: they write counts themselves, and a thread
    writing between (or after) tests would reach other tests' or the real database."""
    import_module(django_settings.WSGI_APPLICATION.rsplit(".", 1)[0])
    counting.flush_every(0)
    yield
    counting.flush_every(0)
    counting.clear()


@pytest.fixture(scope="session", autouse=True)
def _generations_listener_closed_at_exit(django_db_setup) -> Iterator[None]:
    """The connection on which this process listens for the generations' notifications
    (targets.generation) is closed before the test database is dropped, which refuses
    while a session is open."""
    yield
    generation.listener.close()


@pytest.fixture(autouse=True)
def _generations_listener_tried_at_once() -> None:
    """A test that ended the listening connection (a database outage) leaves it waiting
    a few seconds before connecting again; the next test starts without that wait."""
    generation.listener.retry_at = 0.0


@pytest.fixture(autouse=True)
def _counts_of_this_test_only() -> Iterator[None]:
    """Request counts wait in this process's memory until something flushes them; a
    test's requests must not be written by a later test (which may run outside a
    transaction, and whose assertions would see them)."""
    counting.clear()
    yield
    counting.clear()


@pytest.fixture(scope="session")
def mirror_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test downloads mirror, generated once per session. Treat it as read-only;
    tests that damage upstream files use `mirror_copy`."""
    return build_mirror(tmp_path_factory.mktemp("mirror"))


@pytest.fixture(scope="session")
def mirror_url(mirror_dir: Path) -> Iterator[str]:
    """The mirror served over real HTTP on 127.0.0.1."""
    url, stop = serve_directory(mirror_dir)
    yield url
    stop()


@pytest.fixture
def mirror_copy(mirror_dir: Path, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A private copy of the mirror, served over HTTP, for tests that change upstream."""
    copy = tmp_path / "mirror"
    shutil.copytree(mirror_dir, copy, symlinks=True)
    url, stop = serve_directory(copy)
    yield copy, url
    stop()


@pytest.fixture
def upstream(settings, mirror_url: str, tmp_path: Path) -> str:
    """Point the server at the served mirror, with trusted keys and private store and cache."""
    settings.ASU_UPSTREAM_URL = mirror_url
    settings.ASU_UPSTREAM_KEYS = str(TRUSTED_KEYS)
    settings.ASU_CACHE_DIR = tmp_path / "cache"
    settings.ASU_STORE_DIR = tmp_path / "store"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            **settings.STORAGES["default"],
            "OPTIONS": {"location": str(tmp_path / "store")},
        },
    }
    return mirror_url


def database_url_for_workers() -> str:
    """The URL of the test database, for worker processes started by the tests."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    port = db.get("PORT") or 5432
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{port}/{db['NAME']}"


@pytest.fixture
def seeded_data(transactional_db) -> None:
    """Put back what the data migrations seed (branches, package-change rules, groups):
    the flush after each transactional test removes it. The cache goes too, since it
    holds per-name throttles and documents of the flushed rows."""
    from django.apps import apps
    from django.contrib.auth.models import Group

    from packages.models import PackageChange
    from targets.models import Branch

    cache.clear()
    seeds = [
        (Branch, "targets.migrations.0002_seed_branches", "seed"),
        (PackageChange, "packages.migrations.0003_seed_package_changes", "seed"),
        (Group, "packages.migrations.0004_package_change_groups", "create_groups"),
    ]
    for model, module, function in seeds:
        if not model.objects.exists():
            getattr(import_module(module), function)(apps, None)


@pytest.fixture
def start_worker(settings, seeded_data) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start real `celery worker` processes on this session's queue and test database.

    The worker only sees committed rows, hence a transactional test with the seeded
    data put back.

    Call it after changing settings: the worker gets the ASU_* settings of the moment
    (upstream, keys, store, cache, timeouts) through its environment. Extra keyword
    arguments become environment variables. Workers are stopped after the test.
    """
    workers: list[subprocess.Popen] = []

    def start(concurrency: int = 2, **extra_env: str) -> subprocess.Popen:
        env = {
            **os.environ,
            "DEBUG": "true",
            "DATABASE_URL": database_url_for_workers(),
            "CELERY_BROKER_URL": django_settings.CELERY_BROKER_URL,
            "ASU_CELERY_QUEUE": QUEUE,
            "ASU_UPSTREAM_URL": settings.ASU_UPSTREAM_URL,
            "ASU_UPSTREAM_KEYS": str(settings.ASU_UPSTREAM_KEYS or ""),
            "ASU_CACHE_DIR": str(settings.ASU_CACHE_DIR),
            "ASU_STORE_DIR": str(store_dir(settings.STORAGES["default"], settings.ASU_STORE_DIR)),
            "ASU_BUILD_TIMEOUT": str(settings.ASU_BUILD_TIMEOUT),
            "ASU_ALLOW_DEFAULTS": str(settings.ASU_ALLOW_DEFAULTS),
            "ASU_REPOSITORY_ALLOW_LIST": " ".join(settings.ASU_REPOSITORY_ALLOW_LIST),
            **extra_env,
        }
        log = open(Path(settings.ASU_CACHE_DIR).parent / f"worker-{len(workers)}.log", "w")  # noqa: SIM115
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "asuproject",
                "worker",
                "--concurrency",
                str(concurrency),
                "--pool",
                "prefork",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--queues",
                QUEUE,
                "--hostname",
                f"test-{uuid.uuid4().hex[:6]}@%h",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        workers.append(worker)
        _wait_until_ready(Path(log.name), worker)
        return worker

    yield start
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()


def store_dir(storage: dict, default: Path) -> str | Path:
    """The store folder of a local store; `default` for a bucket (a worker given the
    bucket's settings never uses it)."""
    return storage["OPTIONS"]["location"] if is_local(storage) else default


def _wait_until_ready(log: Path, worker: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"celery worker exited at start:\n{log.read_text()}")
        if "ready." in log.read_text():
            return
        time.sleep(0.2)
    raise RuntimeError(f"celery worker not ready after {timeout} s:\n{log.read_text()}")


@pytest.fixture
def documented_api(client, monkeypatch) -> None:
    """Check every answer the test client gets against the API's OpenAPI description
    (tests/schema.py)."""
    from tests.schema import assert_documented

    send = client.request

    def checked(**request):
        response = send(**request)
        assert_documented(response)
        return response

    monkeypatch.setattr(client, "request", checked)
