"""A full-size downloads mirror: the test mirror with one release grown to real size.

tests/fixtures/mirror.py writes the test mirror (four releases of three targets) in the
real formats, with a stand-in ImageBuilder per target. This module reuses its writers and
rewrites one release (STABLE, 25.12.0, apk era: index.json v2 feeds, kmods split) with
40 targets, 1 500 profiles and 8 000 packages in the feeds of every package
architecture, each target with its own stand-in ImageBuilder. The three real targets
keep their real profiles and packages, so builds of them work as in the tests; filler
packages have no dependencies beyond libc, so a request can name them too.

The result is kept under var/bench/ and regenerated only when its inputs change.
"""

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

from tests.fixtures import mirror

STABLE = "25.12.0"
BUILD_TARGET = "x86/64"  # the real target the build benchmarks use (profile "generic")
BUILD_PROFILE = "generic"

# 37 more targets with their real package architectures: 40 targets, 18 architectures.
MORE_TARGETS = {
    "ath79/nand": "mips_24kc",
    "ath79/tiny": "mips_24kc",
    "ramips/mt7621": "mipsel_24kc",
    "ramips/mt7620": "mipsel_24kc",
    "ramips/mt76x8": "mipsel_24kc",
    "ramips/rt305x": "mipsel_24kc",
    "mediatek/mt7622": "aarch64_cortex-a53",
    "mediatek/mt7623": "arm_cortex-a7_neon-vfpv4",
    "ipq40xx/generic": "arm_cortex-a7_neon-vfpv4",
    "ipq40xx/mikrotik": "arm_cortex-a7_neon-vfpv4",
    "ipq806x/generic": "arm_cortex-a15_neon-vfpv4",
    "qualcommax/ipq807x": "aarch64_cortex-a53",
    "qualcommax/ipq60xx": "aarch64_cortex-a53",
    "bcm27xx/bcm2708": "arm_arm1176jzf-s_vfp",
    "bcm27xx/bcm2709": "arm_cortex-a7_neon-vfpv4",
    "bcm27xx/bcm2710": "aarch64_cortex-a53",
    "bcm27xx/bcm2711": "aarch64_cortex-a72",
    "bcm27xx/bcm2712": "aarch64_cortex-a76",
    "mvebu/cortexa9": "arm_cortex-a9_vfpv3-d16",
    "mvebu/cortexa53": "aarch64_cortex-a53",
    "mvebu/cortexa72": "aarch64_cortex-a72",
    "rockchip/armv8": "aarch64_generic",
    "sunxi/cortexa7": "arm_cortex-a7_neon-vfpv4",
    "sunxi/cortexa8": "arm_cortex-a8_vfpv3",
    "sunxi/cortexa53": "aarch64_cortex-a53",
    "lantiq/xrx200": "mips_24kc",
    "lantiq/xway": "mips_24kc",
    "kirkwood/generic": "arm_xscale",
    "realtek/rtl838x": "mips_4kec",
    "realtek/rtl930x": "mips_24kc",
    "bcm53xx/generic": "arm_cortex-a9",
    "x86/generic": "i386_pentium4",
    "x86/geode": "i386_pentium-mmx",
    "armsr/armv8": "aarch64_generic",
    "armsr/armv7": "arm_cortex-a15_neon-vfpv4",
    "layerscape/armv8_64b": "aarch64_generic",
    "octeon/generic": "mips64_octeonplus",
}
# Filler package names look like real ones: family prefix, then a number.
FAMILIES = ("lib", "python3-", "perl-", "luci-app-", "luci-i18n-", "golang-", "node-",
            "collectd-mod-", "prometheus-node-exporter-", "php8-mod-", "ruby-", "lua-")  # fmt: skip
KMODS_PER_TARGET = 400  # real 25.12 targets have 300 to 900 kmods


@dataclasses.dataclass(frozen=True)
class Size:
    targets: int = 40
    profiles: int = 1500
    packages_per_arch: int = 8000


