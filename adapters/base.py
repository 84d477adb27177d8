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
    "TokenInspector",
    "TokenStatus",
    "TransientError",
    "idempotent_for",
    "text_problem",
]


class AdapterSettings(BaseModel):
    """Base for an adapter's jobs.yaml settings: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Message:
    """What to publish, and which delivery it is.

    Everything after `image` identifies the delivery; the daemon fills it in
    from the ledger (`scheduler.delivery.message_for`), so it is the same on
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
    key: str = ""
    job_id: str = ""
    part: str = ""
    target: str = ""
    due: datetime | None = None
    first_attempt_at: datetime | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


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


def text_problem(adapter: type[Adapter], message: Message) -> str | None:
    """What the adapter says is wrong with `message`'s text: its own `text_problem`, else
    its `max_chars` (characters as Python counts them), else nothing."""
    check = getattr(adapter, "text_problem", None)
    if callable(check):
        return check(message)  # type: ignore[no-any-return]
    limit = getattr(adapter, "max_chars", None)
    if isinstance(limit, int) and len(message.text) > limit:
        return f"{len(message.text):,} characters, over the limit of {limit:,}"
    return None


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
