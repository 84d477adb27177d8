"""Instagram adapter (professional account): a media container, then media_publish.

What differs from the rest of the Graph family: an image is required (a carousel
for several), the container's status is `status_code`, captions have limits on
length, hashtags and mentions, and a daily publishing quota is read before a
burst (`content_publishing_limit`) and respected.
"""

from __future__ import annotations

import re
import time
from typing import ClassVar

import requests

from scheduler.secrets import redact

from .base import AdapterSettings, AuthError, Message, TransientError
from .graph import ContainerApi, ContainerPublisher, GraphSettings

MAX_CAPTION = 2200
MAX_HASHTAGS = 30
MAX_MENTIONS = 20
MAX_IMAGES = 10  # children of one carousel
QUOTA_FRESH = 600.0  # seconds a quota reading is trusted (counting our own posts meanwhile)
_HASHTAG = re.compile(r"(?<!\w)#\w+")
_MENTION = re.compile(r"(?<!\w)@[\w.]+")


class InstagramSettings(GraphSettings):
    """jobs.yaml settings for `adapter: instagram`."""

    ig_user_id: str


class Instagram(ContainerPublisher):
    """Publishes to one Instagram professional account."""

    Settings: ClassVar[type[AdapterSettings]] = InstagramSettings
    API: ClassVar[ContainerApi] = ContainerApi("media", "media_publish", "status_code", "status")
    LISTING_FIELDS: ClassVar[tuple[str, str, str]] = ("caption", "timestamp", "permalink")
    ACCOUNT: ClassVar[tuple[str, str]] = ("ig_user_id", "instagram")
    URL_ENV: ClassVar[str] = "IG_GRAPH_URL"
    VERSION_ENV: ClassVar[str] = "IG_GRAPH_VERSION"
    replies: ClassVar[bool] = False

    def __init__(self, settings: AdapterSettings, http: requests.Session) -> None:
        super().__init__(settings, http)
        self._quota: tuple[float, int, int] | None = None  # (read at, used, total)

    @classmethod
    def message_problems(cls, text: str, images: tuple[str, ...], link: str | None) -> list[str]:
        """Why Instagram would refuse this message (checked by `oyez validate`)."""
        problems = []
        if not images:
            problems.append("an Instagram post needs an image (image: or images:)")
        if len(images) > MAX_IMAGES:
            problems.append(f"an Instagram carousel takes at most {MAX_IMAGES} images, got {len(images)}")
        if len(text) > MAX_CAPTION:
            problems.append(f"is {len(text)} characters, over Instagram's {MAX_CAPTION} for a caption")
        counted = ((_HASHTAG, MAX_HASHTAGS, "hashtags"), (_MENTION, MAX_MENTIONS, "@mentions"))
        for pattern, most, what in counted:
            if (count := len(pattern.findall(text))) > most:
                problems.append(f"has {count} {what}, over Instagram's {most}")
        return problems

    def containers(self, message: Message) -> dict[str, str]:
        """One image container, or a carousel whose children are made (once) here."""
        self._respect_quota()
        images = message.all_images
        if not images:
            raise TransientError(f"{self.who}: a post without an image cannot go to Instagram")
        if len(images) == 1:
            return {"image_url": images[0], "caption": message.text}
        children = self.created_once(message, "child", f"/{self.account}/media",
                                     [{"image_url": url, "is_carousel_item": "true"} for url in images])
        return {"media_type": "CAROUSEL", "children": ",".join(children), "caption": message.text}

    def _respect_quota(self) -> None:
        """Read the publishing quota before a burst; refuse (retry after) when it is used up."""
        now = time.monotonic()
        if self._quota is None or now - self._quota[0] > QUOTA_FRESH:
            resp = self.call("GET", f"/{self.account}/content_publishing_limit",
                             params={"fields": "quota_usage,config"})
            data = resp.body.get("data")
            entry = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
            config = entry.get("config")
            config = config if isinstance(config, dict) else {}
            used, total = entry.get("quota_usage"), config.get("quota_total")
            self._quota = (now, used if isinstance(used, int) else 0,
                           total if isinstance(total, int) else 50)
        read_at, used, total = self._quota
        if used >= total:
            raise TransientError(f"{self.who}: publishing quota used up ({used} of {total} posts "
                                 "in 24 hours)", retry_after=600.0)
        self._quota = (read_at, used + 1, total)  # our own post counts until the next reading

    def check(self) -> str:
        """Return the account's username as the token sees it."""
        body = self.call("GET", f"/{self.account}", params={"fields": "id,username"}).body
        if str(body.get("id")) != self.account:
            raise AuthError(f"{self.who}: the access token reads another account "
                            f"({redact(str(body.get('id')))[:40]})")
        return f"@{body.get('username', self.account)}"