def _donor(arch: str) -> str:
    """The real target whose kernel, core packages and defaults a synthetic one borrows."""
    if arch.startswith(("x86", "i386")):
        return "x86/64"
    if arch.startswith(("aarch64", "arm")):
        return "mediatek/filogic"
    return "ath79/generic"


def _profiles_per_target(size: Size, names: list[str], real: int) -> dict[str, int]:
    """Share the profiles unevenly, as upstream does (ath79 and ramips have hundreds)."""
    synthetic = [n for n in names if n in MORE_TARGETS]
    weights = {n: (6 if n.startswith(("ath79", "ramips/mt7621")) else 1) for n in synthetic}
    left = size.profiles - real
    total = sum(weights.values())
    counts = {n: max(1, left * w // total) for n, w in weights.items()}
    counts[synthetic[0]] += left - sum(counts.values())
    return counts


def _synthetic_profiles(target: str, count: int) -> tuple:
    board = target.replace("/", "-")
    profiles = []
    for n in range(count):
        vendor = ("tplink", "netgear", "linksys", "asus", "dlink", "zyxel", "xiaomi")[n % 7]
        model = f"{board}-{n:03d}"
        images = (mirror.FACTORY, mirror.SYSUPGRADE, mirror.INITRAMFS) if n % 3 else (
            mirror.SYSUPGRADE, mirror.INITRAMFS)  # fmt: skip
        profiles.append(
            mirror.Profile(
                f"{vendor}_{model}",
                ({"model": model.upper(), "vendor": vendor.title()},),
                (f"{vendor},{model}", model),
                ("kmod-usb2", "kmod-ath10k-ct") if n % 4 == 0 else ("kmod-usb2",),
                images,
                16_000 * 1024,
            )
        )
    return tuple(profiles)


def _filler(release: mirror.Release, arch: str, count: int, feed: str, start: int) -> list:
    built = []
    for n in range(start, start + count):
        family = FAMILIES[n % len(FAMILIES)]
        name = f"{family}bench{n:05d}"
        pkg = mirror.Pkg(name, feed, "", "libc", 1 + n % 40, description=f"filler {n}")
        built.append(mirror.build_package(release, pkg, arch, f"{1 + n % 9}.{n % 13}.{n % 7}-r1"))
    return built


def _arch_feeds(release: mirror.Release, arch: str, size: Size) -> dict[str, list]:
    real = mirror.arch_packages(release, arch)
    feeds = {feed: [p for p in real if p.feed == feed] for feed in mirror.FEEDS}
    missing = max(0, size.packages_per_arch - len(real))
    # Most of upstream's packages live in "packages", then "luci".
    shares = {"base": 0.03, "luci": 0.30, "packages": 0.55, "routing": 0.06, "telephony": 0.06}
    start = 0
    for feed in mirror.FEEDS:
        count = int(missing * shares[feed]) if feed != "telephony" else missing - start
        feeds[feed] += _filler(release, arch, count, feed, start)
        start += count
    return feeds


def _target_builds(release: mirror.Release, size: Size) -> list:
    names = sorted(release.targets + tuple(list(MORE_TARGETS)[: size.targets - 3]))
    real_profiles = sum(len(mirror.TARGETS[n].profiles) for n in release.targets)
    counts = _profiles_per_target(size, names, real_profiles)
    builds = []
    for name in names:
        if name in mirror.TARGETS:
            builds.append(mirror.target_build(release, name))
            continue
        arch = MORE_TARGETS[name]
        donor = mirror.target_build(release, _donor(arch))
        spec = dataclasses.replace(
            donor.spec,
            arch_packages=arch,
            boardname=name.split("/")[0],
            profiles=_synthetic_profiles(name, counts[name]),
        )
        builds.append(dataclasses.replace(donor, target=name, spec=spec))
    for build in builds:
        extra = KMODS_PER_TARGET - len(build.kmods)
        kernel_dep = f"kernel (={build.kernel_version})"
        kmods = _filler(release, build.spec.arch_packages, extra, "kmods", 0)
        for kmod in kmods:
            kmod.name = kmod.abi_free_name = "kmod-" + kmod.name
            kmod.depends = [kernel_dep]
        build.kmods = build.kmods + kmods
    return builds


def write_release(root: Path, release: mirror.Release, size: Size) -> None:
    """mirror.write_release() with the bench's targets, profiles and feeds."""
    builds = _target_builds(release, size)
    arches = sorted({b.spec.arch_packages for b in builds})
    feeds = {}
    for arch in arches:
        feeds[arch] = _arch_feeds(release, arch, size)
        arch_dir = root / release.path / "packages" / arch
        if arch_dir.exists():
            shutil.rmtree(arch_dir)
        mirror.write(arch_dir / "feeds.conf", mirror.feeds_conf(release))
    targets_dir = root / release.path / "targets"
    if targets_dir.exists():
        shutil.rmtree(targets_dir)

    overview = []
    for build in builds:
        written = mirror.write_target(root, build, feeds[build.spec.arch_packages])
        # The whole profiles.json, or (newer mirror.py) only its profiles.
        profiles = written["profiles"] if "arch_packages" in written else written
        for profile_id, profile in profiles.items():
            overview.append({"id": profile_id, "target": build.target, "titles": profile["titles"]})
    for arch in arches:
        for feed in mirror.FEEDS:
            # apk era: index.json v2 only, no ABI names to resolve.
            mirror.write_package_dir(
                root / release.path / "packages" / arch / feed, release, arch, feeds[arch][feed], {}
            )
    targets = {b.target: b.spec.arch_packages for b in builds}
    mirror.write_json(root / release.path / ".targets.json", dict(sorted(targets.items())))
    overview.sort(key=lambda p: (p["target"], p["id"]))
    mirror.write_json(
        root / release.path / ".overview.json", {"release": release.version, "profiles": overview}
    )


def _inputs_digest(size: Size) -> str:
    """Changes when the generators or the size change: then the mirror is written again."""
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(size)).encode())
    sources = [Path(mirror.__file__), Path(__file__), mirror.FIXTURES / "usign.py"]
    sources += sorted(mirror.IMAGEBUILDER_SOURCES.iterdir()) + sorted(mirror.KEYS.rglob("*"))
    for source in sources:
        if source.is_file():
            digest.update(source.name.encode() + source.read_bytes())
    return digest.hexdigest()


