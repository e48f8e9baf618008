"""Package indexes of the downloads server: parsing them and writing them to the ORM.

An index directory (a feed of an architecture, a target's `packages/` or its
`kmods/<kernel>/`) may hold `index.json` v2 (names without ABI version, apk and
late opkg trees), an opkg `Packages` file, or only the old `index.json` v1 (names
with ABI version). As ASU does, v2 is read first, then `Packages`, then v1.
"""

from dataclasses import dataclass, field
from datetime import datetime

from packages.models import Package, PackageIndex
from targets.models import Target, Version
from targets.upstream import Fetched, NotFound, UpstreamError, fetch

# Fields every stanza of a real `Packages` file has (ipkg-make-index adds Filename).
PACKAGES_REQUIRED_FIELDS = ("Package", "Version", "Filename")
BULK_BATCH = 2000


@dataclass
class IndexRead:
    """The result of reading one index directory."""

    url: str  # the file actually read
    digest: str = ""
    etag: str = ""
    last_modified: str = ""
    # None when the file is the one recorded earlier and has not changed.
    packages: dict[str, str] | None = None
    abi_versions: dict[str, str] = field(default_factory=dict)  # name -> ABIVersion

    @property
    def unchanged(self) -> bool:
        return self.packages is None


def parse_packages(text: str, url: str) -> dict[str, str]:
    """Parse an opkg `Packages` file into {name: version}, ABI versions stripped."""
    return parse_packages_with_abi(text, url)[0]


def parse_packages_with_abi(text: str, url: str) -> tuple[dict[str, str], dict[str, str]]:
    """Parse an opkg `Packages` file into {name: version}, ABI versions stripped, and
    {name: ABI version} for the packages that have one.

    "libjson-script20240329" with "ABIVersion: 20240329" becomes "libjson-script",
    the name clients and manifests with STRIP_ABI use. A file cut in the middle is
    an UpstreamError.
    """
    # ipkg-make-index ends every stanza with an empty line, so a complete file ends
    # with one; a file cut anywhere inside a stanza does not.
    if text.strip() and not text.endswith("\n\n"):
        raise UpstreamError(url, "truncated: the last stanza does not end with an empty line")
    packages: dict[str, str] = {}
    abi_versions: dict[str, str] = {}
    for number, stanza in enumerate(text.split("\n\n"), start=1):
        if not stanza.strip():
            continue
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if not line or line[0] in " \t":
                continue  # continuation of a multi-line field (Description)
            key, sep, value = line.partition(":")
            if not sep:
                raise UpstreamError(url, f"stanza {number}: malformed line {line[:80]!r}")
            fields[key.strip()] = value.strip()
        missing = [field for field in PACKAGES_REQUIRED_FIELDS if not fields.get(field)]
        if missing:
            name = fields.get("Package", "?")
            raise UpstreamError(
                url,
                f"stanza {number} ({name}) lacks {', '.join(missing)}: the file is truncated "
                "or malformed",
            )
        name, abi = fields["Package"], fields.get("ABIVersion", "")
        if abi and name.endswith(abi) and len(name) > len(abi):
            name = name[: -len(abi)]
            abi_versions[name] = abi
        packages[name] = fields["Version"]
    return packages, abi_versions


def parse_index_json(data: object, url: str) -> tuple[int, dict[str, str]]:
    """Check an index.json document; return its format version (1 or 2) and packages."""
    if not isinstance(data, dict) or not isinstance(data.get("packages"), dict):
        raise UpstreamError(url, "not a package index: no `packages` object")
    packages = data["packages"]
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in packages.items()):
        raise UpstreamError(url, "not a package index: `packages` must map names to versions")
    version = data.get("version", 1)
    return (2 if version == 2 else 1), packages


def parse_feeds_conf(text: str) -> list[str]:
    """Feed names from feeds.conf: field 2 of "src-git packages https://...^hash"."""
    names = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and not fields[0].startswith("#") and fields[1] not in names:
            names.append(fields[1])
    return names


def read_index(directory_url: str, known: PackageIndex | None = None) -> IndexRead:
    """Read the index of one directory, or report that the recorded one is unchanged.

    Raises UpstreamError when no index can be read, naming the URL and the reason.
    """
    directory_url = directory_url.rstrip("/")
    json_url, packages_url = f"{directory_url}/index.json", f"{directory_url}/Packages"

    v1: tuple[Fetched, dict[str, str]] | None = None
    fetched = _fetch_known(json_url, known)
    if fetched is not None:
        if _same_as_known(fetched, known):
            return IndexRead(json_url)
        format_version, packages = parse_index_json(fetched.json(), json_url)
        if format_version == 2:
            return _read(fetched, packages)
        v1 = (fetched, packages)

    fetched = _fetch_known(packages_url, known)
    if fetched is not None:
        if _same_as_known(fetched, known):
            return IndexRead(packages_url)
        return _read(fetched, *parse_packages_with_abi(fetched.text(), packages_url))

    if v1 is not None:
        return _read(*v1)
    raise UpstreamError(f"{directory_url}/", "no package index (neither index.json nor Packages)")


def _fetch_known(url: str, known: PackageIndex | None) -> Fetched | None:
    """Fetch `url`, conditionally when it is the file recorded last time; None on 404."""
    try:
        if known is not None and known.url == url:
            return fetch(url, etag=known.etag, last_modified=known.last_modified)
        return fetch(url)
    except NotFound:
        return None


def _same_as_known(fetched: Fetched, known: PackageIndex | None) -> bool:
    if known is None or known.url != fetched.url:
        return False
    return fetched.not_modified or (bool(known.digest) and fetched.digest == known.digest)


def _read(
    fetched: Fetched, packages: dict[str, str], abi_versions: dict[str, str] | None = None
) -> IndexRead:
    return IndexRead(
        url=fetched.url,
        digest=fetched.digest,
        etag=fetched.etag,
        last_modified=fetched.last_modified,
        packages=packages,
        abi_versions=abi_versions or {},
    )


def save_index(
    read: IndexRead,
    *,
    version: Version,
    kind: str,
    arch_packages: str,
    name: str,
    target: Target | None = None,
    known: PackageIndex | None = None,
    now: datetime,
) -> PackageIndex:
    """Write one changed index and replace its packages in bulk. Call inside a transaction."""
    assert read.packages is not None, "save_index() is for changed indexes only"
    fields = {
        "version": version,
        "kind": kind,
        "arch_packages": arch_packages,
        "target": target,
        "name": name,
        "url": read.url,
        "digest": read.digest,
        "etag": read.etag,
        "last_modified": read.last_modified,
        "synced_at": now,
    }
    if known is None:
        # The file may still be recorded under another identity (a renamed feed):
        # that row is replaced, since a URL is indexed once.
        PackageIndex.objects.filter(url=read.url).delete()
        index = PackageIndex.objects.create(**fields)
    else:
        index = known
        for key, value in fields.items():
            setattr(index, key, value)
        if read.url != known.url:
            PackageIndex.objects.filter(url=read.url).exclude(pk=known.pk).delete()
        index.save()
        Package.objects.filter(index=index).delete()
    Package.objects.bulk_create(
        [
            Package(index=index, name=pkg, version=ver, abi_version=read.abi_versions.get(pkg, ""))
            for pkg, ver in sorted(read.packages.items())
        ],
        batch_size=BULK_BATCH,
    )
    return index
