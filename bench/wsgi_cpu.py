"""CPU per request of one hot path through a WSGI application, in this process, without
gunicorn or a load client: the part of a request that is the application's own.

    python -m bench.wsgi_cpu asuproject.wsgi GET /api/v1/build/<hash>
    python -m bench.wsgi_cpu asuproject.wsgi POST /api/v1/build --body request.json
    python -m bench.wsgi_cpu bench.ceiling.wsgi GET /anything   # BENCH_CEILING_ANSWER=...
    ... --profile     # cProfile of the calls, the top 40 by cumulative time

The environment is the one gunicorn gives a request from wrk (keep-alive, no Origin).
Prints the median over rounds of the process's CPU per call, and on PostgreSQL the CPU
of this process's database backend per call. Run it with the server's settings
(DATABASE_URL, ...) against a database holding what the path reads (the bench's).
"""

import argparse
import cProfile
import importlib
import io
import os
import pstats
import statistics
import time
from collections.abc import Callable
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def environ(method: str, path: str, body: bytes) -> dict:
    return {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "RAW_URI": path,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "wrk",
        "HTTP_CONNECTION": "keep-alive",
        "CONTENT_TYPE": "application/json" if body else "",
        "CONTENT_LENGTH": str(len(body)) if body else "",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def call(application: Callable, method: str, path: str, body: bytes) -> int:
    statuses: list[str] = []

    def start_response(status: str, headers: list, exc_info: object = None) -> None:
        statuses.append(status)

    result = application(environ(method, path, body), start_response)
    try:
        for _chunk in result:
            pass
    finally:
        close = getattr(result, "close", None)
        if close:
            close()
    return int(statuses[0].split()[0])


def backend_seconds() -> float:
    """CPU seconds of this process's PostgreSQL backend so far (0 on other databases)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return 0.0
    pid = connection.connection.info.backend_pid
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.wsgi_cpu", description=__doc__)
    parser.add_argument("module", help="the WSGI module: asuproject.wsgi or bench.ceiling.wsgi")
    parser.add_argument("method")
    parser.add_argument("path")
    parser.add_argument("--body", type=Path, help="a file holding the request body")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    body = args.body.read_bytes() if args.body else b""
    application = importlib.import_module(args.module).application
    status = call(application, args.method, args.path, body)
    for _ in range(200):
        call(application, args.method, args.path, body)
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.calls):
            call(application, args.method, args.path, body)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
        return
    own, database = [], []
    for _ in range(args.rounds):
        backend, started = backend_seconds(), time.process_time()
        for _ in range(args.calls):
            call(application, args.method, args.path, body)
        own.append((time.process_time() - started) / args.calls * 1e6)
        database.append((backend_seconds() - backend) / args.calls * 1e6)
    print(
        f"{args.method} {args.path} -> {status}: {statistics.median(own):.0f} µs CPU per call "
        f"(rounds {' '.join(f'{x:.0f}' for x in own)}), database backend "
        f"{statistics.median(database):.0f} µs"
    )


if __name__ == "__main__":
    main()