def build_catalogue(dest: Path, size: Size = Size()) -> Path:
    """Write (or reuse) the full-size mirror in `dest` and return it."""
    stamp = dest / ".bench-inputs"
    wanted = _inputs_digest(size)
    if stamp.exists() and stamp.read_text() == wanted:
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    mirror.build_mirror(dest)
    release = next(r for r in mirror.RELEASES if r.version == STABLE)
    write_release(dest, release, size)
    stamp.write_text(wanted)
    return dest


def catalogue_counts(root: Path) -> dict[str, int]:
    """What the generated release holds, read back from its files."""
    release = next(r for r in mirror.RELEASES if r.version == STABLE)
    base = root / release.path
    targets = json.loads((base / ".targets.json").read_text())
    profiles = sum(
        len(json.loads((base / "targets" / t / "profiles.json").read_text())["profiles"])
        for t in targets
    )
    per_arch = {}
    for arch in set(targets.values()):
        per_arch[arch] = sum(
            len(
                json.loads((base / "packages" / arch / feed / "index.json").read_text())["packages"]
            )
            for feed in mirror.FEEDS
        )
    return {
        "targets": len(targets),
        "profiles": profiles,
        "architectures": len(per_arch),
        "min_packages_per_arch": min(per_arch.values()),
    }
