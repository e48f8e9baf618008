"""Read settings from the environment, refusing malformed values loudly.

Every reader also accepts ``<NAME>_FILE``: the value is then read from that file, so
secrets can come from files mounted by the orchestrator.
"""

import ipaddress
import os
import re
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _raw(name: str) -> str | None:
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE: cannot read {file_name}: {exc}") from exc
    return os.environ.get(name)


def env_str(name: str, default: str = "") -> str:
    value = _raw(name)
    return default if value is None else value


def env_bool(name: str, default: bool = False) -> bool:
    value = _raw(name)
    if value is None:
        return default
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def env_int(name: str, default: int, minimum: int | None = None) -> int:
    value = _raw(name)
    if value is None or value.strip() == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {number}")
    return number


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    """A list separated by commas or white space."""
    value = _raw(name)
    if value is None:
        return list(default or [])
    return [item for item in value.replace(",", " ").split() if item]


def env_networks(name: str) -> list[str]:
    """IP networks in CIDR notation (``10.1.0.0/16``, ``fd00:1::/64``; a bare address is
    one host), separated by commas or white space, normalised (``10.1.2.3/16`` is
    ``10.1.0.0/16``)."""
    networks = []
    for item in env_list(name):
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ImproperlyConfigured(
                f"{name} must list IP networks such as 10.1.0.0/16, not {item!r}"
            ) from None
    return networks


def env_url(name: str, default: str, schemes: tuple[str, ...]) -> str:
    value = env_str(name, default).strip().rstrip("/")
    scheme = value.split("://", 1)[0] if "://" in value else ""
    if scheme not in schemes:
        raise ImproperlyConfigured(
            f"{name} must be a URL starting with {' or '.join(s + '://' for s in schemes)}, "
            f"not {value!r}"
        )
    return value


def env_optional_url(name: str, schemes: tuple[str, ...]) -> str:
    """A URL as `env_url` reads it, or "" when unset or empty."""
    return env_url(name, "", schemes) if env_str(name).strip() else ""


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    """One of `choices`, compared without regard to case; returned as spelled there."""
    value = env_str(name, default).strip()
    for choice in choices:
        if value.upper() == choice.upper():
            return choice
    raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, not {value!r}")


def env_header(name: str) -> tuple[str, str] | None:
    """An HTTP header name (``X-Forwarded-Proto``) whose value ``https`` marks a request
    as secure, as Django's SECURE_PROXY_SSL_HEADER wants it; None when unset."""
    value = env_str(name).strip()
    if not value:
        return None
    if not re.fullmatch(r"[A-Za-z0-9-]+", value):
        raise ImproperlyConfigured(
            f"{name} must be an HTTP header name such as X-Forwarded-Proto, not {value!r}"
        )
    return "HTTP_" + value.upper().replace("-", "_"), "https"
