"""The store of built files: GET and HEAD /store/<bin_dir>/<file>, read through Django's
storage API (a local folder, or an S3-compatible bucket: see asuproject/storage.py), and the
functions a worker writes and deletes a build folder with. Files in a bucket, or behind
ASU_STORE_PUBLIC_URL, are answered with a redirect there; the rest below holds for files
served from here.

Answers carry an exact Content-Length (clients check it, auc resumes with Range), support
one byte range, and never reach outside the store: names with `..`, hidden or empty
segments, absolute paths and symlinks leading out of the store folder are all 404.
"""

import logging
import os
import posixpath
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import filelock
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files import File
from django.core.files.storage import Storage, default_storage
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.utils.encoding import iri_to_uri
from django.utils.http import content_disposition_header
from django.views.decorators.csrf import csrf_exempt

from asuproject.api_errors import error_response
from builds.answers import RETRY_AFTER
from builds.errors import BuildError

log = logging.getLogger(__name__)

CHUNK_SIZE = 64 * 1024
RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)", re.ASCII)
# More digits than any file size has; reading longer numbers is slow, and Python refuses
# more than 4300 digits. Any such position lies past the end of every file.
MAX_POSITION_DIGITS = 19
PAST_ANY_FILE = 10**MAX_POSITION_DIGITS


@csrf_exempt
def serve(request: HttpRequest, name: str) -> HttpResponse:
    if request.method == "OPTIONS":
        return HttpResponse(headers={"Allow": "GET, HEAD, OPTIONS"})
    if request.method not in ("GET", "HEAD"):
        response = error_response(405, "the store is read-only")
        response["Allow"] = "GET, HEAD, OPTIONS"
        return response
    storage = default_storage
    path = store_path(name)
    try:
        size = _size(storage, path) if path else None
        location = redirect_location(storage, path, request.method) if size is not None else None
    except (OSError, BotoCoreError, ClientError) as exc:
        log.warning("The store is unavailable: %s", exc)
        return _unavailable()
    if size is None:
        return error_response(404, f"no such file in the store: {name}")
    if location:
        return HttpResponseRedirect(location)

    headers = {
        "Accept-Ranges": "bytes",
        # Every file as opaque bytes, as openwrt/asu serves them: a browser or download
        # helper must not unpack an .img.gz on the way, or the sha256 no longer matches.
        "Content-Type": "application/octet-stream",
        "Content-Disposition": content_disposition_header(True, posixpath.basename(path)),
    }
    if request.method == "HEAD":
        # The length the GET would send, without opening the file.
        return HttpResponse(headers={**headers, "Content-Length": str(size)})

    wanted = byte_range(request.headers.get("Range"), size)
    if wanted == "unsatisfiable":
        return HttpResponse(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    if wanted is None:
        response = FileResponse(storage.open(path, "rb"))
        for header, value in {**headers, "Content-Length": str(size)}.items():
            response[header] = value
        return response
    start, end = wanted
    return StreamingHttpResponse(
        _read(storage.open(path, "rb"), start, end - start + 1),
        status=206,
        headers={
            **headers,
            "Content-Length": str(end - start + 1),
            "Content-Range": f"bytes {start}-{end}/{size}",
        },
    )


def _unavailable() -> HttpResponse:
    """503: the store (a bucket, usually) cannot be read; the download can be repeated."""
    response = error_response(
        503,
        "Temporarily unavailable: the image store is unavailable. Please try again in a moment",
        "Service Unavailable",
    )
    response["Retry-After"] = str(RETRY_AFTER)
    return response


def redirect_location(storage: Storage, name: str, method: str = "GET") -> str | None:
    """Where a download of `name` is sent instead of streamed: below ASU_STORE_PUBLIC_URL
    (a CDN) when set, else to the object itself in a bucket unless ASU_STORE_SERVE is
    "stream"; None to stream it from here."""
    if settings.ASU_STORE_PUBLIC_URL:
        return f"{settings.ASU_STORE_PUBLIC_URL}/{iri_to_uri(name)}"
    if settings.ASU_STORE_SERVE == "redirect" and not _is_local(storage):
        # A signed URL is signed for one method: a HEAD follows with HEAD.
        return storage.url(name, http_method=method)
    return None


def _is_local(storage: Storage) -> bool:
    try:
        storage.path("")
    except NotImplementedError:
        return False
    return True


def store_path(name: str) -> str | None:
    """The storage name for a URL path below /store/, or None if it is not a file name
    inside a build folder."""
    if not name or "\\" in name or name.startswith("/"):
        return None
    parts = name.split("/")
    if len(parts) < 2:
        return None
    for part in parts:
        # "" rejects "//" and a trailing "/", "." rejects ".", ".." and hidden files
        # (partial files a worker is still writing).
        if not part or part.startswith(".") or any(ord(c) < 32 or c == "\x7f" for c in part):
            return None
    return name


def byte_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """The (first, last) byte of a single-range `Range` header, "unsatisfiable", or
    None to send the whole file (no header, several ranges, or one we cannot parse)."""
    if not header:
        return None
    match = RANGE_RE.fullmatch(header.strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = (_position(digits) for digits in match.groups())
    if first is None:
        if last == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - last), size - 1
    if last is not None and last < first:
        return None
    if first >= size:
        return "unsatisfiable"
    return first, min(last if last is not None else size - 1, size - 1)


def _position(digits: str) -> int | None:
    """A byte position of a Range header; None if absent."""
    if not digits:
        return None
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= MAX_POSITION_DIGITS else PAST_ANY_FILE


def _size(storage: Storage, name: str) -> int | None:
    """The file's size, or None if it is missing, not a file, or outside the store."""
    try:
        local = storage.path(name)
    except NotImplementedError:
        local = None  # a remote storage (S3): no symlinks to follow there
    except SuspiciousFileOperation:
        return None
    if local is not None:
        root = os.path.realpath(storage.location)
        real = os.path.realpath(local)
        if not real.startswith(root + os.sep) or not os.path.isfile(real):
            return None
    try:
        return storage.size(name)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, SuspiciousFileOperation):
        return None
    except ClientError as exc:
        # A bucket without list permission answers 403 for a missing object.
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (403, 404):
            return None
        raise


