"""Reading the OpenWrt downloads server: http(s):// or file:// URLs.

Every failure becomes an `UpstreamError` that names the URL and the reason, so the
sync can report it and keep the last good catalogue. Conditional GETs (ETag and
Last-Modified) let an unchanged file cost one small request and no download.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
from django.conf import settings

TIMEOUT = (10, 60)  # seconds to connect, seconds between bytes
USER_AGENT = "asu-django (Attended Sysupgrade server)"

_session = requests.Session()
_session.headers["User-Agent"] = USER_AGENT


class UpstreamError(Exception):
    """An upstream file could not be read or understood."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.url}: {self.reason}"


class NotFound(UpstreamError):
    """The file does not exist upstream (HTTP 404 or a missing file)."""

    def __init__(self, url: str) -> None:
        super().__init__(url, "not found (HTTP 404)")


@dataclass
class Fetched:
    url: str
    content: bytes = b""
    digest: str = ""  # sha256 of content
    etag: str = ""
    last_modified: str = ""
    not_modified: bool = False  # the server answered 304 to our validators

    def json(self) -> Any:
        """The content as JSON; malformed JSON is an UpstreamError naming the URL."""
        try:
            return json.loads(self.content)
        except (ValueError, UnicodeDecodeError) as exc:
            raise UpstreamError(self.url, f"malformed JSON: {exc}") from None

    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


def upstream_url(path: str) -> str:
    """The URL of `path` ("releases/24.10.1/.targets.json") on the configured server."""
    return f"{settings.ASU_UPSTREAM_URL.rstrip('/')}/{path.lstrip('/')}"


def fetch(url: str, etag: str = "", last_modified: str = "") -> Fetched:
    """Read `url`. With validators from an earlier read, an unchanged file comes back
    with `not_modified` set and no content."""
    if url.startswith("file://"):
        return _fetch_file(url)
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        response = _session.get(url, headers=headers, timeout=TIMEOUT)
        if response.status_code == 304:
            return Fetched(url, etag=etag, last_modified=last_modified, not_modified=True)
        if response.status_code == 404:
            raise NotFound(url)
        if response.status_code != 200:
            raise UpstreamError(url, f"HTTP {response.status_code} {response.reason}")
        # Reading .content raises on a body shorter than its Content-Length.
        content = response.content
    except requests.ConnectionError as exc:
        raise UpstreamError(url, f"connection failed: {_root_cause(exc)}") from None
    except requests.Timeout:
        raise UpstreamError(url, f"no answer within {TIMEOUT[1]} s") from None
    except requests.RequestException as exc:
        raise UpstreamError(url, f"download failed: {_root_cause(exc)}") from None
    return Fetched(
        url,
        content=content,
        digest=hashlib.sha256(content).hexdigest(),
        etag=response.headers.get("ETag", ""),
        last_modified=response.headers.get("Last-Modified", ""),
    )


def _fetch_file(url: str) -> Fetched:
    # A local mirror is cheap to read in full, so it relies on the digest alone.
    path = Path(unquote(urlsplit(url).path))
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(url) from None
    except OSError as exc:
        raise UpstreamError(url, f"cannot read: {exc.strerror or exc}") from None
    return Fetched(url, content=content, digest=hashlib.sha256(content).hexdigest())


def _root_cause(exc: BaseException) -> str:
    """The innermost reason, "[Errno 111] Connection refused" rather than urllib3's pool text."""
    while True:
        inner = exc.__cause__ or exc.__context__ or (exc.args[0] if exc.args else None)
        if not isinstance(inner, BaseException) or inner is exc:
            break
        exc = inner
    text = str(exc)
    # urllib3 wraps the OS error as "<HTTPConnection object at 0x...>: Failed to establish ..."
    if ">: " in text:
        text = text.split(">: ", 1)[1]
    return text
