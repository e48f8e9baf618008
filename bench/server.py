"""The server under test, started for real: gunicorn and a Celery worker as the Procfile has them."""

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def procfile_command(name: str, env: dict[str, str]) -> list[str]:
    """The Procfile's `name:` line as an argument list, with ${VARS} filled in from `env`."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        key, _, command = line.partition(":")
        if key.strip() == name:
            args = shlex.split(command)
            # Expand ${ASU_HOST} etc. with the bench's values, not the caller's.
            saved = dict(os.environ)
            try:
                os.environ.clear()
                os.environ.update(env)
                args = [os.path.expandvars(arg) for arg in args]
            finally:
                os.environ.clear()
                os.environ.update(saved)
            if args[0].startswith(".venv/bin/"):
                # The venv the bench runs in, wherever it is.
                args[0] = str(Path(sys.executable).parent / Path(args[0]).name)
            return args
    raise RuntimeError(f"Procfile has no {name}: line")


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), 0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_backends(database: str) -> list[int]:
    """PostgreSQL backend processes serving `database` (their title names it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        words = title.split()
        if title.startswith("postgres:") and database in words:
            pids.append(int(entry.name))
    return pids


def cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two snapshots. A process that ended in between (a
    database connection past CONN_MAX_AGE) takes its share with it: a slight undercount."""
    return sum(max(0.0, seconds - before.get(pid, 0.0)) for pid, seconds in after.items())


class Server:
    """gunicorn + a Celery worker on a bench database, stopped by stop()."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.url = f"http://{env['ASU_HOST']}:{env['ASU_PORT']}"
        self.web: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.more_workers: list[subprocess.Popen] = []

    def manage(self, *args: str, timeout: float = 600) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr[-4000:]}")
        return result.stdout

    def start(self) -> None:
        self.start_web()
        self.start_worker()

    def start_web(self) -> None:
        self.web, log_path = self._spawn("web")
        wait_answering(self.web, f"{self.url}/api/v1/stats", log_path)

    def start_worker(self) -> None:
        self.worker = self._start_worker("worker")

    def add_worker(self, cache_dir: Path) -> None:
        """One more worker of the Procfile's kind, with an ImageBuilder cache of its own,
        as on another host."""
        name = f"worker-{len(self.more_workers) + 2}"
        self.more_workers.append(self._start_worker(name, {"ASU_CACHE_DIR": str(cache_dir)}))

    def _start_worker(self, name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        worker, log_path = self._spawn("worker", name, env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                raise RuntimeError(f"celery worker exited:\n{log_path.read_text()[-4000:]}")
            if "ready." in log_path.read_text():
                return worker
            time.sleep(0.2)
        raise RuntimeError("celery worker not ready within 60 s")

    def _spawn(
        self, process: str, name: str = "", env: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen, Path]:
        """Start the Procfile's `process` line with `env` added, its output in
        logs/<name or process>.log."""
        log_path = self.log_dir / f"{name or process}.log"
        env = {**self.env, **(env or {})}
        return spawn(procfile_command(process, env), env, log_path), log_path

    def web_pids(self) -> list[int]:
        """gunicorn's master and its workers."""
        return process_tree(self.web)

    def cpu_snapshot(self, database: str = "") -> dict[int, float]:
        """CPU time used so far by gunicorn and, with PostgreSQL, by the backends of the
        bench database, by process: what serving costs, whatever else the machine runs."""
        pids = self.web_pids()
        if database:
            pids += postgres_backends(database)
        return {pid: process_cpu_seconds(pid) for pid in pids}

    def stop(self) -> None:
        stop_processes(self.web, self.worker, *self.more_workers)


class Ceiling:
    """A minimal Django view answering `answer` (`Client.capture`), served by gunicorn
    with the Procfile's web line, the app swapped: what this design can reach at most.
    Use as a context manager; it listens on a port of its own."""

    def __init__(self, env: dict[str, str], log_dir: Path, answer: dict) -> None:
        self.env = {**env, "ASU_PORT": str(free_port())}
        self.log_path = log_dir / "ceiling.log"
        self.answer_path = log_dir / "ceiling-answer.json"
        self.answer = answer
        self.url = f"http://{self.env['ASU_HOST']}:{self.env['ASU_PORT']}"
        self.web: subprocess.Popen | None = None

    def __enter__(self) -> "Ceiling":
        self.answer_path.write_text(json.dumps(self.answer))
        self.env["BENCH_CEILING_ANSWER"] = str(self.answer_path)
        args = procfile_command("web", self.env)
        args[args.index(REAL_APP)] = CEILING_APP
        self.web = spawn(args, self.env, self.log_path)
        try:
            wait_answering(self.web, self.url, self.log_path)
        except BaseException:
            stop_processes(self.web)
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        stop_processes(self.web)

    def cpu_snapshot(self) -> dict[int, float]:
        return {pid: process_cpu_seconds(pid) for pid in process_tree(self.web)}


# The application argument of the Procfile's web line, and the ceiling's in its place.
REAL_APP = "asuproject.wsgi"
CEILING_APP = "bench.ceiling.wsgi"


def spawn(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start `args` in a session of its own, its output in `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def wait_answering(web: subprocess.Popen, url: str, log_path: Path) -> None:
    """Wait until gunicorn answers `url`, whatever the status."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if web.poll() is not None:
            raise RuntimeError(f"gunicorn exited:\n{log_path.read_text()[-4000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except urllib.error.HTTPError:
            return  # it answers; the status does not matter here
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("gunicorn did not answer within 60 s")


def process_tree(process: subprocess.Popen | None) -> list[int]:
    """A process and its children (gunicorn's master and its workers)."""
    if process is None:
        return []
    return [process.pid, *children(process.pid)]


def stop_processes(*processes: subprocess.Popen | None) -> None:
    for process in processes:
        if process and process.poll() is None:
            # Each runs in its own session: signal its group, i.e. its own children only.
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        if process:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
