"""A Standard Webhooks receiver on 127.0.0.1 (network-notes.md §7a).

Every POST is verified with the `standardwebhooks` library's own verifier
(401 if the signature, or the timestamp's 5-minute tolerance, fails); a verified
event is recorded once per `webhook-id`, as a receiver that drops repeats
would, and answered 204. Faults apply before or (with `create`) after recording.
"""

from __future__ import annotations

from typing import Any

import standardwebhooks
from fakenet import FakeServer, Reply, Request


class FakeWebhook(FakeServer):
    """See the module docstring."""

    name = "fakewebhook"

    def __init__(self, secret: str, seed: int = 0) -> None:
        super().__init__(seed)
        self.verifier = standardwebhooks.Webhook(secret)
        self.events: dict[str, Any] = {}  # webhook-id -> verified payload, first delivery
        self.repeats = 0  # verified deliveries of an id already seen

    def route(self, request: Request) -> Reply:
        try:
            payload = self.verifier.verify(request.body, request.headers)
        except standardwebhooks.WebhookVerificationError as exc:
            return Reply(401, {"error": str(exc)})
        with self.lock:
            if request.headers["webhook-id"] in self.events:
                self.repeats += 1
            else:
                self.events[request.headers["webhook-id"]] = payload
                self.lock.notify_all()
        return Reply(204)

    def texts(self) -> list[str]:
        """The text of every distinct post event received."""
        with self.lock:
            return [e["data"]["text"] for e in self.events.values() if e["type"] == "post.published"]
