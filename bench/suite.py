"""The benchmark suite behind `make bench`: see BENCHMARKS.md for what each figure means."""

import argparse
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from bench.catalogue import BUILD_PROFILE, BUILD_TARGET, STABLE, build_catalogue, catalogue_counts
from bench.client import Client
from bench.environment import VAR, bench_env, ensure_database, forget_queue, kinds, wipe_data
from bench.loadgen import LoadResult, client_for, run_load, wrk_available
from bench.profile import LOAD_SECONDS, profile_hot_path, py_spy
from bench.report import Figure, machine_lines, table
from bench.server import Ceiling, Server, cpu_between, free_port
from bench.workload import build_request, installed_packages

CONNECTIONS = 8
CpuSnapshot = Callable[[], dict[int, float]]


@dataclass
class Options:
    runs: int  # load and validation runs
    slow_runs: int  # sync and build runs
    seconds: float  # length of one load run
    quick: bool
    profile: bool  # py-spy flame graphs of the hot paths (bench/profile.py)
    only: str = ""  # "workers": the sync and figure 8 alone; "checks": sync, 4. and 4b.


def say(text: str) -> None:
    """Progress, on stderr, so that stdout is the table alone."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- 5. catalogue sync -------------------------------------------------------------------


def bench_sync(opts: Options) -> list[Figure]:
    from django.db import connection

    from packages.sync import sync_upstream
    from targets.models import Version

    full = Figure("5. catalogue sync", "full, empty catalogue", "s")
    again = Figure("5. catalogue sync", "again, nothing changed upstream", "s", aim="< 5")
    for run in range(opts.slow_runs):
        Version.objects.all().delete()
        start = time.perf_counter()
        report = sync_upstream()
        full.runs.append(time.perf_counter() - start)
        if not report.ok:
            raise RuntimeError(f"sync failed: {report.errors[:3]}")
        start = time.perf_counter()
        report2 = sync_upstream()
        again.runs.append(time.perf_counter() - start)
        if report2.targets_updated or report2.feeds_updated:
            again.note = f"wrote {report2.targets_updated} targets on a no-change run"
        say(f"sync run {run + 1}: full {full.runs[-1]:.1f} s, again {again.runs[-1]:.2f} s "
            f"({report.summary()})")  # fmt: skip
    if connection.vendor == "postgresql":
        # What autovacuum does within a minute of a sync: fresh planner statistics.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    full.note = f"in-process sync_upstream(); {report.summary()}"
    again.note = again.note or "conditional GETs (If-Modified-Since), no writes"
    connection.close()
    return [full, again]


# -- 6, 7. builds ------------------------------------------------------------------------


class StandIn:
    """A private unpacked copy of the stand-in ImageBuilder, to time its own make runs."""

    def __init__(self, catalogue: Path, dest: Path) -> None:
        target_dir = catalogue / "releases" / STABLE / "targets" / BUILD_TARGET
        tarball = next(target_dir.glob("openwrt-imagebuilder-*.tar.zst"))
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        with tarball.open("rb") as raw:
            data = zstandard.ZstdDecompressor().stream_reader(raw).read()
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            # The "data" filter exists from Python 3.11.4 on; the tarball is our own anyway.
            extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(dest, **extra)
        self.path = next(dest.iterdir())
        self.env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.path),
            "LC_ALL": "C",
        }
        self.make(["make", "info"])  # first-run files, as the server primes its cache

    def make(self, args: list[str]) -> float:
        start = time.perf_counter()
        result = subprocess.run(args, cwd=self.path, env=self.env, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if result.returncode:
            raise RuntimeError(f"stand-in {args[:2]} failed: {result.stderr[-2000:]}")
        return elapsed

    def image_seconds(self, build_cmd: list[str]) -> float:
        """Run the server's own `make image` command line here, into a scratch BIN_DIR."""
        with tempfile.TemporaryDirectory() as scratch:
            args = [f"BIN_DIR={scratch}" if a.startswith("BIN_DIR=") else a for a in build_cmd]
            return self.make(args)

    def other_steps_seconds(self, build_cmd: list[str]) -> float:
        """`make manifest` for the same selection: the other ImageBuilder run of a warm
        build (the first `make info` of a revision is kept), part of the server's overhead."""
        packages = next(a for a in build_cmd if a.startswith("PACKAGES="))
        profile = next(a for a in build_cmd if a.startswith("PROFILE="))
        return self.make(["make", "manifest", profile, packages, "STRIP_ABI=1"])