def _read(file: IO[bytes], start: int, length: int) -> Iterator[bytes]:
    try:
        file.seek(start)
        while length > 0:
            data = file.read(min(CHUNK_SIZE, length))
            if not data:
                break
            length -= len(data)
            yield data
    finally:
        file.close()


# Writing and deleting build folders (the worker).


def store_files(source: Path, bin_dir: str) -> list[str]:
    """Copy the files of a BIN_DIR into the store under `<bin_dir>/`; return their names."""
    if not re.fullmatch(r"[\w.-]+", bin_dir) or bin_dir.startswith("."):
        raise BuildError(f"Unusable store folder name: {bin_dir!r}")
    stored = []
    locks = Path(settings.ASU_CACHE_DIR) / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    # Identical builds share a folder; one writer at a time per host.
    with filelock.FileLock(str(locks / f"store-{bin_dir}.lock")):
        for path in sorted(source.iterdir()):
            if not path.is_file() or path.is_symlink():
                continue
            name = f"{bin_dir}/{path.name}"
            if default_storage.exists(name):
                default_storage.delete(name)
            with open(path, "rb") as fh:
                saved = default_storage.save(name, File(fh, name=path.name))
            if saved != name:
                raise BuildError(f"The store saved {name} as {saved}")
            stored.append(path.name)
    return stored


def delete_stored_files(bin_dir: str) -> None:
    """Remove a build folder from the store."""
    if not bin_dir or not re.fullmatch(r"[\w.-]+", bin_dir) or bin_dir.startswith("."):
        return
    _delete_folder(bin_dir)
    try:
        os.rmdir(default_storage.path(bin_dir))  # FileSystemStorage keeps empty folders
    except (NotImplementedError, OSError):
        pass


def _delete_folder(folder: str) -> None:
    try:
        dirs, files = default_storage.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in files:
        default_storage.delete(f"{folder}/{name}")
    for name in dirs:
        _delete_folder(f"{folder}/{name}")
        try:
            os.rmdir(default_storage.path(f"{folder}/{name}"))
        except (NotImplementedError, OSError):
            pass
