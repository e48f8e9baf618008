"""Extra package feeds a request may name: only those under ASU_REPOSITORY_ALLOW_LIST."""

from urllib.parse import unquote, urlsplit


def repository_allowed(url: str, allow_list: list[str]) -> bool:
    """True if `url` lies under one of the allowed URLs.

    Compared as parsed scheme, host, port and path segments, never as string prefixes:
    `https://allowed.example.com.evil.net/`, `https://allowed.example.com@evil.net/` and
    `https://allowed.example.com/feed/../../other` are all refused.
    """
    candidate = _url_parts(url)
    if candidate is None:
        return False
    for allowed in allow_list:
        parts = _url_parts(allowed)
        if parts is None:
            continue
        scheme, host, port, segments = parts
        if candidate[:3] == (scheme, host, port) and candidate[3][: len(segments)] == segments:
            return True
    return False


def _url_parts(url: str) -> tuple[str, str, int, list[str]] | None:
    """Scheme, host, port and unquoted path segments of an http(s) URL, or None if it
    is not one or its path steps outside itself."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        return None
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if any(s in (".", "..") or "/" in s or "\\" in s for s in segments):
        return None
    default_port = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname, port or default_port, segments
