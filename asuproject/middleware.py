"""Django's session, authentication and message middleware, skipped on the paths that
only machines use.

They serve the admin and the pages. Under /api/, /json/ and /store/ no view reads a
session, a user or a message, and none sets a cookie, yet the three are a noticeable share
of a build poll answered from memory. Django cannot enable
middleware per URL, so each is subclassed to step aside on those paths; as subclasses
they still satisfy the admin's system checks. CSRF protection stays as Django ships it:
it costs little there (the views are exempt), and `check --deploy` looks for it by name.
"""

from collections.abc import Callable

from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest, HttpResponse

from asuproject.views import MACHINE_PREFIXES


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