def bench_builds(
    client: Client, opts: Options, packages: list[str], standin: StandIn
) -> list[Figure]:
    from django.conf import settings

    sizes = iter(range(100, 1025))  # a new rootfs size makes a new build each time
    cache_folder = Path(settings.ASU_CACHE_DIR) / STABLE / BUILD_TARGET

    section = "6. one build (150 packages)"
    cold = Figure(section, "cold: POST to 200, with download and unpack", "s")
    cold_over = Figure(section, "cold: server overhead", "s")
    warm = Figure(section, "warm: POST to 200", "s")
    make_image = Figure(section, "stand-in `make image` alone", "s")
    over = Figure(section, "warm: server overhead", "s", aim="< 1")
    queue = Figure(section, "warm: of which in the queue", "s")
    ib_other = Figure(section, "warm: of which stand-in `make manifest`", "s")

    cold_images = []
    for run in range(opts.slow_runs):
        shutil.rmtree(cache_folder, ignore_errors=True)  # the worker is idle between builds
        seconds, body = client.build(build_request(packages, rootfs_size_mb=next(sizes)))
        cold.runs.append(seconds)
        cold_images.append(standin.image_seconds(body["build_cmd"]))
        say(f"cold build {run + 1}: {seconds:.2f} s (make image {cold_images[-1]:.2f} s)")
    for run in range(opts.slow_runs):
        seconds, body = client.build(build_request(packages, rootfs_size_mb=next(sizes)))
        warm.runs.append(seconds)
        queue.runs.append(queue_seconds(body["request_hash"]))
        make_image.runs.append(standin.image_seconds(body["build_cmd"]))
        ib_other.runs.append(standin.other_steps_seconds(body["build_cmd"]))
        say(f"warm build {run + 1}: {seconds:.2f} s (make image {make_image.runs[-1]:.2f} s)")
    # Against the median `make image` time: one contended run of it must not decide.
    image = statistics.median(make_image.runs + cold_images)
    cold_over.runs = [seconds - image for seconds in cold.runs]
    over.runs = [seconds - image for seconds in warm.runs]
    over.note = "POST to 200 minus the median time of the same `make image` run alone"
    queue.note = "started_at - enqueued_at of the build row"

    # 7. Two builds of one target: in parallel (worker concurrency 2) against in a row.
    slow = [*packages, "test-slow-build"]  # the stand-in's make image then sleeps 3 s
    parallel = Figure("7. two builds, one target", "in parallel", "s")
    in_row = Figure("7. two builds, one target", "one after the other", "s")
    ratio = Figure("7. two builds, one target", "parallel / in a row", "ratio", aim="<= 0.6")
    for run in range(opts.slow_runs):
        start = time.perf_counter()
        for _ in range(2):
            client.build(build_request(slow, rootfs_size_mb=next(sizes)))
        in_row.runs.append(time.perf_counter() - start)

        requests = [build_request(slow, rootfs_size_mb=next(sizes)) for _ in range(2)]
        start = time.perf_counter()
        hashes = [client.post_build(r)["request_hash"] for r in requests]
        for request_hash in hashes:
            client.wait_done(request_hash)
        parallel.runs.append(time.perf_counter() - start)
        ratio.runs.append(parallel.runs[-1] / in_row.runs[-1])
        say(f"two builds {run + 1}: parallel {parallel.runs[-1]:.2f} s, "
            f"in a row {in_row.runs[-1]:.2f} s")  # fmt: skip
    parallel.note = "with test-slow-build: each `make image` sleeps 3 s"
    return [cold, cold_over, warm, make_image, over, queue, ib_other, parallel, in_row, ratio]


