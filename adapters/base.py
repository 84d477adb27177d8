"""The adapter interface every network implements, and the errors it may raise.

An adapter class is built once per target from its validated settings and
one shared `requests.Session`; the daemon calls it from worker threads, one
call at a time per target.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Protocol, runtime_checkable

import requests
from pydantic import BaseModel, ConfigDict

from scheduler.errors import AuthError, PermanentError, PublishError, TransientError

__all__ = [
    "Adapter",
    "AdapterSettings",
    "AuthError",
    "Message",
    "PermanentError",
    "PublishError",
    "Published",
    "TokenInspector",
    "TokenStatus",
    "TransientError",
]


class AdapterSettings(BaseModel):
    """Base for an adapter's jobs.yaml settings: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Message:
    """What to publish."""

    text: str
    link: str | None = None
    image: str | None = None


@dataclass(frozen=True)
class Published:
    """A post that exists on the network.

    `usage` is the highest rate-limit usage percentage the network reported
    with the response, or None if it reported none.
    """

    remote_id: str
    url: str | None = None
    usage: float | None = None


class Adapter(Protocol):
    """One network account (a Facebook Page, a Mastodon account, ...)."""

    Settings: ClassVar[type[AdapterSettings]]

    def __init__(self, settings: AdapterSettings, http: requests.Session) -> None: ...

    def publish(self, message: Message) -> Published:
        """Publish `message` once; never retries by itself.

        Raises TransientError (retry later; `ambiguous` if the post may exist),
        PermanentError (never retry) or AuthError (credentials are bad).
        """
        ...

    def find_published(self, message: Message, since: datetime) -> Published | None:
        """Return the post carrying `message` created at or after `since`, or None.

        Used after an ambiguous failure, before publishing again. Raises like
        `publish`.
        """
        ...

    def check(self) -> str:
        """Verify the credentials; return the account's display name. Raises like `publish`."""
        ...


@dataclass(frozen=True)
class TokenStatus:
    """What the network says about a target's token.

    `expires_at` is None when the token does not expire; `missing_scopes` lists
    the permissions publishing needs that the token lacks; `problem` is the
    network's reason when `valid` is False.
    """

    valid: bool
    expires_at: datetime | None = None
    missing_scopes: tuple[str, ...] = ()
    problem: str | None = None


@runtime_checkable
class TokenInspector(Protocol):
    """An adapter that can say when its token expires and what it may do (optional)."""

    def token_status(self) -> TokenStatus:
        """Ask the network about the token. Raises like `Adapter.publish` if it cannot."""
        ...
