"""A small catalogue in the ORM, and helpers to move builds along, for the build API tests."""

import hashlib
import importlib
from datetime import timedelta
from itertools import count

from django.core.cache import cache
from django.utils import timezone

from builds.memory import memory
from builds.models import Build
from packages.models import Package, PackageIndex
from targets.models import Branch, Profile, ProfileName, Target, Version

ATH79_DEFAULTS = [
    "base-files",
    "busybox",
    "dnsmasq",
    "dropbear",
    "firewall4",
    "kmod-ath9k",
    "libc",
    "opkg",
    "ppp",
    "ppp-mod-pppoe",
    "uci",
]
ARCHER_DEVICE_PACKAGES = ["kmod-ath10k-ct", "ath10k-firmware-qca988x-ct", "-ppp-mod-pppoe"]
_serial = count()
FEED_PACKAGES = [
    "luci",
    "luci-ssl",
    "auc",
    "owut",
    "tcpdump",
    "htop",
    "luci-app-attendedsysupgrade",
]


def fresh_start(settings=None, tmp_path=None) -> None:
    """Forget what this process remembers between requests: the upstream-refresh throttle
    and the request shortcuts. With `settings` and `tmp_path`, upstream is an empty
    folder: a name missing from the catalogue is looked up there and not found, quickly
    and without the network."""
    cache.clear()
    memory.clear()
    if settings is not None and tmp_path is not None:
        empty = tmp_path / "empty-upstream"
        empty.mkdir(exist_ok=True)
        settings.ASU_UPSTREAM_URL = empty.as_uri()


def seed_branches() -> None:
    """The branches the migration seeds; a transactional test starts without them."""
    from django.apps import apps

    importlib.import_module("targets.migrations.0002_seed_branches").seed(apps, None)


def add_profile(target: Target, name: str, supported_devices: list[str], **fields) -> Profile:
    """A profile and the names a request may use for it, as targets.sync writes them."""
    profile = Profile.objects.create(
        target=target, name=name, supported_devices=supported_devices, **fields
    )
    names = {name.replace(",", "_")} | {d.replace(",", "_") for d in supported_devices}
    ProfileName.objects.bulk_create(
        ProfileName(target=target, profile=profile, name=n) for n in sorted(names)
    )
    return profile


def add_packages(version: Version, arch: str, names: list[str], target: Target | None = None):
    kind = PackageIndex.Kind.TARGET if target else PackageIndex.Kind.FEED
    index = PackageIndex.objects.create(
        version=version,
        kind=kind,
        arch_packages=arch,
        target=target,
        name=f"{kind}-{arch}-{target.name if target else 'base'}",
        url=f"https://example.org/{version.name}/{kind}/{arch}/{next(_serial)}",
    )
    Package.objects.bulk_create(Package(index=index, name=n, version="1.0-r1") for n in names)
    return index


def make_catalogue() -> dict:
    """24.10.1 with ath79/generic (two devices) and x86/64 (only `generic`), their package
    indexes, and 22.03.7 in a branch the server has switched off."""
    seed_branches()
    branch = Branch.objects.get(name="24.10")
    version = Version.objects.create(branch=branch, name="24.10.1")
    ath79 = Target.objects.create(
        version=version,
        name="ath79/generic",
        arch_packages="mips_24kc",
        version_code="r28427-6df0e3d02a",
        version_number="24.10.1",
        default_packages=ATH79_DEFAULTS,
    )
    archer = add_profile(
        ath79,
        "tplink_archer-c7-v5",
        ["tplink,archer-c7-v5"],
        device_packages=ARCHER_DEVICE_PACKAGES,
        titles=[{"vendor": "TP-Link", "model": "Archer C7", "variant": "v5"}],
    )
    carambola = add_profile(
        ath79, "8dev_carambola2", ["8dev,carambola2", "carambola2"], device_packages=[]
    )
    x86 = Target.objects.create(
        version=version,
        name="x86/64",
        arch_packages="x86_64",
        version_code="r28427-6df0e3d02a",
        default_packages=["base-files", "busybox", "libc", "kmod-e1000"],
    )
    generic = add_profile(x86, "generic", [])
    add_packages(version, "mips_24kc", ATH79_DEFAULTS + FEED_PACKAGES)
    add_packages(version, "mips_24kc", ["kmod-ath10k-ct", "ath10k-firmware-qca988x-ct"], ath79)
    add_packages(version, "x86_64", ["base-files", "busybox", "libc", "luci", "tcpdump"])
    add_packages(version, "x86_64", ["kmod-e1000"], x86)

    old = Version.objects.create(branch=Branch.objects.get(name="22.03"), name="22.03.7")
    old_target = Target.objects.create(version=old, name="ath79/generic", arch_packages="mips_24kc")
    add_profile(old_target, "tplink_archer-c7-v5", ["tplink,archer-c7-v5"])
    return {
        "version": version,
        "ath79": ath79,
        "archer": archer,
        "carambola": carambola,
        "x86": x86,
        "generic": generic,
    }