# -- 8. builds per minute, one worker against two ----------------------------------------

BATCH = 8  # builds of one target sent at once, for one builds-per-minute run


def bench_workers(
    client: Client, server: Server, opts: Options, packages: list[str]
) -> list[Figure]:
    """Builds per minute of one target family: the Procfile's worker alone, then with a
    second worker (a cache of its own, as on a second host) on the same queue."""
    section = "8. builds per minute, one target"
    one = Figure(section, "one worker (concurrency 2)", "builds/min")
    two = Figure(section, "two workers (concurrency 2 each, own caches)", "builds/min")
    gain = Figure(section, "two workers / one", "ratio")
    slow = [*packages, "test-slow-build"]  # each `make image` sleeps 3 s, as a build waits
    sizes = iter(range(600, 1025))  # a new rootfs size makes a new build each time

    def batch() -> float:
        requests = [build_request(slow, rootfs_size_mb=next(sizes)) for _ in range(BATCH)]
        start = time.perf_counter()
        hashes = [client.post_build(request)["request_hash"] for request in requests]
        for request_hash in hashes:
            client.wait_done(request_hash)
        return BATCH * 60 / (time.perf_counter() - start)

    batch()  # warm: the worker's ImageBuilder unpacked, as in the second worker's case
    for run in range(opts.slow_runs):
        one.runs.append(batch())
        say(f"one worker {run + 1}: {one.runs[-1]:.1f} builds/min")
    server.add_worker(VAR / "server" / "cache-second-worker")
    batch()  # the second worker's first build unpacks its ImageBuilder: not counted
    for run in range(opts.slow_runs):
        two.runs.append(batch())
        gain.runs.append(two.runs[-1] / one.median)
        say(f"two workers {run + 1}: {two.runs[-1]:.1f} builds/min")
    one.note = f"{BATCH} builds of {BUILD_TARGET} sent at once, with test-slow-build (3 s sleep)"
    two.note = f"{os.cpu_count()} cores shared by both workers, web, database and broker"
    return [one, two, gain]


def queue_seconds(request_hash: str) -> float:
    """How long the build waited for a worker, from its row."""
    from django.db import connection

    from builds.models import Build

    build = Build.objects.get(request_hash=request_hash)
    connection.close()
    return (build.started_at - build.enqueued_at).total_seconds()


# -- 1, 2, 3. throughput -----------------------------------------------------------------


@dataclass
class HotPath:
    """One request repeated by the load client, with the aims of its figures."""

    section: str
    path: str
    method: str = "GET"
    body: bytes = b""
    aims: dict[str, str] = field(default_factory=dict)  # figure name -> aim

    def figure(self, name: str, unit: str, note: str = "") -> Figure:
        return Figure(self.section, name, unit, aim=self.aims.get(name, ""), note=note)


@dataclass
class LoadRuns:
    """The runs of one server under one request."""

    rps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    errors: int = 0

    def measure(self, url: str, hot: HotPath, seconds: float, cpu: CpuSnapshot) -> None:
        before = cpu()
        result = run_load(url, hot.method, hot.body, seconds=seconds, connections=CONNECTIONS)
        spent = cpu_between(before, cpu())
        self.cpu_ms.append(spent / max(1, result.requests) * 1000)
        self.rps.append(result.rps)
        self.p50.append(result.p50_ms)
        self.p99.append(result.p99_ms)
        self.errors += result.errors


