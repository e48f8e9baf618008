"""Package versions in OpenWrt's own order.

OpenWrt has had two package managers, and each orders versions its own way:

- apk (25.12 and later, SNAPSHOT): `digits{.digits}{letter}{_suffix{N}}{~hash}{-rN}`,
  e.g. `3.0.0_pre20250606-r1`, `2024.03.29~eb9bcb64-r1`. Suffixes `_alpha` < `_beta` <
  `_pre` < `_rc` < none < `_cvs` < `_svn` < `_git` < `_hg` < `_p`; a number with a
  leading zero compares as text; the `~hash` compares as text; `-rN` last.
- opkg (up to 24.10): Debian's order, `[epoch:]upstream[-revision]`, e.g. `1:2.0-1`,
  `2023-05-23-75a3b870-1`: the epoch first, then runs of non-digits (letters before
  other characters, `~` before everything, even the end) and of digits (as numbers).

`compare_versions` uses apk's rules when both strings are apk versions, and opkg's
otherwise (an epoch, an old `-1` revision, `git-...` versions).
"""

import functools
import re
from collections.abc import Callable
from typing import Any, Literal

Scheme = Literal["apk", "opkg"]

# apk's grammar, whole: it decides which order applies.
APK_VERSION_RE = re.compile(
    r"\d+(?:\.\d+)*[a-z]?(?:_(?:alpha|beta|pre|rc|cvs|svn|git|hg|p)\d*)*(?:~[0-9a-fA-F]+)?(?:-r\d+)?"
)
_APK_TOKEN_RE = re.compile(
    r"(?P<digit>\.?\d+)|(?P<letter>[a-z])|_(?P<suffix>[a-z]+)(?P<suffix_no>\d*)"
    r"|~(?P<hash>[0-9a-fA-F]+)|-r(?P<revision>\d+)"
)
# apk's token kinds, in the order its grammar allows them; a longer version whose extra
# token kind is later than the other's next one is the newer one.
_DIGIT, _LETTER, _SUFFIX, _SUFFIX_NO, _HASH, _REVISION, _END = range(7)
_SUFFIXES = {
    "alpha": -4,
    "beta": -3,
    "pre": -2,
    "rc": -1,
    "cvs": 1,
    "svn": 2,
    "git": 3,
    "hg": 4,
    "p": 5,
}


def compare_versions(a: str, b: str, scheme: Scheme | None = None) -> int:
    """-1, 0 or 1 as version `a` is older than, the same as or newer than `b`.

    `scheme` forces one package manager's order; by default apk's when both are apk
    versions, else opkg's.
    """
    if scheme is None:
        scheme = "apk" if is_apk_version(a) and is_apk_version(b) else "opkg"
    result = _apk_compare(a, b) if scheme == "apk" else _opkg_compare(a, b)
    return (result > 0) - (result < 0)


def is_apk_version(version: str) -> bool:
    return APK_VERSION_RE.fullmatch(version) is not None


def version_key(scheme: Scheme | None = None) -> Callable[[str], Any]:
    """A sort key for `sorted(versions, key=version_key())`, oldest first."""
    return functools.cmp_to_key(lambda a, b: compare_versions(a, b, scheme))


# apk


def _apk_tokens(version: str) -> list[tuple[int, object, str]]:
    """(kind, value, text) for each token of an apk version, then an end token."""
    tokens: list[tuple[int, object, str]] = []
    for match in _APK_TOKEN_RE.finditer(version):
        if match["digit"] is not None:
            text = match["digit"].lstrip(".")
            tokens.append((_DIGIT, int(text), text))
        elif match["letter"] is not None:
            tokens.append((_LETTER, ord(match["letter"]), match["letter"]))
        elif match["suffix"] is not None:
            tokens.append((_SUFFIX, _SUFFIXES.get(match["suffix"], 0), match["suffix"]))
            if match["suffix_no"]:
                tokens.append((_SUFFIX_NO, int(match["suffix_no"]), match["suffix_no"]))
        elif match["hash"] is not None:
            tokens.append((_HASH, None, match["hash"]))
        else:
            tokens.append((_REVISION, int(match["revision"]), match["revision"]))
    tokens.append((_END, 0, ""))
    return tokens


def _apk_token_compare(a: tuple[int, object, str], b: tuple[int, object, str], first: bool) -> int:
    kind, value_a, text_a = a
    _, value_b, text_b = b
    # A later number with a leading zero compares as text (1.01 < 1.1), and so does a hash.
    if kind == _HASH or (kind == _DIGIT and not first and "0" in (text_a[:1], text_b[:1])):
        return (text_a > text_b) - (text_a < text_b)
    return (value_a > value_b) - (value_a < value_b)  # type: ignore[operator]


def _apk_compare(a: str, b: str) -> int:
    tokens_a, tokens_b = _apk_tokens(a), _apk_tokens(b)
    index = 0
    while tokens_a[index][0] == tokens_b[index][0] and tokens_a[index][0] != _END:
        result = _apk_token_compare(tokens_a[index], tokens_b[index], first=index == 0)
        if result:
            return result
        index += 1
    kind_a, value_a, _ = tokens_a[index]
    kind_b, value_b, _ = tokens_b[index]
    if kind_a == kind_b:
        return 0
    # Where one goes on and the other ends: a pre-release suffix makes it older,
    # anything else newer; between two different kinds the later kind is older.
    if kind_a == _SUFFIX and value_a < 0:  # type: ignore[operator]
        return -1
    if kind_b == _SUFFIX and value_b < 0:  # type: ignore[operator]
        return 1
    return -1 if kind_a > kind_b else 1


# opkg


def _opkg_parts(version: str) -> tuple[int, str, str]:
    """(epoch, upstream version, revision) as opkg splits them."""
    epoch, colon, rest = version.partition(":")
    if not colon or not epoch.isdigit():
        epoch, rest = "0", version
    upstream, dash, revision = rest.rpartition("-")
    if not dash:
        upstream, revision = rest, ""
    return int(epoch), upstream, revision


def _opkg_order(char: str) -> int:
    """The weight of one non-digit character; the end of the string weighs 0."""
    if not char or char.isdigit():
        return 0
    if char.isalpha():
        return ord(char)
    if char == "~":
        return -1
    return ord(char) + 256


def _opkg_part_compare(a: str, b: str) -> int:
    """Debian's verrevcmp: alternating runs of non-digits and of digits."""
    i = j = 0
    while i < len(a) or j < len(b):
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            order_a = _opkg_order(a[i] if i < len(a) else "")
            order_b = _opkg_order(b[j] if j < len(b) else "")
            if order_a != order_b:
                return order_a - order_b
            i, j = i + 1, j + 1
        start_a, start_b = i, j
        while i < len(a) and a[i].isdigit():
            i += 1
        while j < len(b) and b[j].isdigit():
            j += 1
        number_a, number_b = int(a[start_a:i] or 0), int(b[start_b:j] or 0)
        if number_a != number_b:
            return number_a - number_b
    return 0


def _opkg_compare(a: str, b: str) -> int:
    epoch_a, upstream_a, revision_a = _opkg_parts(a)
    epoch_b, upstream_b, revision_b = _opkg_parts(b)
    if epoch_a != epoch_b:
        return epoch_a - epoch_b
    return _opkg_part_compare(upstream_a, upstream_b) or _opkg_part_compare(revision_a, revision_b)
