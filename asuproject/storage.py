"""Where built images are stored: a local folder (the embedded default) or an
S3-compatible bucket, chosen by one URL setting in the style of DATABASE_URL.

    ASU_STORE_URL=s3://BUCKET/PREFIX

Credentials, region and endpoint come from the variables boto3 itself reads
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL), each
also as a `_FILE` secret.
"""

import posixpath
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured
from django.utils.http import content_disposition_header
from storages.backends.s3 import S3Storage

from asuproject.lib.env import env_str

S3_BACKEND = "asuproject.storage.ImageS3Storage"
FILE_BACKEND = "django.core.files.storage.FileSystemStorage"


class ImageS3Storage(S3Storage):
    """Every object as opaque bytes to download, as /store/ serves local files: a
    browser or CDN must not unpack an .img.gz on the way (django-storages would
    otherwise label it Content-Encoding: gzip), or its sha256 no longer matches."""

    def get_object_parameters(self, name: str) -> dict[str, Any]:
        return {
            **super().get_object_parameters(name),
            "ContentType": "application/octet-stream",
            "ContentDisposition": content_disposition_header(True, posixpath.basename(name)),
        }


def store_storage(url: str, directory: str) -> dict[str, Any]:
    """The STORAGES entry of the image store: the bucket of an `s3://BUCKET/PREFIX`
    URL, or the local `directory` when `url` is empty."""
    if not url:
        return {"BACKEND": FILE_BACKEND, "OPTIONS": {"location": directory}}
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ImproperlyConfigured(
            f"ASU_STORE_URL must look like s3://BUCKET/PREFIX (or be empty), not {url!r}"
        )
    options = {
        "bucket_name": parts.netloc,
        "location": parts.path.strip("/"),
        # Identical builds write the same names: overwrite rather than rename.
        "file_overwrite": True,
        "default_acl": None,
    }
    # boto3 reads these itself; read here too so that the _FILE forms work.
    for option, variable in (
        ("access_key", "AWS_ACCESS_KEY_ID"),
        ("secret_key", "AWS_SECRET_ACCESS_KEY"),
        ("region_name", "AWS_DEFAULT_REGION"),
        ("endpoint_url", "AWS_ENDPOINT_URL"),
    ):
        if value := env_str(variable):
            options[option] = value
    return {"BACKEND": S3_BACKEND, "OPTIONS": options}


def is_local(storage_settings: dict[str, Any]) -> bool:
    return storage_settings["BACKEND"] == FILE_BACKEND