def load_figures(
    hot: HotPath, server: Server, ceiling: Ceiling, opts: Options, cpu: CpuSnapshot
) -> list[Figure]:
    """The server's runs, each between two runs of the ceiling (a minimal Django view
    answering the same bytes), and each run's throughput as a ratio to the mean of the
    ceiling runs either side of it: the cores' share of other work cancels out."""
    url, bare_url = server.url + hot.path, ceiling.url + hot.path
    for warm_url in (url, bare_url):  # warm-up, not counted
        run_load(warm_url, hot.method, hot.body, seconds=1, connections=CONNECTIONS)
    real, bare = LoadRuns(), LoadRuns()
    bare.measure(bare_url, hot, opts.seconds, ceiling.cpu_snapshot)
    for _ in range(opts.runs):
        real.measure(url, hot, opts.seconds, cpu)
        bare.measure(bare_url, hot, opts.seconds, ceiling.cpu_snapshot)
    client = client_for(hot.method)
    rps = hot.figure("throughput", "req/s", f"client: {client}")
    rps.runs = real.rps
    if real.errors or bare.errors:
        rps.note += f"; **{real.errors} + {bare.errors} (ceiling) non-2xx or failed requests**"
    p50, p99 = hot.figure("p50 latency", "ms"), hot.figure("p99 latency", "ms")
    p50.runs, p99.runs = real.p50, real.p99
    cost = hot.figure("server CPU per request", "ms")
    cost.runs = real.cpu_ms
    cores = os.cpu_count() or 1
    cost.note = f"gunicorn + database backends; {cores} cores / this = {cores * 1000 / cost.median:,.0f} req/s"
    top = hot.figure("ceiling: minimal Django view, same bytes", "req/s",
                     f"runs before, between and after the server's; p99 {statistics.median(bare.p99):.1f} ms")  # fmt: skip
    top.runs = bare.rps
    top_cost = hot.figure("ceiling: server CPU per request", "ms")
    top_cost.runs = bare.cpu_ms
    top_cost.note = f"server CPU / this = {cost.median / top_cost.median:.1f}"
    ratio = hot.figure("throughput / ceiling", "ratio", "each run against the mean of the ceiling runs either side")  # fmt: skip
    sides = [(a + b) / 2 for a, b in zip(bare.rps, bare.rps[1:], strict=False)]
    ratio.runs = [r / side for r, side in zip(real.rps, sides, strict=True)]
    say(f"{hot.section}: {rps.median:,.0f} req/s, p50 {p50.median:.1f} ms, p99 {p99.median:.1f} ms, "
        f"{cost.median:.2f} ms CPU/request; ceiling {top.median:,.0f} req/s, "
        f"{top_cost.median:.2f} ms CPU; ratio {ratio.median:.2f}")  # fmt: skip
    return [rps, p50, p99, cost, top, top_cost, ratio]


def hot_paths(opts: Options, hit: dict, small_hit: dict, request_hash: str) -> list[HotPath]:
    """The requests that decide what the server can take (the aims are issue 14's)."""
    from targets.models import Target

    arch = Target.objects.get(version__name=STABLE, name=BUILD_TARGET).arch_packages
    poll = f"/api/v1/build/{request_hash}"
    hot = [
        HotPath("1. cache-hit POST /api/v1/build (150 packages)", "/api/v1/build", "POST",
                json.dumps(hit).encode(),
                {"throughput": ">= 2500", "p99 latency": "< 15",
                 "server CPU per request": "<= 0.7", "throughput / ceiling": ">= 0.7"}),
        HotPath("1b. cache-hit POST, defaults only", "/api/v1/build", "POST",
                json.dumps(small_hit).encode()),
        HotPath("2. poll GET /api/v1/build/<hash>", poll,
                aims={"server CPU per request": "<= 0.5", "throughput / ceiling": ">= 0.85"}),
        HotPath("2. poll HEAD /api/v1/build/<hash>", poll, "HEAD",
                aims={"server CPU per request": "<= 0.5", "throughput / ceiling": ">= 0.85"}),
        HotPath("3. GET /json/v1/overview.json", "/json/v1/overview.json",
                aims={"throughput / ceiling": ">= 0.6"}),
        HotPath(f"3. GET {BUILD_TARGET} index.json",
                f"/json/v1/releases/{STABLE}/targets/{BUILD_TARGET}/index.json",
                aims={"throughput / ceiling": ">= 0.6"}),
        HotPath(f"3. GET {arch}-index.json", f"/json/v1/releases/{STABLE}/packages/{arch}-index.json",
                aims={"throughput / ceiling": ">= 0.6"}),
    ]  # fmt: skip
    if opts.quick:
        hot = [h for h in hot if not h.section.startswith("1b") and "-index" not in h.section]
    return hot


