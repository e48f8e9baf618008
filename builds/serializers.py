"""The shape of a build request, as the four clients send it (api-contract.md).

Only the shape is checked here: types, patterns and ranges, each answered with 422 and a
string `detail`. Whether the version, target, profile and packages exist is a question
for the catalogue, answered by `builds.services.request_build` with 400.
"""

import re
from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from asuproject.input import MAX_PACKAGES, PACKAGE_RE, name_field, target_field
from builds.repositories import UnusableRepository, repository_url

# Patterns from the contract, ASCII only, always matched whole (re.fullmatch).
PACKAGE_VERSION_RE = re.compile(r"[\w+.,~-]*", re.ASCII)
REPOSITORY_NAME_RE = re.compile(r"\w[\w.-]*", re.ASCII)

FILESYSTEMS = ["squashfs", "ext4", "ubifs", "erofs", "jffs2", "jffs2-nand", "targz", "cpiogz"]
REPOSITORIES_MODES = ["append", "replace"]

MAX_REPOSITORIES = 32


MAX_NAME_LENGTH = 200
INVALID_VERSION = "is not a valid package version."


def _text(value: Any, invalid: str = "Not a valid string.") -> str:
    """One list item or dict value as DRF's CharField takes it: a string, or a number
    spelled as one, without surrounding blanks."""
    if value is None:
        raise serializers.ValidationError("This field may not be null.")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise serializers.ValidationError(invalid)
    text = str(value).strip()
    if len(text) > MAX_NAME_LENGTH:
        raise serializers.ValidationError(
            f"Ensure this field has no more than {MAX_NAME_LENGTH} characters."
        )
    return text


@extend_schema_field(
    {"type": "array", "items": {"type": "string", "maxLength": MAX_NAME_LENGTH}, "nullable": True}
)
class PackageListField(serializers.Field):
    """A list of package names, checked in one loop rather than by one DRF field per
    name: a router sends 150 names and more, and DRF's per-field machinery would dominate.
    Errors read like DRF's ListField's: "packages[3]: 'a b' is not a valid package name."."""

    default_error_messages = {
        "not_a_list": 'Expected a list of items but got type "{input_type}".',
        "max_length": f"Ensure this field has no more than {MAX_PACKAGES} elements.",
    }

    def to_internal_value(self, data: Any) -> list[str]:
        if not isinstance(data, list):
            self.fail("not_a_list", input_type=type(data).__name__)
        names: list[str] = []
        errors: dict[int, list[str]] = {}
        fullmatch = PACKAGE_RE.fullmatch
        for index, item in enumerate(data):
            # The usual item, a plain valid name, needs nothing more.
            if type(item) is str and len(item) <= MAX_NAME_LENGTH and fullmatch(item):
                names.append(item)
                continue
            try:
                name = _text(item)
                if name and not fullmatch(name):
                    raise serializers.ValidationError(f"{name!r} is not a valid package name.")
            except serializers.ValidationError as exc:
                errors[index] = exc.detail
            else:
                names.append(name)
        if errors:
            raise serializers.ValidationError(errors)
        if len(names) > MAX_PACKAGES:
            self.fail("max_length")
        return names

    def to_representation(self, value: list[str]) -> list[str]:
        return value


@extend_schema_field(
    {"type": "object", "additionalProperties": {"type": "string"}, "nullable": True}
)
class PackageVersionsField(serializers.Field):
    """{package name: expected version}; the values are checked here in one loop, the
    names by `validate_packages_versions`."""

    default_error_messages = {
        "not_a_dict": 'Expected a dictionary of items but got type "{input_type}".'
    }

    def to_internal_value(self, data: Any) -> dict[str, str]:
        if not isinstance(data, dict):
            self.fail("not_a_dict", input_type=type(data).__name__)
        versions: dict[str, str] = {}
        errors: dict[str, list[str]] = {}
        for key, value in data.items():
            try:
                version = _text(value, invalid=INVALID_VERSION)
                if not PACKAGE_VERSION_RE.fullmatch(version):
                    raise serializers.ValidationError(INVALID_VERSION)
            except serializers.ValidationError as exc:
                errors[str(key)] = exc.detail
            else:
                versions[str(key)] = version
        if errors:
            raise serializers.ValidationError(errors)
        return versions

    def to_representation(self, value: dict[str, str]) -> dict[str, str]:
        return value


