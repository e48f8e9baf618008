"""Configuring a build's working copy of an ImageBuilder before make runs: its package
feeds and their keys, and the first-boot script."""

import hashlib
import re
from pathlib import Path

from django.conf import settings

from asuproject.input import has_blank_or_control
from asuproject.lib import usign
from builds.errors import BuildError
from builds.imagebuilder import replace_file

DEFAULTS_PATH = "etc/uci-defaults/99-asu-defaults"
OFFICIAL_UPSTREAM = "https://downloads.openwrt.org"


def is_apk(workdir: Path) -> bool:
    """apk ImageBuilders have a `repositories` file, opkg ones `repositories.conf`."""
    return (workdir / "repositories").is_file()


def point_feeds_at_upstream(workdir: Path) -> None:
    """Fetch packages from ASU_UPSTREAM_URL when it is a mirror of downloads.openwrt.org."""
    mirror = settings.ASU_UPSTREAM_URL.rstrip("/")
    if mirror == OFFICIAL_UPSTREAM:
        return
    for name in ("repositories.conf", "repositories"):
        path = workdir / name
        if path.is_file():
            text = path.read_text()
            if OFFICIAL_UPSTREAM in text:
                replace_file(path, text.replace(OFFICIAL_UPSTREAM, mirror))


def add_repositories(
    workdir: Path, repositories: dict[str, str], mode: str, keys: list[str]
) -> None:
    """Add extra package feeds ("append") or use only them ("replace"), and their keys.

    opkg: `src/gz <name> <url>` lines in repositories.conf and usign keys in keys/;
    apk: one index URL a line in `repositories` and PEM keys in keys/.
    """
    for name, url in repositories.items():
        # The request was checked; this keeps a hostile string from ever adding a line.
        if not name or not url or has_blank_or_control(name) or has_blank_or_control(url):
            raise BuildError(
                f"Repository {name!r} ({url!r}) holds whitespace or a control character"
            )
    if is_apk(workdir):
        path = workdir / "repositories"
        kept = [
            line
            for line in path.read_text().splitlines()
            # "replace" keeps comments and the local packages folder only.
            if mode != "replace" or line.startswith("#") or "://" not in line
        ]
        added = [
            url if url.endswith(".adb") else f"{url}/packages.adb" for url in repositories.values()
        ]
        replace_file(path, "\n".join(kept + added) + "\n")
    else:
        path = workdir / "repositories.conf"
        lines = path.read_text().splitlines() if path.is_file() else []
        feeds = [line for line in lines if line.startswith("src/gz ") and mode != "replace"]
        others = [line for line in lines if not line.startswith("src/gz ")]
        added = [f"src/gz {name} {url}" for name, url in repositories.items()]
        replace_file(path, "\n".join(feeds + added + others) + "\n")

    key_folder = workdir / "keys"
    key_folder.mkdir(exist_ok=True)
    for number, key in enumerate(keys, start=1):
        if "-----BEGIN" in key:
            name = hashlib.sha256(key.encode()).hexdigest()[:16] + ".pem"
            replace_file(key_folder / name, key.strip() + "\n")
            continue
        try:
            parsed = usign.read_public_key(key)
        except usign.SignatureError:
            raise BuildError(
                f"Repository key {number} is neither a usign public key nor a PEM key"
            ) from None
        base64_line = [line for line in key.splitlines() if line.strip()][-1].strip()
        replace_file(
            key_folder / parsed.fingerprint,
            f"untrusted comment: {parsed.fingerprint}\n{base64_line}\n",
        )


def needs_network(workdir: Path) -> bool:
    """True if the ImageBuilder's feeds are remote, so make must reach the network."""
    for name in ("repositories.conf", "repositories"):
        path = workdir / name
        if path.is_file():
            for line in path.read_text().splitlines():
                if not line.lstrip().startswith("#") and re.search(r"\bhttps?://", line):
                    return True
    return False


def write_defaults(workdir: Path, script: str) -> Path:
    """Put the first-boot script where FILES= picks it up; return the FILES folder."""
    files = workdir / "asu-files"
    path = files / DEFAULTS_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    return files