def bench_load(server: Server, opts: Options, hot: list[HotPath]) -> list[Figure]:
    from django.conf import settings
    from django.db import connection

    db = settings.DATABASES["default"]
    database = db["NAME"] if "postgresql" in db["ENGINE"] else ""
    connection.close()

    def cpu() -> dict[int, float]:
        return server.cpu_snapshot(database)

    client = Client(server.url)
    figures: list[Figure] = []
    profiles: list[str] = []
    for path in hot:
        # HEAD answers no body: the ceiling replays the GET answer, and gunicorn drops its
        # body for HEAD as it does for the real server.
        method = "GET" if path.method == "HEAD" else path.method
        answer = client.capture(method, path.path, path.body)
        if not 200 <= answer["status"] < 300:
            raise RuntimeError(f"{path.method} {path.path} answered {answer['status']}")
        with Ceiling(server.env, server.log_dir, answer) as ceiling:
            figures += load_figures(path, server, ceiling, opts, cpu)
        if opts.profile:
            profiles += profile_path(path, server, database)
    client.close()
    if profiles:
        (VAR / "profiles" / "breakdown.md").write_text("\n".join(profiles))
        say(f"profiles: {VAR / 'profiles'}; breakdown:\n" + "\n".join(profiles))
    return figures


def profile_path(hot: HotPath, server: Server, database: str) -> list[str]:
    """A flame graph of `hot` under load and the breakdown of its Python samples by layer
    (bench/profile.py), after the CPU split between gunicorn and the database."""
    url = server.url + hot.path

    def load() -> LoadResult:
        return run_load(url, hot.method, hot.body, seconds=LOAD_SECONDS, connections=CONNECTIONS)

    before = server.cpu_snapshot(database)
    result = load()
    after = server.cpu_snapshot(database)
    web_pids = set(server.web_pids())
    web = cpu_between({p: s for p, s in before.items() if p in web_pids},
                      {p: s for p, s in after.items() if p in web_pids})  # fmt: skip
    db = cpu_between(before, after) - web
    per = 1000 / max(1, result.requests)
    split = (f"Without py-spy: {result.rps:,.0f} req/s; CPU per request: gunicorn "
             f"{web * per:.2f} ms, PostgreSQL backends {db * per:.2f} ms.")  # fmt: skip
    return profile_hot_path(hot.section, load, server.web.pid, split, VAR / "profiles")


# -- 4. validation -----------------------------------------------------------------------


