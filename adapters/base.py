"""The adapter interface every network implements, and the errors it may raise.

An adapter class is built once per target from its validated settings and
one shared `requests.Session`; the daemon calls it from worker threads, one
call at a time per target.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, Protocol

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
    "Steps",
    "TransientError",
]


class AdapterSettings(BaseModel):
    """Base for an adapter's jobs.yaml settings: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Steps:
    """What earlier attempts of one delivery already did on the network (ids by name).

    An adapter that publishes in several calls records each intermediate id here
    (`put`) as soon as it has it; the daemon keeps it in the ledger at once, so an
    attempt after a crash or a timeout reuses it (`get`) instead of doing it twice.
    This base keeps them in memory (for `oyez check`, tests and one-call adapters).
    """

    def __init__(self, saved: dict[str, str] | None = None) -> None:
        self.saved: dict[str, str] = dict(saved or {})

    def get(self, name: str) -> str | None:
        """The id recorded under `name`, or None."""
        return self.saved.get(name)

    def put(self, name: str, value: str) -> None:
        """Record `value` under `name` (durably, in the daemon's subclass)."""
        self.saved[name] = value


@dataclass(frozen=True)
class Message:
    """What to publish.

    `images` lists every image of a post that has several (`image` is then the
    first); `reply_to` is the remote id of the post this one answers (a first
    comment, or a live event's post in a thread): the adapter publishes it as a
    comment or a reply. `steps` carries what earlier attempts already did.
    """

    text: str
    link: str | None = None
    image: str | None = None
    images: tuple[str, ...] = ()
    reply_to: str | None = None
    steps: Steps = field(default_factory=Steps, compare=False, repr=False)

    @property
    def all_images(self) -> tuple[str, ...]:
        """Every image of the message, in order."""
        return self.images or ((self.image,) if self.image else ())


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
    """One network account (a Facebook Page, a Mastodon account, ...).

    Optional, looked up with getattr: `replies: ClassVar[bool]` (the adapter can
    publish a message with `reply_to`: first comments and live-event threads) and
    `message_problems(text, images, link) -> list[str]` (a classmethod saying why
    the network would refuse a message, for `oyez validate`).
    """

    Settings: ClassVar[type[AdapterSettings]]

    def __init__(self, settings: AdapterSettings, http: requests.Session) -> None: ...

    def publish(self, message: Message) -> Published:
        """Publish `message` once; never retries by itself.

        Raises TransientError (retry later; `ambiguous` if the post may exist),
        PermanentError (never retry) or AuthError (credentials are bad).
        """
        ...

    def find_published(self, message: Message, since: datetime,
                       exclude: Collection[str] = frozenset()) -> Published | None:
        """Return the earliest post carrying `message` created at or after `since`, or None.

        Posts whose id is in `exclude` (already recorded for other deliveries)
        never match. Used after an ambiguous failure, before publishing again;
        looks through everything since `since` (paging, within a bound). Raises
        like `publish`.
        """
        ...

    def check(self) -> str:
        """Verify the credentials; return the account's display name. Raises like `publish`."""
        ...
