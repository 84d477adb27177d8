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

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from . import templates, times
from .config import Config, LiveEvent, Post

LOOKBACK = timedelta(days=1)
MAX_AHEAD = 120  # about this many fires of a frequent recurring rule are kept in the ledger ahead
MIN_AHEAD = timedelta(hours=2)  # the ledger always reaches at least this far ahead
REFRESH = timedelta(minutes=10)  # how often the daemon rolls the window forward


@dataclass(frozen=True)
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


def _post(post: Post, start: datetime, end: datetime) -> list[Occurrence]:
    dues: list[tuple[datetime, str | None]]
    if post.at is not None:
        dues = [(post.at, None)] if start <= post.at < end else []
    else:
        assert post.cron is not None
        stop = min(end, post.until) if post.until else end
        dues = [(t, _stamp(t)) for t in times.fire_times(post.cron, start, stop)]
    found = []
    for due, stamp in dues:
        for target in post.targets:
            key = f"post:{post.id}:{target}" if stamp is None else f"cron:{post.id}:{target}:{stamp}"
            found.append(Occurrence(
                key=key, job_id=post.id, part="post", target=target, due=due,
                deadline=due + post.grace, text=post.texts.get(target, post.message),
                link=post.link, image=post.image, draft=post.draft, tz_name=post.tz.key,
                images=post.images))
            if post.first_comment is not None:  # given the parent's grace again, after it
                found.append(Occurrence(
                    key=f"{key}:first-comment", job_id=post.id, part="first-comment",
                    target=target, due=due, deadline=due + 2 * post.grace,
                    text=post.first_comment, link=None, image=None, draft=post.draft,
                    tz_name=post.tz.key, parent=key))
    return found


def _live(event: LiveEvent, start: datetime, end: datetime) -> list[Occurrence]:
    parts: list[tuple[str, datetime, datetime, str]] = [
        # a reminder is never sent at or after the start
        (r.part, event.starts - r.before, min(event.starts - r.before + event.grace, event.starts),
         r.message)
        for r in event.reminders
    ]
    if event.on_start is not None:  # "we're live" is pointless once the event has ended
        parts.append(("start", event.starts, min(event.starts + event.grace, event.ends),
                      event.on_start))
    if event.on_end is not None:
        parts.append(("end", event.ends, event.ends + event.grace, event.on_end))
    values = event.values()
    stamp = _stamp(event.starts)
    first = min(parts, key=lambda p: p[1])[0] if parts else ""  # the thread's first post

    def key(part: str, target: str) -> str:
        return f"live:{event.id}:{part}:{stamp}:{target}"

    return [
        Occurrence(
            key=key(part, target), job_id=event.id, part=part,
            target=target, due=due, deadline=deadline, text=templates.render(template, values),
            link=event.link, image=event.image, draft=event.draft, tz_name=event.tz.key,
            parent=key(first, target) if target in event.threaded and part != first else None,
        )
        for part, due, deadline, template in parts
        if start <= due < end
        for target in event.targets
    ]


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


def _more_than_daily(cron: str) -> bool:
    """Whether a five-field cron rule may fire more than once a day (minute or hour not fixed)."""
    minute, hour = [*cron.split(), "*", "*"][:2]
    return not (minute.isdigit() and hour.isdigit())


def longest_grace(config: Config) -> timedelta:
    """The longest a post of `config` may still go out after its time."""
    return max([timedelta(0), *(p.grace for p in config.posts), *(e.grace for e in config.live_events)])
