"""Bounded HTTP load against 127.0.0.1: wrk when it is installed, else a Python client.

The load runs on the same machine as the server, so the client must cost little CPU:
wrk (C, epoll) is preferred. wrk cannot measure HEAD (its parser waits for the body
that Content-Length announces), so HEAD always uses the Python client, which is a
separate process with one thread and one raw keep-alive socket per connection.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers, timeouts and socket errors
    client: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def client_for(method: str) -> str:
    """The client run_load() uses for `method`: "wrk" or "python"."""
    return "wrk" if wrk_available() and method != "HEAD" else "python"


def run_load(
    url: str,
    method: str = "GET",
    body: bytes = b"",
    seconds: float = 5.0,
    connections: int = 8,
    force_python: bool = False,
) -> LoadResult:
    """Send requests to `url` from `connections` concurrent keep-alive clients for `seconds`."""
    host = urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"load only goes to the loopback interface, not {host}")
    if client_for(method) == "wrk" and not force_python:
        return _run_wrk(url, method, body, seconds, connections)
    return _run_python(url, method, body, seconds, connections)


# -- wrk -----------------------------------------------------------------------

_WRK_SCRIPT = """
wrk.method = "%(method)s"
wrk.body = [==[%(body)s]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["User-Agent"] = "asu-bench"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH-RESULT %%d %%d %%d %%d %%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status + e.connect + e.read + e.write + e.timeout))
end
"""


def _run_wrk(url: str, method: str, body: bytes, seconds: float, connections: int) -> LoadResult:
    text = body.decode()
    if "]==]" in text:
        raise ValueError("request body cannot be embedded in the wrk script")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_SCRIPT % {"method": method, "body": text})
    try:
        # Two client threads: one per core, as the server shares the same two cores.
        threads = min(2, connections)
        out = subprocess.run(
            [
                "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "5s",
                "-s",
                script.name,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            check=True,
        ).stdout
    finally:
        os.unlink(script.name)
    line = next(x for x in out.splitlines() if x.startswith("BENCH-RESULT"))
    requests, duration_us, p50_us, p99_us, errors = (int(x) for x in line.split()[1:])
    return LoadResult(requests, duration_us / 1e6, p50_us / 1000, p99_us / 1000, errors, "wrk")


# -- the Python client ----------------------------------------------------------


def _run_python(url: str, method: str, body: bytes, seconds: float, connections: int) -> LoadResult:
    # A separate process, so the client's GIL never slows the benchmark's own process.
    spec = json.dumps(
        {
            "url": url,
            "method": method,
            "body": body.decode(),
            "seconds": seconds,
            "connections": connections,
        }
    )
    out = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", spec],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    ).stdout
    return LoadResult(**json.loads(out))


def _request_bytes(url: str, method: str, body: bytes) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    head = (
        f"{method} {path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"User-Agent: asu-bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return parts.hostname or "127.0.0.1", parts.port or 80, head.encode() + body


def _read_response(sock: socket.socket, buffer: bytes, head_only: bool) -> tuple[int, bytes]:
    """Read one response; return its status and what is left over in the buffer."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buffer += chunk
    header, _, rest = buffer.partition(b"\r\n\r\n")
    lines = header.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"transfer-encoding":
            raise ConnectionError("chunked answers are not supported by the bench client")
    if head_only:
        length = 0
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        rest += chunk
    return status, rest[length:]


def _client_main(spec: dict) -> dict:
    host, port, request = _request_bytes(spec["url"], spec["method"], spec["body"].encode())
    head_only = spec["method"] == "HEAD"
    deadline = time.perf_counter() + spec["seconds"]
    latencies: list[list[float]] = []
    errors = [0]
    lock = threading.Lock()

    def loop() -> None:
        mine: list[float] = []
        sock = None
        buffer = b""
        while time.perf_counter() < deadline:
            try:
                if sock is None:
                    sock = socket.create_connection((host, port), timeout=5)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    buffer = b""
                start = time.perf_counter()
                sock.sendall(request)
                status, buffer = _read_response(sock, buffer, head_only)
                mine.append(time.perf_counter() - start)
                if not 200 <= status < 300:
                    with lock:
                        errors[0] += 1
            except (OSError, ValueError, IndexError):
                with lock:
                    errors[0] += 1
                if sock is not None:
                    sock.close()
                sock = None
        if sock is not None:
            sock.close()
        with lock:
            latencies.append(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=loop) for _ in range(spec["connections"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    merged = sorted(x for mine in latencies for x in mine)
    return asdict(
        LoadResult(
            requests=len(merged),
            seconds=elapsed,
            p50_ms=percentile(merged, 50) * 1000,
            p99_ms=percentile(merged, 99) * 1000,
            errors=errors[0],
            client="python",
        )
    )


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, round(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


if __name__ == "__main__":
    print(json.dumps(_client_main(json.loads(sys.argv[1]))))
