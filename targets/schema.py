"""The OpenAPI description of the revision endpoint (docs/api.md)."""

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers

from asuproject.openapi import METHOD_NOT_ALLOWED, error_example, error_response


class RevisionSerializer(serializers.Serializer):
    revision = serializers.CharField(help_text="The target's revision, `r28427-6df0e3d02a`.")


revision = extend_schema(
    operation_id="revision",
    summary="Revision of a version's target",
    description="The revision the ImageBuilder of a version's target builds; LuCI asks for "
    "it to tell whether a snapshot changed.",
    tags=["catalogue"],
    parameters=[
        OpenApiParameter("version", str, OpenApiParameter.PATH, description="`24.10.1`"),
        OpenApiParameter("target", str, OpenApiParameter.PATH, description="`ath79`"),
        OpenApiParameter("subtarget", str, OpenApiParameter.PATH, description="`generic`"),
    ],
    responses={
        200: OpenApiResponse(
            RevisionSerializer,
            examples=[
                OpenApiExample(
                    "Revision", value={"revision": "r28427-6df0e3d02a"}, response_only=True
                )
            ],
        ),
        400: error_response(
            "The server does not know the version, or the version has no such target.",
            error_example(400, "Unsupported version: 9.9.9", name="Unknown version"),
            error_example(
                400,
                "Unsupported target: foo/bar. Version 24.10.1 does not offer it.",
                name="Unknown target",
            ),
        ),
        405: METHOD_NOT_ALLOWED,
    },
)
