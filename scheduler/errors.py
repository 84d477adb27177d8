"""Every error oyez raises, in one tree.

    OyezError
    ├── ConfigError            jobs.yaml or settings are wrong; carries located problems
    └── PublishError           a network call did not publish
        ├── TransientError     worth retrying (timeouts, 5xx, rate limits); may carry retry_after
        ├── PermanentError     retrying cannot help (invalid parameter, duplicate, policy block)
        └── AuthError          the target's credentials are bad; stop using that target

Messages name the thing that failed and never carry a secret: adapters build
them from the network's error text, which is passed through `redact`.
"""

from __future__ import annotations


class OyezError(Exception):
    """Base of every oyez error."""


class ConfigError(OyezError):
    """The configuration is invalid; `problems` holds every located message."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class PublishError(OyezError):
    """A publish or lookup call failed."""

    def __init__(self, message: str, *, code: int | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class TransientError(PublishError):
    """Retry later. `ambiguous` means the post may have been created anyway."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        ambiguous: bool = False,
    ) -> None:
        super().__init__(message, code=code, status=status)
        self.retry_after = retry_after
        self.ambiguous = ambiguous


class PermanentError(PublishError):
    """Do not retry: the network refused this post for good."""


class AuthError(PublishError):
    """The target's token is invalid or lacks permission; a human must fix it."""
