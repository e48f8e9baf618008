"""Extra package feeds a request may name: only those under ASU_REPOSITORY_ALLOW_LIST."""

from urllib.parse import unquote, urlsplit, urlunsplit

from asuproject.input import has_blank_or_control

MAX_URL_LENGTH = 500


class UnusableRepository(ValueError):
    """A repository URL that is not a plain http(s) URL; the message says why."""


def repository_url(url: str) -> str:
    """`url` parsed and written out again: the only form of a requested feed URL that is
    stored and put into a working copy. Whitespace and control characters are refused
    anywhere, since urlsplit quietly drops some (a newline) that the feed list would keep.
    Whether the feed is allowed is `repository_allowed`'s question."""
    if not isinstance(url, str) or not url:
        raise UnusableRepository("the URL is empty.")
    if has_blank_or_control(url):
        raise UnusableRepository(
            f"{url!r} holds whitespace or a control character; a feed URL is one line "
            "without blanks."
        )
    if len(url) > MAX_URL_LENGTH:
        raise UnusableRepository(f"the URL is longer than {MAX_URL_LENGTH} characters.")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise UnusableRepository(f"{url!r} is not a URL: {exc}.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnusableRepository(f"{url!r} is not an http(s) URL.")
    return urlunsplit(parts)


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
