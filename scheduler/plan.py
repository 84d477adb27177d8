"""Planning: a pure function from (config, time window) to the occurrences due in it.

Each occurrence carries its ledger key, which is what makes double publishing
impossible:
- one-off post:      post:{id}:{target}                 (moving it after it went out won't resend)
- recurring post:    cron:{id}:{target}:{instant}
- live event's post: live:{id}:{part}:{starts}:{target} (moving the event gives fresh reminders)
- a post's first comment: its parent's key + ":first-comment"

A first comment, and each post of a live event in a thread after the first,
names its parent's key: it goes out as a comment or reply under that post.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from . import templates, times
from .config import Config, LiveEvent, Post

LOOKBACK = timedelta(days=1)
MAX_AHEAD = 120  # about this many fires of a frequent recurring rule are kept in the ledger ahead
MIN_AHEAD = timedelta(hours=2)  # the ledger always reaches at least this far ahead
REFRESH = timedelta(minutes=10)  # how often the daemon rolls the window forward


@dataclass(frozen=True, slots=True)  # thousands of them: no __dict__ each
class Occurrence:
    """One message to one target at one instant."""

    key: str
    job_id: str
    part: str
    target: str
    due: datetime  # aware UTC
    deadline: datetime  # aware UTC; sending at or after this is too late
    text: str
    link: str | None
    image: str | None
    draft: bool
    tz_name: str
    options: str | None = None  # JSON object of network options and event fields, as the ledger keeps it
    images: tuple[str, ...] = ()  # every image, when the post has several (`image` is the first)
    parent: str | None = None  # key of the occurrence this one is a comment or reply under

    @property
    def local_due(self) -> datetime:
        """The due time on the wall clock of the job's time zone."""
        return self.due.astimezone(times.zone(self.tz_name))


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expand(config: Config, start: datetime, end: datetime) -> list[Occurrence]:
    """Every occurrence due in [start, end), by due time (then file order)."""
    found: list[Occurrence] = []
    for post in config.posts:
        found.extend(_post(post, start, end))
    for event in config.live_events:
        found.extend(_live(event, start, end))
    found.sort(key=lambda o: o.due)  # stable: posts due at the same moment keep file order
    return found


def count(config: Config, start: datetime, end: datetime) -> int:
    """How many occurrences `expand` lists in [start, end), drafts left out, without making them."""
    found = 0
    for post in config.posts:
        if not post.draft:
            per_fire = len(post.targets) * (1 if post.first_comment is None else 2)
            found += len(_post_dues(post, start, end)) * per_fire
    for event in config.live_events:
        if not event.draft:
            found += sum(start <= due < end for _, due, _, _ in _live_parts(event)) * len(event.targets)
    return found


def _post_dues(post: Post, start: datetime, end: datetime) -> list[tuple[datetime, str | None]]:
    """When `post` falls due in [start, end), each with its stamp (None for a one-off post)."""
    if post.at is not None:
        return [(post.at, None)] if start <= post.at < end else []
    assert post.cron is not None
    stop = min(end, post.until) if post.until else end
    begin = max(start, post.start) if post.start else start
    return [(t, _stamp(t)) for t in times.fire_times(post.cron, begin, stop)]


def _post(post: Post, start: datetime, end: datetime) -> list[Occurrence]:
    dues = _post_dues(post, start, end)
    if not dues:
        return []
    options = _options(dict(post.options))
    found = []
    for due, stamp in dues:
        for target in post.targets:
            key = f"post:{post.id}:{target}" if stamp is None else f"cron:{post.id}:{target}:{stamp}"
            found.append(Occurrence(
                key=key, job_id=post.id, part="post", target=target, due=due,
                deadline=due + post.grace, text=post.texts.get(target, post.message),
                link=post.link, image=post.image, draft=post.draft, tz_name=post.tz.key,
                options=options, images=post.images))
            if post.first_comment is not None:  # given the parent's grace again, after it
                found.append(Occurrence(
                    key=f"{key}:first-comment", job_id=post.id, part="first-comment",
                    target=target, due=due, deadline=due + 2 * post.grace,
                    text=post.first_comment, link=None, image=None, draft=post.draft,
                    tz_name=post.tz.key, parent=key))
    return found


