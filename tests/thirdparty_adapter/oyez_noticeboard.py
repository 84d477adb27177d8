"""An oyez adapter outside oyez: appends each post to a notice board file, once per key."""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import datetime, timedelta
from pathlib import Path
from typing import ClassVar

import requests

from adapters.base import AdapterSettings, AuthError, Message, PermanentError, Published

MAX_LENGTH = 140


class NoticeboardSettings(AdapterSettings):
    """`adapter: noticeboard` takes the board's file and who signs the notices."""

    path: str
    signed: str


class Noticeboard:
    """A notice board is a JSON-lines file; a notice is one line."""

    Settings: ClassVar[type[AdapterSettings]] = NoticeboardSettings
    idempotent_for: ClassVar[timedelta] = timedelta(days=36500)  # publish() skips known keys

    def __init__(self, settings: AdapterSettings, http: requests.Session) -> None:
        assert isinstance(settings, NoticeboardSettings)
        self.board = Path(settings.path)
        self.signed = settings.signed

    @staticmethod
    def text_problem(message: Message) -> str | None:
        """Notices fit on a card: at most 140 characters."""
        return f"{len(message.text)} characters, a notice takes {MAX_LENGTH}" \
            if len(message.text) > MAX_LENGTH else None

    def publish(self, message: Message) -> Published:
        """Pin the notice, unless a notice with this key is already up."""
        found = self.find_published(message, datetime.min)
        if found is not None:
            return found
        try:
            with self.board.open("a") as board:
                board.write(json.dumps({"key": message.key, "text": message.text,
                                        "signed": self.signed}) + "\n")
        except OSError as exc:
            raise PermanentError(f"noticeboard {self.board}: {exc.strerror}") from None
        return Published(message.key)

    def find_published(self, message: Message, since: datetime,
                       exclude: Collection[str] = frozenset()) -> Published | None:
        """The notice with this delivery's key, if it is up."""
        if self.board.exists():
            for line in self.board.read_text().splitlines():
                if json.loads(line)["key"] == message.key:
                    return Published(message.key)
        return None

    def check(self) -> str:
        """Who signs the notices, if the board's folder exists."""
        if not self.board.parent.is_dir():
            raise AuthError(f"noticeboard {self.board}: no such folder")
        return f"notices signed {self.signed}"
