"""The adapter interface every network implements, and the errors it may raise.

An adapter class is built once per target from its validated settings and
one shared `requests.Session`; the daemon calls it from worker threads, one
call at a time per target.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Protocol, runtime_checkable

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
    "TokenInspector",
    "TokenStatus",
    "TransientError",
    "idempotent_for",
    "message_problems",
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
    """What to publish, and which delivery it is.

    `images` lists every image of a post that has several (`image` is then the
    first); `reply_to` is the remote id of the post this one answers (a first
    comment, or a live event's post in a thread): the adapter publishes it as a
    comment or a reply. `steps` carries what earlier attempts already did.

    The fields after `steps` identify the delivery; the daemon fills them in
    from the ledger (`scheduler.delivery.message_for`), so they are the same on
    every attempt, across restarts:
    - `key`: the ledger key, unique per post and target (an idempotency key);
    - `first_attempt_at`: when the first attempt was claimed, fixed before any
      network call (None only outside the daemon, e.g. at validate time);
    - `options`: the post's network options from jobs.yaml (`visibility`,
      `spoiler_text`, `alt`) and, for live-event parts, `event` (id, title,
      starts, ends, link; times ISO 8601).
    """

    text: str
    link: str | None = None
    image: str | None = None
    images: tuple[str, ...] = ()
    reply_to: str | None = None
    steps: Steps = field(default_factory=Steps, compare=False, repr=False)
    key: str = ""
    job_id: str = ""
    part: str = ""
    target: str = ""
    due: datetime | None = None
    first_attempt_at: datetime | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

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

    Optional class attributes, read with getattr (an adapter may omit them):
    - `max_chars: int`: the longest text the network takes, in characters; or, for
      networks that count otherwise (graphemes, bytes, links as 23),
    - `text_problem(message) -> str | None`, a staticmethod: why the network would
      refuse this text (too long, ...), or None. `oyez validate` calls either.
    - `idempotent_for: timedelta`: publishing the same Message again within this
      time after its first attempt cannot make a second post (an idempotency key,
      a fixed record key), so after an ambiguous failure the daemon retries
      without asking `find_published` first.
    - `replies: bool`: the adapter can publish a message with `reply_to` (first
      comments and live-event threads);
    - `message_problems(text, images, link) -> list[str]`, a classmethod: all that
      the network would refuse in a message (text, images), for `oyez validate`.
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


def message_problems(adapter: type[Adapter], message: Message) -> list[str]:
    """What the adapter says its network would refuse in `message`: its `message_problems`,
    else its `text_problem`, else its `max_chars` (characters as Python counts them)."""
    problems = getattr(adapter, "message_problems", None)
    if callable(problems):
        return list(problems(message.text, message.all_images, message.link))
    check = getattr(adapter, "text_problem", None)
    if callable(check):
        problem = check(message)
        return [] if problem is None else [str(problem)]
    limit = getattr(adapter, "max_chars", None)
    if isinstance(limit, int) and len(message.text) > limit:
        return [f"{len(message.text):,} characters, over the limit of {limit:,}"]
    return []


def idempotent_for(adapter: Adapter) -> timedelta:
    """How long after a first attempt the adapter's publish is safe to repeat (0 if never)."""
    window = getattr(adapter, "idempotent_for", None)
    return window if isinstance(window, timedelta) else timedelta(0)


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
