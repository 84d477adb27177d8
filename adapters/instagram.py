"""Instagram adapter (professional account): a media container, then media_publish.

What differs from the rest of the Graph family: an image is required (a carousel
for several), the container's status is `status_code`, captions have limits on
length, hashtags and mentions, and the publishing quota (50 posts a rolling
24 hours) is read from `content_publishing_limit`.
"""

from __future__ import annotations

import re
from typing import ClassVar

from scheduler.secrets import redact

from .base import AdapterSettings, AuthError, Message, PermanentError
from .graph import ContainerApi, ContainerPublisher, GraphSettings

MAX_CAPTION = 2200
MAX_HASHTAGS = 30
MAX_MENTIONS = 20
MAX_IMAGES = 10  # children of one carousel
_HASHTAG = re.compile(r"(?<!\w)#\w+")
_MENTION = re.compile(r"(?<!\w)@[\w.]+")


class InstagramSettings(GraphSettings):
    """jobs.yaml settings for `adapter: instagram`."""

    ig_user_id: str


class Instagram(ContainerPublisher):
    """Publishes to one Instagram professional account."""

    Settings: ClassVar[type[AdapterSettings]] = InstagramSettings
    API: ClassVar[ContainerApi] = ContainerApi("media", "media_publish", "status_code", "status",
                                                "content_publishing_limit", 50)
    LISTING_FIELDS: ClassVar[tuple[str, str, str]] = ("caption", "timestamp", "permalink")
    ACCOUNT: ClassVar[tuple[str, str]] = ("ig_user_id", "instagram")
    URL_ENV: ClassVar[str] = "IG_GRAPH_URL"
    VERSION_ENV: ClassVar[str] = "IG_GRAPH_VERSION"
    replies: ClassVar[bool] = False

    @classmethod
    def message_problems(cls, text: str, images: tuple[str, ...], link: str | None) -> list[str]:
        """Why Instagram would refuse this message (checked by `oyez validate`)."""
        problems = []
        if not images:
            problems.append("an Instagram post needs an image (image: or images:)")
        if len(images) > MAX_IMAGES:
            problems.append(f"an Instagram carousel takes at most {MAX_IMAGES} images, got {len(images)}")
        if len(text) > MAX_CAPTION:
            problems.append(f"{len(text)} characters, over Instagram's {MAX_CAPTION} for a caption")
        counted = ((_HASHTAG, MAX_HASHTAGS, "hashtags"), (_MENTION, MAX_MENTIONS, "@mentions"))
        for pattern, most, what in counted:
            if (count := len(pattern.findall(text))) > most:
                problems.append(f"{count} {what}, over Instagram's {most}")
        return problems

    def containers(self, message: Message) -> dict[str, str]:
        """One image container, or a carousel whose children are made (once) here."""
        images = message.all_images
        if not images:
            raise PermanentError(f"{self.who}: a post without an image cannot go to Instagram")
        if len(images) == 1:
            return {"image_url": images[0], "caption": message.text}
        children = self.created_once(message, "child", f"/{self.account}/media",
                                     [{"image_url": url, "is_carousel_item": "true"} for url in images])
        return {"media_type": "CAROUSEL", "children": ",".join(children), "caption": message.text}

    def check(self) -> str:
        """Return the account's username as the token sees it."""
        body = self.call("GET", f"/{self.account}", params={"fields": "id,username"}).body
        if str(body.get("id")) != self.account:
            raise AuthError(f"{self.who}: the access token reads another account "
                            f"({redact(str(body.get('id')))[:40]})")
        return f"@{body.get('username', self.account)}"
