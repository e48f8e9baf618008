"""Untrusted input taken apart safely: JSON bodies with depth and number limits, names
matched whole, and the control characters no name, URL or database column should hold.

Shared by the build API and the package-changes API, so that both refuse the same things
with the same words.
"""

import json
import re
from typing import Any

from rest_framework import serializers
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# Far deeper than any request of the API (a build request is two levels deep), far
# shallower than Python's recursion limit, which the parser and everything after it share.
MAX_JSON_DEPTH = 32
# No field of the API needs a longer number; Python refuses to read more than 4300 digits.
MAX_NUMBER_DIGITS = 64
# C0 controls, DEL and C1 controls (Unicode category Cc).
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
BLANK_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")


class MalformedJSON(ValueError):
    """A body that is not JSON the API can take; the message says why."""


def parse_json(body: bytes | str) -> Any:
    """The body as JSON, refused (MalformedJSON) when it is not JSON, nests deeper than
    MAX_JSON_DEPTH, holds a number longer than MAX_NUMBER_DIGITS, NaN or Infinity, or a
    string with a NUL or a lone surrogate (which no database column can store)."""
    try:
        data = json.loads(
            body,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_refuse_constant,
        )
    except RecursionError:
        raise MalformedJSON(f"the body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except MalformedJSON:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedJSON(f"the body is not valid JSON: {exc}") from None
    _check_values(data)
    return data


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise MalformedJSON(
            f"a number of {len(text)} digits; at most {MAX_NUMBER_DIGITS} are accepted"
        )
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_DIGITS:
        raise MalformedJSON(
            f"a number of {len(text)} characters; at most {MAX_NUMBER_DIGITS} are accepted"
        )
    return float(text)


def _refuse_constant(name: str) -> None:
    raise MalformedJSON(f"{name} is not a JSON value")


def _check_values(data: Any) -> None:
    """Walk the parsed body without recursion: its depth, and every string and key."""
    pending = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            children = [*value.keys(), *value.values()]
        elif isinstance(value, list):
            children = value
        else:
            if isinstance(value, str):
                _check_string(value)
            continue
        if depth > MAX_JSON_DEPTH:
            raise MalformedJSON(f"the body nests deeper than {MAX_JSON_DEPTH} levels")
        pending.extend((child, depth + 1) for child in children)


def _check_string(text: str) -> None:
    if "\x00" in text:
        raise MalformedJSON(f"a string holds a NUL character: {text[:40]!r}")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise MalformedJSON(f"a string holds a lone surrogate: {text[:40]!r}") from None


class LimitedJSONParser(JSONParser):
    """DRF's JSON parser with `parse_json`'s limits."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return parse_json(stream.read() if stream is not None else b"")
        except MalformedJSON as exc:
            raise ParseError(str(exc)) from None


def has_blank_or_control(text: str) -> bool:
    """True if `text` holds whitespace or a control character anywhere."""
    return BLANK_OR_CONTROL.search(text) is not None


class FullMatch:
    """A DRF validator: the whole value must match `pattern` (re.fullmatch; `^...$` with
    re.search would let a trailing newline through)."""

    def __init__(self, pattern: re.Pattern, message: str) -> None:
        self.pattern = pattern
        self.message = message

    def __call__(self, value: str) -> None:
        if not self.pattern.fullmatch(value):
            raise serializers.ValidationError(self.message)


def pattern_field(pattern: re.Pattern, message: str, **kwargs: Any) -> serializers.CharField:
    """A string field whose whole value matches `pattern` (surrounding blanks trimmed)."""
    return serializers.CharField(validators=[FullMatch(pattern, message)], **kwargs)


# The names of the API, ASCII only: they end up in file names, queries and make arguments.
NAME_RE = re.compile(r"[\w.,-]*", re.ASCII)
# A package may carry a leading "+" (stripped) or "-" (remove it from the image).
PACKAGE_RE = re.compile(r"[+-]?\w[\w.,-]*", re.ASCII)
TARGET_RE = re.compile(r"\w+/\w+", re.ASCII)
# Generous bounds that no real router reaches, so a request cannot grow without limit.
MAX_PACKAGES = 2000
NAME_MESSAGE = "may only contain letters, digits, '_', '.', ',' and '-'."
TARGET_MESSAGE = "must look like 'ath79/generic'."


def name_field(max_length: int, **kwargs: Any) -> serializers.CharField:
    """A version, profile or other plain name of a request."""
    return pattern_field(NAME_RE, NAME_MESSAGE, max_length=max_length, **kwargs)


def target_field(**kwargs: Any) -> serializers.CharField:
    return pattern_field(TARGET_RE, TARGET_MESSAGE, max_length=64, **kwargs)
