"""Django's session, authentication and message middleware, skipped on the paths that
only machines use.

They serve the admin and the pages. Under /api/, /json/ and /store/ no view reads a
session, a user or a message, and none sets a cookie, yet the three are a noticeable share
of a build poll answered from memory. Django cannot enable
middleware per URL, so each is subclassed to step aside on those paths; as subclasses
they still satisfy the admin's system checks. CSRF protection stays as Django ships it:
it costs little there (the views are exempt), and `check --deploy` looks for it by name.

And one of this project's own: an address with a control character is refused up front.
"""

import re
from collections.abc import Callable
from urllib.parse import unquote_plus

from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from asuproject.api_errors import error_response
from asuproject.input import CONTROL_CHARACTERS
from asuproject.openapi import CONTROL_CHARACTER_DETAIL
from asuproject.views import MACHINE_PREFIXES

NUL = re.compile("\x00")


def for_machines(request: HttpRequest) -> bool:
    return request.path_info.startswith(MACHINE_PREFIXES)


class _BrowserOnly:
    get_response: Callable[[HttpRequest], HttpResponse]

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if for_machines(request):
            return self.get_response(request)
        return super().__call__(request)


class BrowserSessionMiddleware(_BrowserOnly, SessionMiddleware):
    pass


class BrowserAuthenticationMiddleware(_BrowserOnly, AuthenticationMiddleware):
    pass


class BrowserMessageMiddleware(_BrowserOnly, MessageMiddleware):
    pass


class RefuseControlCharactersMiddleware:
    """400 for an address holding a control character (NUL, newline, ...) where none can
    belong: anywhere in the path, anywhere in the query of a machine path, and a NUL in
    any query (a page's form may send a textarea's newlines, never a NUL).

    PostgreSQL cannot even compare a string with a NUL, so every view would otherwise
    answer 500 to `/api/v1/build/abc%00def`. One check here keeps each view from having
    to know: JSON on the machine paths, a page elsewhere.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        query = unquote_plus(request.META.get("QUERY_STRING", ""), errors="replace")
        query_refused = CONTROL_CHARACTERS if for_machines(request) else NUL
        if CONTROL_CHARACTERS.search(request.path_info) or query_refused.search(query):
            return refuse_control_characters(request)
        return self.get_response(request)


def refuse_control_characters(request: HttpRequest) -> HttpResponse:
    detail = CONTROL_CHARACTER_DETAIL
    if for_machines(request):
        return error_response(400, detail)
    return render(request, "400.html", {"detail": detail}, status=400)
