"""`make run` for real: DEBUG off, and a process that dies is started again on its own
while the others go on serving."""

import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bench.server import children, free_port
from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except OSError:  # not listening (yet), or the connection dropped
        return 0, ""


def wait_until(condition, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.25)
    raise AssertionError(f"{what} not within {timeout} s; output:\n{log.read_text()[-4000:]}")


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, parents before their children."""
    found = []
    for child in children(pid):
        found += [child, *descendants(child)]
    return found


@pytest.fixture(scope="module")
def make_run(tmp_path_factory):
    """`make run` on a free port, its own var dir and an unreachable upstream, without
    DEBUG in its environment; yields (base URL, output file, wrapper pids by process).
    One for the module: starting it takes half a minute."""
    tmp_path = tmp_path_factory.mktemp("make-run")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "DATABASE_URL")}
    env.update(
        ASU_VAR_DIR=str(tmp_path / "var"),
        ASU_PORT=str(port),
        ASU_HOST="127.0.0.1",
        ASU_UPSTREAM_URL=f"file://{tmp_path}/no-mirror",
        CELERY_BROKER_URL=f"sqla+sqlite:///{tmp_path}/broker.sqlite3",
        PYTHONUNBUFFERED="1",
    )
    output = tmp_path / "make-run.log"
    with open(output, "w") as log:
        # -o: never rebuild the virtualenv from here.
        make = subprocess.Popen(
            ["make", "--no-print-directory", "-o", ".venv/.installed", "run"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wrappers: dict[str, int] = {}
    try:
        started = r"(\w+)\.1 started \(pid=(\d+)\)"
        wait_until(lambda: len(re.findall(started, output.read_text())) == 3, 120, "start", output)
        wrappers.update((name, int(pid)) for name, pid in re.findall(started, output.read_text()))
        yield f"http://127.0.0.1:{port}", output, wrappers
    finally:
        os.killpg(make.pid, signal.SIGTERM)  # make and honcho, which stops its processes
        try:
            make.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()
        for pid in wrappers.values():  # each process group, with any orphaned children
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_make_run_serves_with_debug_off(make_run):
    url, output, _ = make_run
    wait_until(lambda: get(f"{url}/static/admin/css/base.css")[0] == 200, 60, "web", output)
    status, body = get(f"{url}/no-such-page/")
    assert status == 404
    assert "Using the URLconf" not in body  # Django's debug page


def test_a_killed_worker_comes_back_while_web_goes_on_serving(make_run):
    url, output, wrappers = make_run
    static = f"{url}/static/admin/css/base.css"
    wait_until(lambda: get(static)[0] == 200, 60, "web", output)
    wait_until(lambda: "ready." in output.read_text(), 60, "the worker", output)

    def worker() -> int | None:
        """Celery's main process: the child of deploy/keep-running under honcho's shell."""
        pids = [
            pid
            for pid in descendants(wrappers["worker"])
            if "celery" in command_line(pid) and "keep-running" not in command_line(pid)
        ]
        return pids[0] if pids else None

    first = worker()
    os.kill(first, signal.SIGKILL)
    killed_at = time.monotonic()
    answers = []

    def back() -> bool:
        answers.append(get(static)[0])
        again = worker()
        return again not in (None, first) and output.read_text().count("ready.") >= 2

    wait_until(back, 30, "a new worker", output)
    print(f"worker ready again {time.monotonic() - killed_at:.1f} s after SIGKILL")
    assert set(answers) == {200}
    assert get(static)[0] == 200
    assert f"exited with status {128 + signal.SIGKILL}" in output.read_text()
