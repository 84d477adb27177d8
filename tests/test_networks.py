"""The Mastodon, Bluesky and webhook adapters against fakes of their services on 127.0.0.1."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import standardwebhooks
from conftest import BSKY_PASSWORD, MASTO_TOKEN, SECRET, occurrence
from fakebluesky import TID, FakeBluesky
from fakemastodon import FakeMastodon
from fakenet import Fault
from fakewebhook import FakeWebhook
from pydantic import SecretStr

from adapters import http as web
from adapters.base import Message
from adapters.bluesky import Bluesky, BlueskySettings, record_key, tid
from adapters.mastodon import Mastodon, MastodonSettings
from adapters.webhook import Webhook, WebhookSettings
from scheduler.delivery import message_for
from scheduler.errors import AuthError, PermanentError, TransientError
from scheduler.ledger import Ledger

FIRST = datetime(2026, 11, 28, 17, 0, 0, 123456, tzinfo=UTC)
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


def msg(text: str = "hello", key: str = "post:a:t", **kw: object) -> Message:
    return Message(text, key=key, job_id="a", part="post", target="t", due=FIRST,
                   first_attempt_at=FIRST, **kw)  # type: ignore[arg-type]


def mastodon(fake: FakeMastodon, token: str = MASTO_TOKEN) -> Mastodon:
    return Mastodon(MastodonSettings(instance_url=fake.url, access_token=SecretStr(token)), web.session())


def bluesky(fake: FakeBluesky, password: str = BSKY_PASSWORD) -> Bluesky:
    return Bluesky(BlueskySettings(handle="police.example.org", app_password=SecretStr(password),
                                   service_url=fake.url), web.session())


def test_the_ledger_keeps_options_and_the_message_names_its_delivery(ledger: Ledger) -> None:
    due, until = datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 1, 2, tzinfo=UTC)
    occ = replace(occurrence("post:a:page", due), options='{"visibility": "public"}')
    ledger.sync([occ], until, dry_run=False, now=due - timedelta(hours=1))
    occ = replace(occ, options='{"visibility": "unlisted"}')
    assert ledger.sync([occ], until, dry_run=False, now=due - timedelta(hours=1)).changed == ["post:a:page"]
    row = ledger.claim(ledger.deliveries(dry_run=False)[0].id or 0, "n", due, timedelta(minutes=5))
    assert row is not None
    message = message_for(row)
    assert (message.key, message.job_id, message.part, message.target, message.due) == (
        "post:a:page", "a", "post", "page", due)
    assert message.first_attempt_at == due and message.options == {"visibility": "unlisted"}


# -- Mastodon ---------------------------------------------------------------------------

def test_mastodon_posts_with_options_and_the_same_key_never_twice(masto: FakeMastodon) -> None:
    adapter = mastodon(masto)
    options = {"visibility": "unlisted", "spoiler_text": "Road closure"}
    first = adapter.publish(msg("Bridge closed", link="https://example.org/x", options=options))
    again = adapter.publish(msg("Bridge closed", link="https://example.org/x", options=options))
    assert first.remote_id == again.remote_id and len(masto.statuses) == 1
    [status] = masto.statuses
    assert (status.text, status.visibility, status.spoiler_text) == (
        "Bridge closed\n\nhttps://example.org/x", "unlisted", "Road closure")
    adapter.publish(msg("Bridge closed", key="post:b:t"))  # another delivery: another status
    assert len(masto.statuses) == 2
    keys = {r.headers["idempotency-key"] for r in masto.requests_to("/api/v1/statuses", "POST")}
    assert len(keys) == 2 and MASTO_TOKEN not in str(keys)
    assert first.usage is not None and 0 < first.usage < 5


def test_mastodon_timeout_after_creating_then_retry_returns_the_original(masto: FakeMastodon) -> None:
    masto.fail_next(Fault.timeout(3, create=True))
    adapter = mastodon(masto)
    adapter.timeout = 1
    with pytest.raises(TransientError) as info:
        adapter.publish(msg())
    assert info.value.ambiguous
    adapter.publish(msg())
    assert masto.texts() == ["hello"]


def test_mastodon_image_waits_for_processing_with_alt(masto: FakeMastodon) -> None:
    masto.media_polls = 3
    image = masto.serve_file("/img/a.png", PNG)
    mastodon(masto).publish(msg(image=image, options={"alt": "A closed bridge"}))
    [status] = masto.statuses
    assert status.media[0]["description"] == "A closed bridge"
    assert len(masto.requests_to("/api/v1/media/", "GET")) == 3


def test_mastodon_errors_by_status(masto: FakeMastodon) -> None:
    with pytest.raises(AuthError, match="new access token"):
        mastodon(masto, "wrong").publish(msg())
    masto.fail_next(Fault.answer(429, {"error": "Too many requests"}, X_RateLimit_Reset=(
        datetime.now(UTC) + timedelta(seconds=120)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")))
    with pytest.raises(TransientError) as info:
        mastodon(masto).publish(msg())
    assert info.value.retry_after is not None and 100 < info.value.retry_after <= 122  # whole-second Date
    assert not info.value.ambiguous
    with pytest.raises(PermanentError, match="character limit"):
        mastodon(masto).publish(msg("x" * 501))


def test_mastodon_check_names_the_account_and_limit(masto: FakeMastodon) -> None:
    masto.max_characters = 5000
    assert mastodon(masto).check() == "@police@127.0.0.1 (statuses up to 5000 characters)"


def test_mastodon_find_published_by_source_text(masto: FakeMastodon) -> None:
    adapter = mastodon(masto)
    posted = adapter.publish(msg("exact words"))
    since = datetime.now(UTC) - timedelta(minutes=5)
    found = adapter.find_published(msg("exact words"), since)
    assert found is not None and (found.remote_id, found.url) == (posted.remote_id, posted.url)
    assert adapter.find_published(msg("other words"), since) is None


@pytest.mark.parametrize(("text", "problem"), [
    ("x" * 500, None),
    ("x" * 501, "501 characters"),
    ("👍🏽" * 500, None),  # one grapheme each, though two code points
    ("x" * 476 + " https://example.org/" + "a" * 200, None),  # the URL counts 23
    ("x" * 477 + " https://example.org/" + "a" * 200, "501 characters"),
])
def test_mastodon_length_as_the_server_counts(text: str, problem: str | None) -> None:
    got = Mastodon.text_problem(Message(text))
    assert got is None if problem is None else got is not None and problem in got


# -- Bluesky ----------------------------------------------------------------------------

def test_record_key_is_a_tid_fixed_by_the_first_attempt_and_key() -> None:
    key = record_key(msg())
    assert TID.match(key) and key == record_key(msg("edited text"))
    assert key != record_key(msg(key="post:b:t"))
    later = Message("hello", key="post:a:t", first_attempt_at=FIRST + timedelta(microseconds=1))
    assert record_key(later) > key  # sortable by time
    assert tid(0, 0) == "2222222222222" and tid(2**53 - 1, 1023) == "bzzzzzzzzzzzz"


def test_bluesky_one_login_for_many_posts_and_a_retry_writes_the_same_record(bsky: FakeBluesky) -> None:
    adapter = bluesky(bsky)
    first = adapter.publish(msg("one"))
    adapter.publish(msg("two", key="post:b:t"))
    assert bsky.logins == 1 and len(bsky.records) == 2
    bsky.fail_next(Fault.timeout(3, create=True))
    adapter.timeout = 1
    with pytest.raises(TransientError):
        adapter.publish(msg("three", key="post:c:t"))
    again = adapter.publish(msg("three", key="post:c:t"))
    assert sorted(bsky.texts()) == ["one", "three", "two"]
    assert again.remote_id.endswith(record_key(msg(key="post:c:t")))
    assert adapter.find_published(msg("one"), FIRST) == first
    assert adapter.find_published(msg("never", key="post:z:t"), FIRST) is None
    assert bsky.logins == 1


def test_bluesky_pds_refuses_a_second_create_under_the_same_rkey(bsky: FakeBluesky) -> None:
    adapter = bluesky(bsky)
    adapter.publish(msg())
    did, token = adapter._did(), adapter._fresh_session()
    body = {"repo": did, "collection": "app.bsky.feed.post", "rkey": record_key(msg()),
            "record": {"$type": "app.bsky.feed.post", "text": "dup", "createdAt": "2026-11-28T17:00:00Z"}}
    resp = web.call(web.session(), "POST", f"{bsky.url}/xrpc/com.atproto.repo.createRecord", timeout=5,
                    json_body=body, auth=web.BearerAuth(SecretStr(token)))
    assert resp.status == 500 and bsky.texts() == ["hello"]


def test_bluesky_expired_token_is_refreshed_and_the_call_repeated_once(bsky: FakeBluesky) -> None:
    adapter = bluesky(bsky)
    adapter.publish(msg("before"))
    bsky.expire_all()
    adapter.publish(msg("after", key="post:b:t"))
    assert bsky.logins == 1 and bsky.refreshes == 1
    assert [r.status for r in bsky.received if r.path.endswith("putRecord")] == [200, 400, 200]
    with pytest.raises(AuthError, match="new app password"):
        bluesky(bsky, "wrong").publish(msg())


def test_bluesky_facets_use_utf8_byte_offsets_and_embeds(bsky: FakeBluesky) -> None:
    adapter = bluesky(bsky)
    text = "Café ☕ news: https://example.org/a, ask @police.example.org!"
    image = bsky.serve_file("/img/a.png", PNG)
    adapter.publish(msg(text, link="https://example.org/a", image=image,
                        options={"event": {"title": "Live chat"}}))
    adapter.publish(msg("photo", key="post:b:t", image=image, options={"alt": "A bridge"}))
    [linked, photo] = sorted(bsky.records.values(), key=lambda r: r["text"] != text)
    raw = text.encode()
    spans = [raw[f["index"]["byteStart"]:f["index"]["byteEnd"]].decode() for f in linked["facets"]]
    assert spans == ["https://example.org/a", "@police.example.org"]
    assert linked["facets"][1]["features"][0]["did"] == bsky.did("police.example.org")
    external = linked["embed"]["external"]
    assert external["title"] == "Live chat" and external["thumb"]["size"] == len(PNG)
    assert photo["embed"]["images"][0]["alt"] == "A bridge"


@pytest.mark.parametrize(("text", "ok"), [("x" * 300, True), ("x" * 301, False),
                                          ("👨‍👩‍👧" * 300, False),  # 300 graphemes, 5400 bytes
                                          ("👍" * 300, True)])
def test_bluesky_length_graphemes_and_bytes(text: str, ok: bool) -> None:
    assert (Bluesky.text_problem(Message(text)) is None) == ok


def test_bluesky_check_logs_in(bsky: FakeBluesky) -> None:
    assert bluesky(bsky).check() == f"@police.example.org ({bsky.did('police.example.org')})"


# -- webhook ----------------------------------------------------------------------------

def webhook(fake: FakeWebhook, secret: str = SECRET) -> Webhook:
    return Webhook(WebhookSettings(url=fake.url + "/hooks/oyez", secret=SecretStr(secret)), web.session())


def test_webhook_signed_with_the_ledger_key_as_id(hook: FakeWebhook) -> None:
    event = {"id": "chat", "title": "Live chat", "starts": "2026-11-28T18:00:00Z",
             "ends": "2026-11-28T19:00:00Z", "link": None}
    webhook(hook).publish(msg("We're live", key="live:chat:start:x:t", options={"event": event}))
    [request] = hook.received
    assert request.headers["webhook-id"] == "live:chat:start:x:t"
    payload = standardwebhooks.Webhook(SECRET).verify(request.body, request.headers)  # the library's own
    assert payload["type"] == "post.published"
    assert payload["data"]["text"] == "We're live" and payload["data"]["event"] == event
    assert payload["data"]["due"] == "2026-11-28T17:00:00.123Z"
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook("whsec_" + base64.b64encode(b"x" * 32).decode()).verify(
            request.body, request.headers)


def test_webhook_status_codes(hook: FakeWebhook) -> None:
    adapter = webhook(hook)
    hook.fail_next(Fault.answer(410), Fault.answer(429, Retry_After="7"), Fault.http_500(create=True))
    with pytest.raises(PermanentError, match="gone"):
        adapter.publish(msg())
    with pytest.raises(TransientError) as info:
        adapter.publish(msg())
    assert info.value.retry_after == 7
    with pytest.raises(TransientError):
        adapter.publish(msg())
    adapter.publish(msg())  # the retry: the receiver drops it as a repeat
    assert hook.texts() == ["hello"] and hook.repeats == 1
    with pytest.raises(AuthError, match="signature"):
        webhook(hook, "whsec_" + base64.b64encode(b"y" * 32).decode()).publish(msg())


def test_webhook_check_sends_a_signed_ping(hook: FakeWebhook) -> None:
    assert "accepted a signed ping (HTTP 204)" in webhook(hook).check()
    assert json.loads(hook.received[0].body)["type"] == "oyez.ping"


def test_bluesky_never_overwrites_another_post_under_its_rkey(bsky: FakeBluesky) -> None:
    adapter = bluesky(bsky)
    adapter.publish(msg("first"))
    with pytest.raises(PermanentError, match="already holds another post"):
        adapter.publish(msg("a different post that drew the same key"))
    assert bsky.texts() == ["first"]


@pytest.mark.parametrize("network", ["mastodon", "bluesky"])
def test_unreadable_success_is_ambiguous_and_the_retry_is_still_one_post(
        network: str, masto: FakeMastodon, bsky: FakeBluesky) -> None:
    fake, adapter = (masto, mastodon(masto)) if network == "mastodon" else (bsky, bluesky(bsky))
    fake.fail_next(Fault("status", create=True, status=200, body=None))  # created; the answer is empty
    with pytest.raises(TransientError) as info:
        adapter.publish(msg())
    assert info.value.ambiguous
    adapter.publish(msg())
    assert fake.texts() == ["hello"]  # type: ignore[attr-defined]
