"""The requests the benchmarks send, built from the generated catalogue."""

import json
from pathlib import Path

from bench.catalogue import BUILD_PROFILE, BUILD_TARGET, STABLE

# Real packages a router owner adds on top of the defaults (all in the stand-in's indexes).
EXTRAS = [
    "luci", "luci-ssl", "luci-app-attendedsysupgrade", "luci-i18n-base-de",
    "luci-i18n-firewall-de", "luci-proto-wireguard", "wireguard-tools", "owut", "htop",
    "nano", "curl", "tcpdump", "iperf3", "ethtool", "adblock", "babeld",
]  # fmt: skip


def _index(root: Path, path: str) -> dict[str, str]:
    return json.loads((root / path / "index.json").read_text())["packages"]


def installed_packages(root: Path, count: int = 150) -> list[str]:
    """What a router with `count` packages installed sends: defaults, device packages,
    real extras, then feed packages and kmods up to `count` (as LuCI and owut send the
    whole installed list with diff_packages)."""
    base = root / "releases" / STABLE
    profiles = json.loads((base / "targets" / BUILD_TARGET / "profiles.json").read_text())
    arch = profiles["arch_packages"]
    kernel = profiles["linux_kernel"]
    kmods_dir = f"{kernel['version']}-{kernel['release']}-{kernel['vermagic']}"
    names = list(profiles["default_packages"])
    names += profiles["profiles"][BUILD_PROFILE]["device_packages"]
    names += EXTRAS
    kmods = [n for n in _index(base, f"targets/{BUILD_TARGET}/kmods/{kmods_dir}") if "bench" in n]
    feed = [n for n in _index(base, f"packages/{arch}/packages") if "bench" in n]
    names += kmods[:10]
    names += feed[: max(0, count - len(names))]
    names = list(dict.fromkeys(names))[:count]
    assert len(names) == count, f"only {len(names)} packages available"
    return names


def build_request(packages: list[str], **extra: object) -> dict:
    """A LuCI-style request for the build target."""
    return {
        "client": "luci/25.103.51521~2ac26e5",
        "version": STABLE,
        "target": BUILD_TARGET,
        "profile": BUILD_PROFILE,
        "packages": packages,
        "diff_packages": True,
        **extra,
    }