def _live_parts(event: LiveEvent) -> list[tuple[str, datetime, datetime, str]]:
    """Each post of a live event: (part, due, deadline, template)."""
    parts: list[tuple[str, datetime, datetime, str]] = [
        # a reminder is never sent at or after the start
        (r.part, due, min(due + event.grace, event.starts), r.message)
        for r in event.reminders
        for due in [r.due(event.starts, event.tz)]
    ]
    if event.on_start is not None:  # "we're live" is pointless once the event has ended
        parts.append(("start", event.starts, min(event.starts + event.grace, event.ends),
                      event.on_start))
    if event.on_end is not None:
        parts.append(("end", event.ends, event.ends + event.grace, event.on_end))
    return parts


def _live(event: LiveEvent, start: datetime, end: datetime) -> list[Occurrence]:
    parts = _live_parts(event)
    if not any(start <= due < end for _, due, _, _ in parts):  # most events, in a window of days
        return []
    values = event.values()
    stamp = _stamp(event.starts)
    options = _options({"event": {"id": event.id, "title": event.title, "starts": _stamp(event.starts),
                                  "ends": _stamp(event.ends), "link": event.link}})
    first = min(parts, key=lambda p: p[1])[0] if parts else ""  # the thread's first post

    def key(part: str, target: str) -> str:
        return f"live:{event.id}:{part}:{stamp}:{target}"

    return [
        Occurrence(
            key=key(part, target), job_id=event.id, part=part,
            target=target, due=due, deadline=deadline, text=templates.render(template, values),
            link=event.link, image=event.image, draft=event.draft, tz_name=event.tz.key,
            options=options,
            parent=key(first, target) if target in event.threaded and part != first else None,
        )
        for part, due, deadline, template in parts
        if start <= due < end
        for target in event.targets
    ]


def _options(values: dict[str, object]) -> str | None:
    return json.dumps(values, sort_keys=True, ensure_ascii=False) if values else None


def ledger_window(config: Config, now: datetime, ahead: timedelta) -> tuple[datetime, datetime]:
    """The [start, end) window the daemon keeps in its ledger.

    It reaches back a day (or the longest grace, if longer) so that posts
    added while the daemon was down are still sent late or recorded missed.
    It reaches `ahead`, but a recurring rule that fires more than once a day
    brings the end closer: to about MAX_AHEAD of its fires, never less than
    MIN_AHEAD, so that an every-minute rule does not fill the ledger (and
    every reload) with ten thousand rows a week. The daemon rolls the window
    forward every REFRESH, well inside MIN_AHEAD.
    """
    end = now + ahead
    for post in config.posts:
        if post.cron is None or post.draft or not _more_than_daily(post.cron_text or ""):
            continue
        first = post.cron.get_next_fire_time(None, now)
        second = first and post.cron.get_next_fire_time(first, first)
        if first is not None and second is not None:
            end = min(end, max(now + MIN_AHEAD, first + (second - first) * MAX_AHEAD))
    return now - max(LOOKBACK, longest_grace(config)), end


MAX_CHANGED = 500  # past this many changed entries a reload syncs the whole ledger window


def changed_jobs(old: Config, new: Config) -> set[str] | None:
    """Ids of the entries a reload from `old` to `new` changed, added or removed, or None
    when the ledger window must be synced whole.

    An entry the new config took over from the old one (`config.load(previous=...)`: the same
    object) is unchanged, and so are its deliveries. None when many changed, or when a rule
    that fires more than once a day changed: those set how far ahead the window reaches for
    every job (`ledger_window`).
    """
    before: list[Post | LiveEvent] = [*old.posts, *old.live_events]
    after: list[Post | LiveEvent] = [*new.posts, *new.live_events]
    kept = {id(e) for e in before} & {id(e) for e in after}
    changed = [e for e in (*before, *after) if id(e) not in kept]
    if len(changed) > 2 * MAX_CHANGED or any(
            isinstance(e, Post) and e.cron is not None and _more_than_daily(e.cron_text or "")
            for e in changed):
        return None
    return {e.id for e in changed}


def _more_than_daily(cron: str) -> bool:
    """Whether a five-field cron rule may fire more than once a day (minute or hour not fixed)."""
    minute, hour = [*cron.split(), "*", "*"][:2]
    return not (minute.isdigit() and hour.isdigit())


def longest_grace(config: Config) -> timedelta:
    """The longest a post of `config` may still go out after its time."""
    return max([timedelta(0), *(p.grace for p in config.posts), *(e.grace for e in config.live_events)])


