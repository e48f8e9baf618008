"""Settings, the one URL pattern and the one view of the ceiling app (bench/ceiling).

No middleware, no installed apps, no database: the view reads the request body, as the
build endpoint must, and answers the status, headers and body captured from the real
server (the JSON file named by BENCH_CEILING_ANSWER), built once at start.
"""

import base64
import json
import os

from django.http import HttpRequest, HttpResponse
from django.urls import re_path

SECRET_KEY = "the-bench-ceiling-has-no-secrets"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
DATABASES: dict = {}
ROOT_URLCONF = __name__
USE_TZ = True
LOGGING_CONFIG = None

with open(os.environ["BENCH_CEILING_ANSWER"]) as _file:
    ANSWER = json.load(_file)
BODY = base64.b64decode(ANSWER["body"])


def answer(request: HttpRequest) -> HttpResponse:
    request.body  # noqa: B018 - read as the real build endpoint reads it
    response = HttpResponse(BODY, status=ANSWER["status"], content_type=None)
    for name, value in ANSWER["headers"]:
        response.headers[name] = value
    response.headers["Content-Length"] = str(len(BODY))  # as CommonMiddleware sets it
    return response


urlpatterns = [re_path(r"", answer)]