def start(build: Build, step: str = "building_image") -> Build:
    """What the worker does when it takes a build."""
    build.status = Build.Status.STARTED
    build.imagebuilder_status = step
    build.started_at = timezone.now()
    build.save()
    return build


def finish(build: Build, images: list[dict] | None = None) -> Build:
    """What the worker records for a successful build."""
    image = {
        "name": f"openwrt-24.10.1-ath79-generic-{build.profile}-squashfs-sysupgrade.bin",
        "type": "sysupgrade",
        "filesystem": "squashfs",
        "sha256": "a" * 64,
        "sha256_unsigned": "b" * 64,
    }
    images = images if images is not None else [image]
    build.status = Build.Status.DONE
    build.imagebuilder_status = "done"
    build.finished_at = timezone.now()
    build.expires_at = build.finished_at + timedelta(days=1)
    build.manifest = {"base-files": "1655-r1", "luci": "25.100-r1"}
    build.images = images
    build.build_cmd = ["make", "image", f"PROFILE={build.profile}"]
    build.stdout = "building"
    build.stderr = ""
    build.result = {
        "arch_packages": "mips_24kc",
        "default_packages": ATH79_DEFAULTS,
        "device_packages": ARCHER_DEVICE_PACKAGES,
        "image_prefix": f"openwrt-24.10.1-ath79-generic-{build.profile}",
        "images": images,
        "metadata_version": 1,
        "source_date_epoch": 1737902564,
        "supported_devices": ["tplink,archer-c7-v5"],
        "target": "ath79/generic",
        "titles": [{"vendor": "TP-Link", "model": "Archer C7", "variant": "v5"}],
        "version_code": "r28427-6df0e3d02a",
        "version_number": "24.10.1",
    }
    build.save()
    return build


def fail(build: Build, detail: str, minutes_ago: int = 0) -> Build:
    """What the worker records for a failed build, `minutes_ago`."""
    build.status = Build.Status.FAILED
    build.imagebuilder_status = "failed"
    build.finished_at = timezone.now() - timedelta(minutes=minutes_ago)
    build.detail = detail
    build.stdout = "make output"
    build.stderr = " * opkg_install_cmd: Cannot install package nope."
    build.save()
    return build


def make_build(**fields) -> Build:
    """A build row of 24.10.1 ath79/generic, done unless told, each with its own hash."""
    n = next(_serial)
    values = {
        "request_hash": hashlib.sha256(f"build-{n}".encode()).hexdigest(),
        "version": "24.10.1",
        "target": "ath79/generic",
        "profile": "tplink_archer-c7-v5",
        "status": Build.Status.DONE,
        "enqueued_at": timezone.now() - timedelta(minutes=n),
    }
    values.update(fields)
    return Build.objects.create(**values)


def missing_package_request(upstream: str) -> dict:
    """A build request whose package no feed has. With an extra feed the server's
    pre-check is skipped, so the ImageBuilder itself finds it missing: a failed build.
    The stock feeds stay (append), so only the unknown package is missing."""
    return {
        "version": "24.10.1",
        "target": "ath79/generic",
        "profile": "8dev_carambola2",
        "packages": ["surely-not-a-package"],
        "repositories": {"extra": f"{upstream}/nothing-here/feed"},
        "repositories_mode": "append",
    }