def upcoming(config: Config, now: datetime, count: int, per_rule: int | None = None) -> list[Occurrence]:
    """The first `count` occurrences from `now` on, however far ahead (drafts left out).

    Each recurring post contributes at most its next `per_rule` fires (default
    `count`), so this is cheap whatever the rules.
    """
    found: list[Occurrence] = []
    for post in config.posts:
        if post.cron is not None and not post.draft:
            dues = itertools.islice(_fires(post, now), per_rule or count)
            found.extend(o for due in dues for o in _post(post, due, due + _TICK))
    horizon = datetime.max.replace(tzinfo=UTC)
    found.extend(o for o in _finite(config, now, horizon) if not o.draft)
    found.sort(key=lambda o: o.due)
    return found[:count]


@dataclass(frozen=True)
class Beyond:
    """What lies after a window: how many occurrences (at most `cap`), the first, endless rules."""

    count: int
    capped: bool
    first: Occurrence | None
    endless: tuple[str, ...]  # ids of recurring posts without `until`


def beyond(config: Config, end: datetime, cap: int = 10_000) -> Beyond:
    """Count the occurrences due at or after `end` (drafts left out), up to about `cap`."""
    later = [o for o in _finite(config, end, datetime.max.replace(tzinfo=UTC)) if not o.draft]
    count, first = len(later), min(later, key=lambda o: o.due, default=None)
    endless = []
    for post in config.posts:
        if post.cron is None or post.draft:
            continue
        if post.until is None:
            endless.append(post.id)
        # past the cap only the first fire is looked at, so a file of many rules stays cheap
        fires = list(itertools.islice(_fires(post, end), max(1, cap + 1 - count)))
        count += len(fires) * len(post.targets)
        if fires and (first is None or fires[0] < first.due):
            first = _post(post, fires[0], fires[0] + _TICK)[0]
    return Beyond(min(count, cap), count > cap, first, tuple(endless))


def past_one_offs(config: Config, now: datetime) -> list[Post]:
    """One-off posts (not drafts) whose window has closed: they will not be sent now."""
    return [p for p in config.posts if p.at is not None and not p.draft and p.at + p.grace <= now]


_TICK = timedelta(microseconds=1)


def _finite(config: Config, start: datetime, end: datetime) -> list[Occurrence]:
    """Occurrences of one-off posts and live events in [start, end)."""
    found = [o for post in config.posts if post.at is not None for o in _post(post, start, end)]
    found += [o for event in config.live_events for o in _live(event, start, end)]
    return found


def _fires(post: Post, start: datetime) -> Iterator[datetime]:
    """A recurring post's fire times from `start` on, within its from/until."""
    assert post.cron is not None
    fires = times.fires(post.cron, max(start, post.start) if post.start else start)
    until = post.until
    return fires if until is None else itertools.takewhile(lambda t: t < until, fires)


Pair = tuple[Occurrence | None, Occurrence | None]
RulePair = tuple[Post | None, Post | None]


def compare(old: Config, new: Config, start: datetime) -> tuple[list[Pair], list[RulePair]]:
    """How `new` differs from `old` from `start` on, however far ahead (drafts left out).

    Returns (old, new) pairs of one-off and live-event occurrences, by due time,
    and of recurring posts by id, which are compared as rules since they may
    never end; None on one side means added or removed.
    """
    end = datetime.max.replace(tzinfo=UTC)
    before = {o.key: o for o in _finite(old, start, end) if not o.draft}
    after = {o.key: o for o in _finite(new, start, end) if not o.draft}
    pairs = [(before.get(k), after.get(k)) for k in before.keys() | after.keys()]
    pairs = [(a, b) for a, b in pairs if a is None or b is None or _seen(a) != _seen(b)]
    pairs.sort(key=lambda pair: min(o.due for o in pair if o is not None))
    rules_before = {p.id: p for p in old.posts if p.cron is not None and not p.draft}
    rules_after = {p.id: p for p in new.posts if p.cron is not None and not p.draft}
    rules = [(rules_before.get(i), rules_after.get(i))
             for i in sorted(rules_before.keys() | rules_after.keys())
             if rules_before.get(i) != rules_after.get(i)]
    return pairs, rules


def _seen(o: Occurrence) -> tuple[object, ...]:
    """What a reader of the page would notice changing."""
    return (o.due, o.text, o.link, o.image, o.deadline)
