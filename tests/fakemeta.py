"""Fake Instagram and Threads publishing APIs: real HTTP servers on 127.0.0.1.

They follow the wire formats in /work/shared/network-notes.md (sections 1 and 2)
and share FakeGraph's server, token checks, faults, error bodies and usage
headers. What differs between the two is what the real services differ in:

- Instagram (graph.facebook.com/v25.0): `POST /{ig-user}/media` (image_url,
  caption; is_carousel_item; media_type=CAROUSEL + children), container status in
  `status_code`, `POST /{ig-user}/media_publish`, `GET /{ig-user}/media`,
  `GET /{ig-user}/content_publishing_limit`, quota error code 9 / 2207042.
- Threads (graph.threads.net/v1.0): `POST /{user}/threads` (media_type TEXT or
  IMAGE, text, image_url, reply_to_id), container status in `status` with
  `error_message`, `POST /{user}/threads_publish`, `GET /{user}/threads` (posts)
  and `/{user}/replies`, `GET /me`.

A container is IN_PROGRESS for its first `ready_after` status reads, and while
`hold` is set; `fail_containers(reason)` makes new ones end in ERROR.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from fakegraph import FakeGraph, JsonDict, Post, _error, _graph_time, _Reply

Kind = Literal["instagram", "threads"]
NOT_READY = (9007, 2207027, "(#9007) The media is not ready for publishing, please wait for a moment")
QUOTA_HIT = (9, 2207042, "(#9) Application request limit reached: you reached the maximum number "
             "of posts allowed by the Content Publishing API")


@dataclass
class Container:
    """A media container, as created (fields) and as it stands (status, reads, media id)."""

    id: str
    user: str
    fields: dict[str, str]
    created: float = field(default_factory=time.time)
    status: str = "IN_PROGRESS"
    reads: int = 0
    error: str | None = None
    media_id: str | None = None


class FakeMeta(FakeGraph):
    """A fake Instagram or Threads API; `users` maps user id -> its valid token."""

    def __init__(self, kind: Kind, users: dict[str, str], **kwargs: Any) -> None:
        kwargs.setdefault("version", "v25.0" if kind == "instagram" else "v1.0")
        super().__init__(users, **kwargs)
        self.kind = kind
        self.containers: dict[str, Container] = {}
        self.ready_after = 0  # status reads answered IN_PROGRESS before FINISHED
        self.hold = False  # keep every container IN_PROGRESS until cleared
        self.quota_total = 50 if kind == "instagram" else 250
        self.quota_used = 0  # posts published in the rolling 24 hours before this fake started
        self._failing: str | None = None

    @property
    def status_field(self) -> str:
        """Where a container's status is: `status_code` on Instagram, `status` on Threads."""
        return "status_code" if self.kind == "instagram" else "status"

    @property
    def create_edge(self) -> str:
        return "media" if self.kind == "instagram" else "threads"

    def fail_containers(self, reason: str | None) -> None:
        """New containers end in ERROR with this reason (None: they finish normally)."""
        with self._cond:
            self._failing = reason

    def published(self) -> list[Post]:
        """Published posts and replies (carousel children are not posts), oldest first."""
        with self._cond:
            return list(self.posts)

    # -- routes ----------------------------------------------------------------------

    def _route(self, method: str, segments: list[str], params: dict[str, str],
               token: str | None) -> _Reply:
        if segments == ["me"] and method == "GET" and self.kind == "threads":
            user = self._page_for_token(token)
            return _error(400, 190, "Error validating access token") if user is None else \
                _Reply(200, {"id": user, "username": f"fake_{user}"})
        if len(segments) == 1 and method == "GET":
            return self._node(segments[0], params, token)
        if len(segments) == 2:
            user, edge = segments
            endpoints = {
                ("POST", self.create_edge): self._create,
                ("POST", "media_publish" if self.kind == "instagram" else "threads_publish"): self._publish,
                ("GET", self.create_edge): self._list,
                ("GET", "replies"): self._list,
                ("GET", "content_publishing_limit" if self.kind == "instagram"
                 else "threads_publishing_limit"): self._limit,
            }
            endpoint = endpoints.get((method, edge))
            if endpoint is not None and not (edge == "replies" and self.kind == "instagram"):
                return self._check_auth(user, token, method) or endpoint(user, {**params, "edge": edge})
        return _error(400, 100, f"(#100) Unsupported {method.lower()} request to "
                      f"/{'/'.join(segments)}", kind="GraphMethodException")

    def _node(self, ident: str, params: dict[str, str], token: str | None) -> _Reply:
        """GET /{container-id}, /{media-id} or /{ig-user-id}."""
        with self._cond:
            container = self.containers.get(ident)
            media = next((p for p in self.posts if p.id == ident), None)
            owner = container.user if container else media.page_id if media else ident
        denied = self._check_auth(owner, token, "GET")
        if denied is not None:
            return denied
        wanted = params.get("fields", "id").split(",")
        if container is not None:
            with self._cond:
                status = self._advance(container)
            values: JsonDict = {"id": ident, self.status_field: status}
            if self.kind == "threads" and status == "ERROR":
                values["error_message"] = container.error
            if self.kind == "instagram" and "status" in wanted:  # IG's prose status
                values["status"] = f"{status.title()}: {container.error or 'ok'}"
            return _Reply(200, {k: v for k, v in values.items() if k in wanted or k == "id"})
        if media is not None:
            return _Reply(200, {k: v for k, v in self._media_json(media, wanted).items()
                                if k in wanted or k == "id"})
        if self.kind == "instagram":  # the IG user node
            return _Reply(200, {"id": ident, "username": f"fake_{ident}"})
        return _error(400, 100, f"(#100) Object with ID '{ident}' does not exist", subcode=33)

    def _advance(self, container: Container) -> str:
        """A status read: IN_PROGRESS for `ready_after` reads (or while held), then FINISHED."""
        container.reads += 1
        if container.status == "IN_PROGRESS" and not self.hold and container.reads > self.ready_after:
            container.status = "ERROR" if container.error else "FINISHED"
        return container.status

    def _create(self, user: str, params: dict[str, str]) -> _Reply:
        fields = {k: v for k, v in params.items() if k not in ("edge", "fields")}
        problem = self._invalid(user, fields)
        if problem is not None:
            return problem
        with self._cond:
            container = Container(str(self._new_number()), user, fields, error=self._failing)
            self.containers[container.id] = container
        return _Reply(200, {"id": container.id})

    def _invalid(self, user: str, fields: dict[str, str]) -> _Reply | None:
        """Why the real service would refuse to create this container, as its error body."""
        if self.kind == "instagram":
            if fields.get("media_type") == "CAROUSEL":
                children = fields.get("children", "").split(",")
                with self._cond:
                    bad = [c for c in children if c not in self.containers
                           or self.containers[c].fields.get("is_carousel_item") != "true"]
                if bad or not 2 <= len(children) <= 10:
                    return _error(400, 100, f"(#100) Invalid children: {','.join(bad) or len(children)}")
            elif not fields.get("image_url"):
                return _error(400, 100, "(#100) The parameter image_url is required.")
            if len(fields.get("caption", "")) > 2200:
                return _error(400, 100, "(#100) The caption is too long", subcode=2207010)
            return None
        media_type = fields.get("media_type")
        if media_type not in ("TEXT", "IMAGE"):
            return _error(400, 100, "(#100) Param media_type must be one of {TEXT, IMAGE, VIDEO, "
                          "CAROUSEL}")
        if media_type == "TEXT" and not fields.get("text"):
            return _error(400, 100, "(#100) Param text is required for TEXT posts")
        if media_type == "IMAGE" and not fields.get("image_url"):
            return _error(400, 100, "(#100) Param image_url is required for IMAGE posts")
        if len(fields.get("text", "")) > 500:
            return _error(400, 100, "(#100) Param text must be at most 500 characters long")
        reply_to = fields.get("reply_to_id")
        with self._cond:
            if reply_to is not None and not any(p.id == reply_to for p in self.posts):
                return _error(400, 100, f"(#100) reply_to_id {reply_to} does not exist", subcode=33)
        return None

    def _publish(self, user: str, params: dict[str, str]) -> _Reply:
        with self._cond:
            container = self.containers.get(params.get("creation_id", ""))
            if container is None or container.user != user:
                return _error(400, 100, "(#100) Invalid parameter: creation_id", subcode=33)
            if container.status != "FINISHED":
                code, subcode, message = NOT_READY
                return _error(400, code, message, subcode=subcode)
            day_ago = time.time() - 86400
            if self.quota_used + sum(1 for p in self.posts if p.page_id == user
                                     and p.parent is None and p.created_time > day_ago) >= self.quota_total:
                code, subcode, message = QUOTA_HIT
                return _error(400, code, message, subcode=subcode)
            fields = container.fields
            text = fields.get("caption" if self.kind == "instagram" else "text", "")
            number = self._new_number()
            images = [self.containers[c].fields["image_url"] for c in fields.get("children", "").split(",")
                      if c] or [fields.get("image_url", "")]
            post = Post(str(number), user, text, None, ",".join(i for i in images if i) or None,
                        time.time(), None, parent=fields.get("reply_to_id"))
            container.status, container.media_id = "PUBLISHED", post.id
            self.posts.append(post)
            self._cond.notify_all()
        return _Reply(200, {"id": post.id})

    def _list(self, user: str, params: dict[str, str]) -> _Reply:
        replies = params["edge"] == "replies"
        with self._cond:
            mine = [p for p in reversed(self.posts)
                    if p.page_id == user and (p.parent is not None) == replies]
        return self._listing(mine, params, f"{user}/{params['edge']}", self._media_json)

    def _limit(self, user: str, params: dict[str, str]) -> _Reply:
        day_ago = time.time() - 86400
        with self._cond:
            used = self.quota_used + sum(1 for p in self.posts if p.page_id == user
                                         and p.parent is None and p.created_time > day_ago)
        return _Reply(200, {"data": [{"quota_usage": used, "config": {
            "quota_total": self.quota_total, "quota_duration": 86400}}]})

    def _media_json(self, post: Post, wanted: list[str]) -> JsonDict:
        host = "https://www.instagram.com/p" if self.kind == "instagram" else \
            f"https://www.threads.net/@fake_{post.page_id}/post"
        values = {"id": post.id, "timestamp": _graph_time(post.created_time),
                  "caption" if self.kind == "instagram" else "text": post.message,
                  "permalink": f"{host}/C{post.id[-8:]}/", "media_type": "IMAGE" if post.image else "TEXT"}
        return {k: v for k, v in values.items() if k in wanted}
