"""Single requests and build waits against the server under test."""

import base64
import http.client
import json
import time
from urllib.parse import urlsplit

# Headers gunicorn writes itself, or that depend on the body's length.
SERVER_HEADERS = {"date", "server", "connection", "keep-alive", "content-length",
                  "transfer-encoding"}  # fmt: skip


class Client:
    """One keep-alive connection to the server (loopback only)."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the bench talks to loopback only, not {parts.hostname}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.connection: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict, dict]:
        """Return (status, headers, JSON body or {})."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        for attempt in (1, 2):
            if self.connection is None:
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                self.connection.request(method, path, body=data, headers=headers)
                response = self.connection.getresponse()
                raw = response.read()
                break
            except (http.client.HTTPException, OSError):
                self.connection.close()
                self.connection = None
                if attempt == 2:
                    raise
        payload = json.loads(raw) if raw and raw[:1] in (b"{", b"[") else {}
        return response.status, dict(response.getheaders()), payload

    def capture(self, method: str, path: str, body: bytes = b"") -> dict:
        """The whole answer to one request, as the ceiling app (bench/ceiling) replays it:
        status, the headers the application set, and the body in base64."""
        headers = {"Content-Type": "application/json", "User-Agent": "asu-bench"}
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            connection.request(method, path, body=body or None, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        kept = [
            [name, value]  # as JSON keeps it
            for name, value in response.getheaders()
            if name.lower() not in SERVER_HEADERS
        ]
        return {"status": response.status, "headers": kept, "body": base64.b64encode(raw).decode()}

    def post_build(self, request: dict) -> dict:
        status, _, body = self.request("POST", "/api/v1/build", request)
        if status not in (200, 202):
            raise RuntimeError(f"POST /api/v1/build answered {status}: {body.get('detail')}")
        return body

    def wait_done(self, request_hash: str, timeout: float = 300, interval: float = 0.02) -> dict:
        """Poll until the build is done (200); raise if it fails or takes too long."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, _, body = self.request("GET", f"/api/v1/build/{request_hash}")
            if status == 200:
                return body
            if status != 202:
                raise RuntimeError(
                    f"build {request_hash} answered {status}: {body.get('detail')}\n"
                    f"{body.get('stderr', '')[-2000:]}"
                )
            time.sleep(interval)
        raise RuntimeError(f"build {request_hash} not done within {timeout} s")

    def build(self, request: dict, timeout: float = 300) -> tuple[float, dict]:
        """POST a request and wait for its image: (seconds from POST to 200, answer)."""
        start = time.perf_counter()
        body = self.post_build(request)
        if body["status"] != 200:
            body = self.wait_done(body["request_hash"], timeout)
        return time.perf_counter() - start, body

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None
