"""The shape of a package-changes dry run (POST /api/v1/package-changes/apply)."""

from rest_framework import serializers

from asuproject.input import MAX_PACKAGES, PACKAGE_RE, name_field, pattern_field, target_field


class ApplySerializer(serializers.Serializer):
    """The names as a build request spells them, matched whole."""

    version = name_field(32)
    target = target_field()
    profile = name_field(128, required=False, allow_blank=True, default="")
    packages = serializers.ListField(
        child=pattern_field(PACKAGE_RE, "is not a valid package name.", max_length=200),
        default=list,
        max_length=MAX_PACKAGES,
    )
