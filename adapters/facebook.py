"""Facebook Page adapter: feed posts, photo posts, albums and comments through the Graph API.

The Page token travels in an `Authorization: Bearer` header, never in a URL.
Errors, usage headers and listings are the Graph family's (adapters/graph.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from datetime import UTC, datetime
from typing import ClassVar

from pydantic import SecretStr

from scheduler import secrets
from scheduler.secrets import redact

from . import graph
from . import http as web
from .base import AdapterSettings, AuthError, Message, Published, TokenStatus, TransientError
from .graph import check_base_url

__all__ = ["FacebookPage", "FacebookPageSettings", "check_base_url"]

MAX_IMAGES = 10  # photos attached to one feed post
MAX_TEXT = 63206  # widely cited, not in Meta's docs; counted in characters
REQUIRED_SCOPES = ("pages_manage_posts",)
CREATED = {"fields": "id,permalink_url"}  # asked with each create call: the answer carries the permalink


class FacebookPageSettings(graph.GraphSettings):
    """jobs.yaml settings for `adapter: facebook_page`."""

    page_id: str


class FacebookPage(graph.GraphClient):
    """Publishes to one Facebook Page."""

    Settings: ClassVar[type[AdapterSettings]] = FacebookPageSettings
    replies: ClassVar[bool] = True
    TOKEN: ClassVar[str] = "Page access token"
    ACCOUNT: ClassVar[tuple[str, str]] = ("page_id", "page")

    @classmethod
    def message_problems(cls, text: str, images: tuple[str, ...], link: str | None) -> list[str]:
        """Why the Page would refuse this message (checked by `oyez validate`)."""
        problems = []
        if len(images) > MAX_IMAGES:
            problems.append(f"a Facebook post takes at most {MAX_IMAGES} images, got {len(images)}")
        if len(text) > MAX_TEXT:
            problems.append(f"{len(text):,} characters, over Facebook's limit of {MAX_TEXT:,}")
        return problems

    def publish(self, message: Message) -> Published:
        """A comment (with `reply_to`), a photo post, an album post, or a feed post."""
        images = message.all_images
        if message.reply_to:
            resp = self.call("POST", f"/{message.reply_to}/comments", params=CREATED,
                             data={"message": message.text})
        elif len(images) == 1 and not message.images:
            resp = self.call("POST", f"/{self.account}/photos",
                             data={"url": images[0], "message": message.text})
            post_id = str(resp.body.get("post_id") or resp.body.get("id") or "")
            return self._published(post_id, f"https://www.facebook.com/{post_id}", resp)
        else:
            fields = {"message": message.text}
            if images:  # unpublished photos are invisible until the post attaches them
                photos = self.created_once(message, "photo", f"/{self.account}/photos",
                                           [{"url": url, "published": "false"} for url in images])
                fields |= {f"attached_media[{i}]": json.dumps({"media_fbid": photo})
                           for i, photo in enumerate(photos)}
            elif message.link:
                fields["link"] = message.link
            resp = self.call("POST", f"/{self.account}/feed", params=CREATED, data=fields)
        remote_id = str(resp.body.get("id") or "")
        url = resp.body.get("permalink_url")
        return self._published(remote_id, url if isinstance(url, str) else
                               f"https://www.facebook.com/{remote_id}", resp)

    def _published(self, remote_id: str, url: str, resp: web.Response) -> Published:
        if not remote_id:
            raise TransientError(f"{self.who}: success without a post id", ambiguous=True)
        return Published(remote_id, url, graph.usage_percent(resp))

    def find_published(self, message: Message, since: datetime,
                       exclude: Collection[str] = frozenset()) -> Published | None:
        """Page back through the page's posts (or the parent's comments) to `since`; the
        earliest with this text wins."""
        where = f"/{message.reply_to}/comments" if message.reply_to else f"/{self.account}/published_posts"
        return self.find_in(where, ("message", "created_time", "permalink_url"), message, since,
                            exclude)

    def check(self) -> str:
        """Return the page's name as the token sees it."""
        resp = self.call("GET", "/me", params={"fields": "id,name"})
        if str(resp.body.get("id")) != self.account:
            raise AuthError(f"page {self.account}: the access token belongs to "
                            f"{redact(str(resp.body.get('id')))[:40]}, not to this page")
        return str(resp.body.get("name", self.account))

    def token_status(self) -> TokenStatus:
        """Ask Graph's debug_token about the Page token: validity, expiry, scopes.

        Asks with the app token `FB_APP_ID|FB_APP_SECRET` when both are set, else
        with the Page token itself. The token to inspect goes in the query string,
        as debug_token requires; it is a registered secret, so it is masked in any
        message.
        """
        app_id, app_secret = os.environ.get("FB_APP_ID"), os.environ.get("FB_APP_SECRET")
        auth = self._auth
        if app_id and app_secret:
            secrets.register(app_secret)
            auth = web.BearerAuth(SecretStr(f"{app_id}|{app_secret}"))
        resp = web.call(self.http, "GET", f"{self.base}/debug_token", timeout=self.timeout,
                        params={"input_token": self._token.get_secret_value()}, auth=auth)
        data = resp.body.get("data") if isinstance(resp.body, dict) else None
        if resp.status >= 400 or not isinstance(data, dict):
            raise graph.graph_error(resp, f"{self.who} debug_token", ambiguous=False)
        if data.get("is_valid") is not True:
            error = data.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            return TokenStatus(False, problem=redact(str(message or "the token is not valid"))[:300])
        expires = data.get("expires_at")
        when = (datetime.fromtimestamp(expires, UTC)
                if isinstance(expires, int) and 0 < expires < 2**40 else None)
        scopes = data.get("scopes")
        scopes = scopes if isinstance(scopes, list) else []
        return TokenStatus(True, when, tuple(s for s in REQUIRED_SCOPES if s not in scopes))