class BuildRequestSerializer(serializers.Serializer):
    """A build request. Unknown fields are ignored; empty values mean absent."""

    distro = name_field(32, required=False, allow_blank=True, allow_null=True)
    version = name_field(32)
    version_code = name_field(64, required=False, allow_blank=True, allow_null=True)
    target = target_field()
    profile = name_field(128)
    packages = PackageListField(required=False, allow_null=True)
    packages_versions = PackageVersionsField(required=False, allow_null=True)
    diff_packages = serializers.BooleanField(required=False, allow_null=True, default=False)
    defaults = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, trim_whitespace=False
    )
    rootfs_size_mb = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    filesystem = serializers.ChoiceField(
        FILESYSTEMS, required=False, allow_blank=True, allow_null=True
    )
    repositories = serializers.DictField(
        child=serializers.CharField(max_length=500), required=False, allow_null=True
    )
    repositories_mode = serializers.ChoiceField(
        REPOSITORIES_MODES, required=False, allow_blank=True, allow_null=True
    )
    repository_keys = serializers.ListField(
        child=serializers.CharField(max_length=4096),
        required=False,
        allow_null=True,
        max_length=MAX_REPOSITORIES,
    )
    client = serializers.CharField(
        max_length=200, required=False, allow_blank=True, allow_null=True
    )

    def validate_packages_versions(self, value: dict | None) -> dict | None:
        if not value:
            return value
        if len(value) > MAX_PACKAGES:
            raise serializers.ValidationError(f"at most {MAX_PACKAGES} packages.")
        bad = [n for n in value if not PACKAGE_RE.fullmatch(n) or len(n) > MAX_NAME_LENGTH]
        if bad:
            raise serializers.ValidationError(f"{bad[0]!r} is not a valid package name.")
        return value

    def validate_defaults(self, value: str | None) -> str | None:
        limit = settings.ASU_MAX_DEFAULTS_LENGTH
        if value and len(value.encode()) > limit:
            raise serializers.ValidationError(
                f"the script is {len(value.encode())} bytes, the server accepts at most {limit}."
            )
        return value

    def validate_rootfs_size_mb(self, value: int | None) -> int | None:
        # The maximum is a setting, read per request so that tests and admins can change it.
        limit = settings.ASU_MAX_ROOTFS_SIZE_MB
        if value is not None and value > limit:
            raise serializers.ValidationError(
                f"{value} MB is more than this server's maximum of {limit} MB."
            )
        return value

    def validate_repositories(self, value: dict | None) -> dict | None:
        if not value:
            return value
        if len(value) > MAX_REPOSITORIES:
            raise serializers.ValidationError(f"at most {MAX_REPOSITORIES} repositories.")
        urls = {}
        for name, url in value.items():
            if not REPOSITORY_NAME_RE.fullmatch(name) or len(name) > 64:
                raise serializers.ValidationError(
                    f"{name!r} is not a valid repository name: letters, digits, '_', '.' "
                    "and '-', at most 64."
                )
            try:
                # Only the URL as parsed and written out again goes further, never the raw
                # string: it becomes a line of the ImageBuilder's feed list.
                urls[name] = repository_url(url)
            except UnusableRepository as exc:
                raise serializers.ValidationError(f"{name}: {exc}") from None
        return urls

    def validate(self, attrs: dict) -> dict:
        """Fill in the defaults, so that absent, null and empty all read the same."""
        return {
            "distro": attrs.get("distro") or "openwrt",
            "version": attrs["version"],
            "version_code": attrs.get("version_code") or "",
            "target": attrs["target"],
            "profile": attrs["profile"],
            "packages": [p for p in attrs.get("packages") or [] if p],
            "packages_versions": dict(attrs.get("packages_versions") or {}),
            "diff_packages": bool(attrs.get("diff_packages")),
            "defaults": attrs.get("defaults") or None,
            "rootfs_size_mb": attrs.get("rootfs_size_mb"),
            "filesystem": attrs.get("filesystem") or None,
            "repositories": dict(attrs.get("repositories") or {}),
            "repositories_mode": attrs.get("repositories_mode") or "replace",
            "repository_keys": [k for k in attrs.get("repository_keys") or [] if k],
            "client": attrs.get("client") or None,
        }
