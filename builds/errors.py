"""How a build goes wrong: a request refused before it is queued (BuildRejected), or a
build that fails (BuildError) with the text its requester reads and the output of the
command that failed."""

import time

from django.conf import settings


class BuildError(Exception):
    """A build failed for a reason its requester can read.

    The message is the detail without the "Error: " prefix; stdout and stderr are the
    output of the command that failed, if any.
    """

    def __init__(self, message: str, stdout: str = "", stderr: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.stdout = stdout
        self.stderr = stderr


class BuildTimeout(BuildError):
    def __init__(self, stdout: str = "", stderr: str = "") -> None:
        super().__init__(
            f"The build took longer than the server's limit of {settings.ASU_BUILD_TIMEOUT} "
            "seconds and was stopped. Try again later or with fewer packages.",
            stdout,
            stderr,
        )


def remaining(deadline: float) -> float:
    """Seconds left before `deadline` (a time.monotonic() value); BuildTimeout if none."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise BuildTimeout()
    return left


class BuildRejected(Exception):
    """A request the server will not build. `status` is the HTTP code to answer with;
    `detail` says what was wrong in words a router owner can act on."""

    def __init__(
        self,
        detail: str,
        status: int = 400,
        title: str = "Bad Request",
        unknown_packages: list[str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.title = title
        self.unknown_packages = unknown_packages or []