def in_process_figure(section: str, what: str, once: Callable[[], float], opts: Options) -> Figure:
    """Time `once()` (seconds a call) in this process: the median of 50 calls a run, with
    the number of SQL queries one call makes."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    once()
    with CaptureQueriesContext(connection) as queries:
        once()
    figure = Figure(section, "in the server per request", "ms", aim="< 15",
                    note=f"{what}, median of 50 calls a run; {len(queries)} SQL queries")  # fmt: skip
    for _ in range(opts.runs):
        figure.runs.append(statistics.median(once() for _ in range(50)) * 1000)
    return figure


def bench_validation(hit: dict, opts: Options, base: str) -> list[Figure]:
    """Time in the server: the request's shape check and request_build() in this process,
    against the same database, so neither HTTP nor the load client count."""
    from django.db import connection

    from builds.serializers import BuildRequestSerializer
    from builds.services import request_build

    def once() -> float:
        start = time.perf_counter()
        serializer = BuildRequestSerializer(data=hit)
        serializer.is_valid(raise_exception=True)
        build, queued = request_build(serializer.validated_data)
        assert not queued and build.status == "done", "the validation request must be a hit"
        return time.perf_counter() - start

    figure = in_process_figure(
        "4. validation, 150 packages, full catalogue",
        "serializer + request_build() in-process",
        once,
        opts,
    )

    # The same request over HTTP from one client: what a single router sees.
    client = Client(base)
    single = Figure("4. validation, 150 packages, full catalogue",
                    "whole cache-hit POST, one client over HTTP", "ms",
                    note="sequential POSTs on one keep-alive connection; may take the "
                    "server's shortcut for requests it has seen")  # fmt: skip
    for _ in range(opts.runs):
        times = []
        for _ in range(50):
            start = time.perf_counter()
            client.post_build(hit)
            times.append(time.perf_counter() - start)
        single.runs.append(statistics.median(times) * 1000)
    client.close()
    connection.close()
    say(f"validation: {figure.median:.2f} ms in-process, {single.median:.2f} ms over HTTP")
    return [figure, single]


def upgrade_check_request(packages: list[str]) -> dict:
    """A router on the stable release with `packages` installed, a few of them one
    revision behind the catalogue, as the upgrade check receives it."""
    from packages.models import Package
    from targets.models import Target

    target = Target.objects.get(version__name=STABLE, name=BUILD_TARGET)
    rows = Package.objects.for_target(target).filter(name__in=packages)
    installed = dict(rows.values_list("name", "version"))
    for name in list(installed)[::10]:
        installed[name] = installed[name].rsplit("-r", 1)[0] + "-r0"
    return {"version": STABLE, "version_code": target.version_code, "target": BUILD_TARGET,
            "profile": BUILD_PROFILE, "installed": installed}  # fmt: skip


def bench_upgrade_check(packages: list[str], opts: Options) -> list[Figure]:
    """Time in the server: the upgrade check's serializer and upgrade_check() in this
    process, as `bench_validation` times a build request."""
    from django.db import connection

    from builds.upgrade import upgrade_check
    from builds.upgrade_views import UpgradeCheckSerializer

    request = upgrade_check_request(packages)

    def once() -> float:
        start = time.perf_counter()
        serializer = UpgradeCheckSerializer(data=request)
        serializer.is_valid(raise_exception=True)
        answer = upgrade_check(serializer.validated_data)
        assert answer["upgrades"] and not answer["up_to_date"], "the check must find changes"
        return time.perf_counter() - start

    figure = in_process_figure(
        "4. upgrade check, 150 installed packages, full catalogue",
        f"serializer + upgrade_check() in-process, {len(request['installed'])} packages "
        "with versions",
        once,
        opts,
    )
    connection.close()
    say(f"upgrade check: {figure.median:.2f} ms in-process")
    return [figure]


# -- main --------------------------------------------------------------------------------


def parse_options(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one short run of each figure")
    parser.add_argument("--runs", type=int, help="runs per load figure (default 5; quick 1)")
    parser.add_argument("--seconds", type=float, help="seconds per load run (default 5)")
    parser.add_argument(
        "--only",
        choices=["workers", "checks", "load"],
        default="",
        help="workers: figure 8 alone; checks: validation and the upgrade check alone; "
        "load: the hot paths (1-3) alone (each after the sync)",
    )
    parser.add_argument("--profile", action="store_true",
                        help="also py-spy flame graphs of the hot paths, in var/bench/profiles")  # fmt: skip
    args = parser.parse_args(argv)
    if args.profile and not py_spy():
        parser.error("--profile needs py-spy on the PATH (pip install py-spy)")
    if args.quick:
        runs = 1 if args.runs is None else args.runs
        return Options(runs, 1, args.seconds or 2, True, args.profile, args.only)
    return Options(args.runs or 5, 3, args.seconds or 5, False, args.profile, args.only)


def main(argv: list[str] | None = None) -> int:
    opts = parse_options(argv)
    # Stopped by a signal, still stop the server: the finally clauses below run.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    VAR.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(VAR / "server", ignore_errors=True)

    if not wrk_available():
        say("wrk not found (apt-get install wrk): every load figure uses the bench's Python "
            "client, which takes a larger share of the two cores than wrk")  # fmt: skip
    say("generating the full-size catalogue (reused when unchanged)")
    catalogue = build_catalogue(VAR / "catalogue")
    counts = catalogue_counts(catalogue)
    say(f"catalogue: {counts}")
    figures, db_kind, broker_kind = run_benchmarks(opts, catalogue)

    loaders = "wrk (HEAD: Python client)" if wrk_available() else "Python client (wrk not found)"
    setting = [
        *machine_lines(db_kind, broker_kind, loaders, opts.runs),
        f"- sync and build figures: median of {opts.slow_runs} run(s)",
        f"- catalogue: {counts['targets']} targets, {counts['profiles']} profiles, "
        f"{counts['architectures']} package architectures with at least "
        f"{counts['min_packages_per_arch']} packages each (release {STABLE}), plus the test "
        "mirror's three smaller releases",
        f"- server: gunicorn and `celery worker` from the Procfile, DEBUG=false; "
        f"build target {BUILD_TARGET} ({BUILD_PROFILE}), stand-in ImageBuilder",
        f"- load average (1 min) before the run: {load_before:.1f} (above 0.5: other work "
        "shared the cores, and the throughput figures are low; CPU per request is less affected)",
        f"- command: `python -m bench{' --quick' if opts.quick else ''}"
        f"{' --only ' + opts.only if opts.only else ''}`, "
        f"{time.monotonic() - started:.0f} s in all",
    ]
    write_results(figures, setting)
    return 0


def run_benchmarks(opts: Options, catalogue: Path) -> tuple[list[Figure], str, str]:
    """Every figure, against the catalogue served over HTTP and the Procfile's processes;
    also the kinds of database and broker they ran on."""
    from tests.fixtures.serve import serve_directory

    mirror_url, stop_mirror = serve_directory(catalogue)
    env = bench_env(mirror_url, free_port())
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "asuproject.settings"
    server = Server(env, VAR / "logs")
    figures: list[Figure] = []
    try:
        say("migrating the bench database; its builds and catalogue are emptied")
        ensure_database()
        server.manage("migrate", "--no-input")
        import django

        django.setup()
        wipe_data()
        db_kind, broker_kind = kinds()
        say(f"database {db_kind}, broker {broker_kind}")

        figures += bench_sync(opts)

        say("starting gunicorn and the celery worker as the Procfile has them")
        server.start()
        client = Client(server.url)
        packages = installed_packages(catalogue, 150)
        standin = StandIn(catalogue, VAR / "standin")
        if opts.only == "checks":
            hit = build_request(packages)
            client.build(hit)  # validation times a cache hit
            client.close()
            figures += bench_validation(hit, opts, server.url)
            figures += bench_upgrade_check(packages, opts)
            return figures, db_kind, broker_kind
        if opts.only not in ("workers", "load"):
            figures += bench_builds(client, opts, packages, standin)
        if opts.only != "load":
            figures += bench_workers(client, server, opts, packages)
        if opts.only == "workers":
            client.close()
            return figures, db_kind, broker_kind

        # The request every load run repeats: built once, then a cache hit.
        hit = build_request(packages)
        _, done = client.build(hit)
        small_hit = build_request([], diff_packages=False)
        client.build(small_hit)
        client.close()
        figures += bench_load(server, opts, hot_paths(opts, hit, small_hit, done["request_hash"]))
        if opts.only == "load":
            return figures, db_kind, broker_kind
        figures += bench_validation(hit, opts, server.url)
        figures += bench_upgrade_check(packages, opts)
    finally:
        try:
            server.stop()
        finally:
            stop_mirror()
            forget_queue(env)
    return figures, db_kind, broker_kind


def write_results(figures: list[Figure], setting: list[str]) -> None:
    """The table, in section order, to the terminal and to var/bench/results.{md,json}."""
    order = ["1.", "1b", "2.", "3.", "4.", "5.", "6.", "7.", "8."]
    figures.sort(key=lambda f: next(i for i, p in enumerate(order) if f.section.startswith(p)))
    text = "\n".join(["## Results", "", *setting, "", *table(figures)]) + "\n"
    (VAR / "results.md").write_text(text)
    (VAR / "results.json").write_text(
        json.dumps([f.__dict__ | {"median": f.median} for f in figures], indent=1)
    )
    print(text)
    missed = [f for f in figures if f.met == "**no**"]
    if missed:
        print("Aims missed: " + "; ".join(f"{f.section} {f.name}" for f in missed))
