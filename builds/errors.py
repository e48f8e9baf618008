"""The one exception a build request is refused with."""


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
