"""Threads adapter: a container (text or one image), then threads_publish.

What differs from the rest of the Graph family: its own host and version
(graph.threads.net/v1.0), the container's status is `status` (with
`error_message`), replies go through `reply_to_id`, and the 500-character limit
counts an emoji as its UTF-8 bytes.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection
from datetime import datetime
from typing import ClassVar

from scheduler.secrets import redact

from .base import AdapterSettings, AuthError, Message, Published
from .graph import ContainerApi, ContainerPublisher, GraphSettings

MAX_TEXT = 500
MAX_LINKS = 5


def threads_length(text: str) -> int:
    """The length Threads counts: one per character, but an emoji costs its UTF-8 bytes.

    Meta's wording is "emojis are counted as the number of UTF-8 bytes"; which
    characters are emoji is not said, so this counts conservatively: every
    symbol outside the Basic Multilingual Plane, every "other symbol" (So), and
    the joiners and variation selectors that build emoji sequences.
    """
    total = 0
    for char in text:
        emoji = (ord(char) > 0xFFFF or unicodedata.category(char) == "So"
                 or char in "\u200d\ufe0e\ufe0f" or 0x1F3FB <= ord(char) <= 0x1F3FF)
        total += len(char.encode()) if emoji else 1
    return total


class ThreadsSettings(GraphSettings):
    """jobs.yaml settings for `adapter: threads`."""

    user_id: str


class Threads(ContainerPublisher):
    """Publishes to one Threads profile."""

    Settings: ClassVar[type[AdapterSettings]] = ThreadsSettings
    API: ClassVar[ContainerApi] = ContainerApi("threads", "threads_publish", "status", "error_message",
                                                "threads_publishing_limit", 250)
    LISTING_FIELDS: ClassVar[tuple[str, str, str]] = ("text", "timestamp", "permalink")
    DEFAULT_URL: ClassVar[str] = "https://graph.threads.net"
    DEFAULT_VERSION: ClassVar[str] = "v1.0"
    ACCOUNT: ClassVar[tuple[str, str]] = ("user_id", "threads")
    URL_ENV: ClassVar[str] = "THREADS_GRAPH_URL"
    VERSION_ENV: ClassVar[str] = "THREADS_GRAPH_VERSION"
    replies: ClassVar[bool] = True

    @classmethod
    def message_problems(cls, text: str, images: tuple[str, ...], link: str | None) -> list[str]:
        """Why Threads would refuse this message (checked by `oyez validate`)."""
        problems = []
        if (length := threads_length(text)) > MAX_TEXT:
            problems.append(f"{length} characters as Threads counts them (an emoji counts its "
                            f"UTF-8 bytes), over Threads' {MAX_TEXT}")
        if len(images) > 1:
            problems.append(f"this oyez sends one image to Threads, got {len(images)}")
        if (links := text.count("http://") + text.count("https://")) > MAX_LINKS:
            problems.append(f"{links} links, over Threads' {MAX_LINKS}")
        return problems

    def containers(self, message: Message) -> dict[str, str]:
        """A TEXT or IMAGE container, as a reply when the message answers another post."""
        images = message.all_images
        fields = {"media_type": "IMAGE", "image_url": images[0]} if images else {"media_type": "TEXT"}
        fields["text"] = message.text
        if message.reply_to:
            fields["reply_to_id"] = message.reply_to
        return fields

    def find_published(self, message: Message, since: datetime,
                       exclude: Collection[str] = frozenset()) -> Published | None:
        """Page back through the profile's threads (its replies, for a reply) to `since`; the
        earliest with this text wins."""
        edge = "replies" if message.reply_to else "threads"
        return self.find_in(f"/{self.account}/{edge}", self.LISTING_FIELDS, message, since, exclude)

    def check(self) -> str:
        """Return the profile's username as the token sees it."""
        body = self.call("GET", "/me", params={"fields": "id,username"}).body
        if str(body.get("id")) != self.account:
            raise AuthError(f"{self.who}: the access token belongs to another profile "
                            f"({redact(str(body.get('id')))[:40]})")
        return f"@{body.get('username', self.account)}"
