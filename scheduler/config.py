"""jobs.yaml, schema version 1: pydantic models for its shape, then meaning.

`load(path)` returns a `Config` of plain frozen dataclasses with every time in
UTC, or raises ConfigError listing every problem as `jobs.yaml:LINE: message`.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import gc
import hashlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path as FsPath
from types import MappingProxyType
from typing import Annotated, Any, Literal, TypeVar, cast, get_args
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, ValidationError

import adapters
from adapters.base import AdapterSettings

from . import alerts, fit, secrets, templates, times, yamlfile
from .errors import ConfigError

Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]
TEMPLATE_FIELDS = frozenset({"title", "starts", "ends", "id", "link"})
DEFAULT_GRACE = "15m"
_M = TypeVar("_M", bound=BaseModel)
_T = TypeVar("_T")
_E = TypeVar("_E", "Post", "LiveEvent")
_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TEMPLATE_IN_POST = re.compile(r"\{(" + "|".join(sorted(TEMPLATE_FIELDS)) + r")(:[^{}]*)?\}")
_CLOCK = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class _TargetSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    adapter: str


class _Timing(_Strict):
    timezone: str | None = None
    grace: str | None = None
    draft: bool = False
    targets: list[str] | None = None


class _PostSpec(_Timing):
    id: Id
    at: str | None = None
    cron: str | None = None
    from_: str | None = Field(default=None, alias="from")
    until: str | None = None
    message: str
    message_for: dict[str, str] | None = None  # target name -> that target's own text
    link: str | None = None
    image: str | None = None
    alt: str | None = None  # the image's description, for screen readers
    visibility: Literal["public", "unlisted", "private", "direct"] | None = None  # Mastodon
    spoiler_text: str | None = None  # Mastodon's content warning
    images: list[str] | None = None
    first_comment: str | None = None


class _ReminderSpec(_Strict):
    before: str
    at: str | None = None  # a clock time on the day `before` lands on, e.g. "09:00"
    message: str


class _LiveEventSpec(_Timing):
    id: Id
    title: str
    starts: str
    ends: str
    link: str | None = None
    image: str | None = None
    thread: bool = False
    reminders: list[_ReminderSpec] = []
    on_start: str | None = None
    on_end: str | None = None


class _JobsFile(_Strict):
    version: int = 1
    timezone: str = "UTC"
    targets: dict[Id, Any]  # each item is validated on its own, so every problem is reported
    posts: list[Any] = []
    live_events: list[Any] = []
    alerts: list[str] = []  # Apprise notification URLs


@dataclass(frozen=True)
class Target:
    """A named account posts go to."""

    name: str
    adapter: str
    settings: AdapterSettings
    fingerprint: str  # changes when any setting (token included) changes; reveals nothing


@dataclass(frozen=True, slots=True)  # thousands of them: no __dict__ each
class Post:
    """An announcement: once at `at`, or on every `cron` fire from `start` until `until`."""

    id: str
    targets: tuple[str, ...]
    message: str
    link: str | None
    image: str | None
    tz: ZoneInfo
    grace: timedelta
    draft: bool
    at: datetime | None = None
    cron: times.Cron | None = field(default=None, compare=False)
    cron_text: str | None = None
    until: datetime | None = None
    options: tuple[tuple[str, str], ...] = ()  # network options (alt, visibility, spoiler_text)
    start: datetime | None = None
    images: tuple[str, ...] = ()  # all images, when the post has several (`image` is the first)
    first_comment: str | None = None
    texts: Mapping[str, str] = field(default_factory=dict)  # target -> its own text (message_for)


@dataclass(frozen=True, slots=True)  # thousands of them: no __dict__ each
class Reminder:
    """A post `before` the start of a live event; `part` names it, e.g. reminder-2d.

    `before` counts whole days as calendar days in the event's zone (same wall-clock
    time) and the rest as elapsed time; with `at`, the post goes out at that clock
    time on the day `before` lands on (then `before` is whole days).
    """

    part: str
    before: timedelta
    message: str
    at: time | None = None

    def due(self, starts: datetime, tz: ZoneInfo) -> datetime:
        """When this reminder goes out for an event starting at `starts` (aware UTC)."""
        return times.earlier(starts, self.before, tz, self.at)


@dataclass(frozen=True, slots=True)  # thousands of them: no __dict__ each
class LiveEvent:
    """A live chat and the posts around it."""

    id: str
    title: str
    starts: datetime
    ends: datetime
    link: str | None
    targets: tuple[str, ...]
    reminders: tuple[Reminder, ...]
    on_start: str | None
    on_end: str | None
    tz: ZoneInfo
    grace: timedelta
    draft: bool
    image: str | None = None
    threaded: frozenset[str] = frozenset()  # targets whose posts form one thread (thread: true)

    def values(self) -> dict[str, Any]:
        """The fields a message template may use, times in the event's zone."""
        return {
            "title": self.title,
            "starts": self.starts.astimezone(self.tz),
            "ends": self.ends.astimezone(self.tz),
            "id": self.id,
            "link": self.link or "",
        }


@dataclass(frozen=True)
class Config:
    """A validated jobs.yaml."""

    path: str
    digest: str
    timezone: ZoneInfo
    targets: dict[str, Target]
    posts: tuple[Post, ...]
    live_events: tuple[LiveEvent, ...]
    warnings: tuple[str, ...] = ()
    alerts: tuple[SecretStr, ...] = ()  # Apprise URLs, ${VAR} expanded; they hold secrets
    # what the next parse may reuse: each entry built without a problem or warning, by its
    # section and data, valid while `context` (zone, targets and their adapters) is the same
    entries: Mapping[bytes, Post | LiveEvent] = field(default_factory=dict, compare=False, repr=False)
    context: tuple[object, ...] = field(default=(), compare=False, repr=False)


def load(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None,
         strict_env: bool = True, previous: Config | None = None, remember: bool = False) -> Config:
    """Read and validate a jobs.yaml file. Raises ConfigError.

    With `strict_env=False` (dry runs) a missing `${VAR}` is a warning and the
    placeholder is kept, since nothing is sent. With `previous` (the config
    running now), an entry whose data is unchanged, in a file whose time zone
    and targets are unchanged, is taken from it instead of being validated and
    built again: the same object, so a reload costs little for what it keeps.
    Only a config loaded with `remember` (the daemon's) can be a `previous`.
    """
    name = os.fspath(path)
    try:
        raw = FsPath(path).read_bytes()
    except OSError as exc:
        raise ConfigError([f"{name}: cannot read {os.path.abspath(name)}: {exc.strerror}"]) from None
    return parse(raw, name=name, path=name, env=env, strict_env=strict_env, previous=previous,
                 remember=remember)


def parse(raw: bytes, *, name: str = "jobs.yaml", path: str = "jobs.yaml",
          env: Mapping[str, str] | None = None, strict_env: bool = True,
          previous: Config | None = None, remember: bool = False) -> Config:
    """Validate the bytes of a jobs.yaml; see `load`."""
    with _gc_paused():
        return _parse(raw, name, path, env, strict_env, previous, remember)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Parsing creates objects by the hundred thousand and keeps them: the cyclic
    collector only re-scans them, which measured ~60% of a 10k-post load."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _parse(raw: bytes, name: str, path: str, env: Mapping[str, str] | None,
           strict_env: bool, previous: Config | None, remember: bool) -> Config:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{name}:1: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    doc = yamlfile.load(text, name)
    if not isinstance(doc.data, dict):
        raise ConfigError([f"{name}:1: expected a mapping with targets, posts and live_events"])
    if "posts" not in doc.data and "live_events" not in doc.data:
        # a file cut short while being saved looks like this; say `posts: []` to mean "none"
        raise ConfigError([f"{name}:1: no posts: or live_events: section "
                           "(write `posts: []` to have no posts on purpose)"])
    try:
        spec = _JobsFile.model_validate(doc.data)
        doc.data = None  # the entries are now in `spec` alone: each is let go once built
    except ValidationError as exc:
        raise ConfigError([_one_line(p) for p in _located(doc, exc, _JobsFile)]) from None
    builder = _Builder(doc, os.environ if env is None else env, strict_env, remember or previous is not None)
    config = builder.build(spec, path, hashlib.sha256(raw).hexdigest(), previous)
    if builder.problems:
        raise ConfigError(sorted({_one_line(p) for p in builder.problems}, key=_line_order))
    return config


def _one_line(problem: str) -> str:
    """Keep each problem on one line, whatever the file's values contain."""
    return problem.replace("\r", "\\r").replace("\n", "\\n")


def _line_order(problem: str) -> tuple[int, str]:
    parts = problem.split(":", 2)
    return (int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0, problem)


def _located(doc: yamlfile.Document, exc: ValidationError, model: type[BaseModel],
             prefix: yamlfile.Path = ()) -> list[str]:
    problems = []
    for error in exc.errors(include_url=False):
        loc = (*prefix, *error["loc"])
        dotted = ".".join(str(p) for p in loc)
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            known = _keys_at(model, error["loc"])
            message = f"unknown key {loc[-1]!r}{_suggest(str(loc[-1]), known, 'keys')}"
        elif error["type"] == "missing":
            message = f"missing required key {loc[-1]!r}"
        elif error["type"] == "string_pattern_mismatch":
            message = f"{dotted}: bad id {error['input']!r} (letters, digits, _ . - only)"
        else:
            message = f"{dotted}: {message}"
        problems.append(f"{doc.where(loc)}: {message}")
    return problems


def _keys_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The keys allowed beside the last step of `loc` (a path into `model`'s input)."""
    current: Any = model
    for step in loc[:-1]:
        if isinstance(step, int):
            continue
        fields = current.model_fields if isinstance(current, type) and issubclass(current, BaseModel) else {}
        if step not in fields:
            return []
        current = fields[step].annotation
        current = next((a for a in get_args(current) if isinstance(a, type)), current)  # list[X]
    if not (isinstance(current, type) and issubclass(current, BaseModel)):
        return []
    return [f.alias or name for name, f in current.model_fields.items()]


def _suggest(word: str, known: list[str], what: str) -> str:
    """' (did you mean 'x'?)' for a near miss, else the known names, else nothing."""
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (known {what}: {', '.join(known)})" if known else ""


class _Builder:
    """Turns validated specs into a Config, collecting every problem with its line."""

    def __init__(self, doc: yamlfile.Document, env: Mapping[str, str], strict_env: bool,
                 remember: bool) -> None:
        self.doc = doc
        self.remember = remember  # keep an index of the entries, for the next load to reuse
        self.env = env
        self.strict_env = strict_env
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.adapter_names: dict[str, str] = {}  # target -> adapter, for the targets built
        self.default_tz = ZoneInfo("UTC")
        self.known_targets: Mapping[str, Any] = {}
        self.reusable: Mapping[bytes, Post | LiveEvent] = {}
        self.target_lists: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.entries: dict[bytes, Post | LiveEvent] = {}
        self.cut_entries = {where[:2] for where in doc.cut}  # entries with a text cut by a comment

    def fail(self, path: yamlfile.Path, message: str) -> None:
        self.problems.append(f"{self.doc.where(path)}: {message}")

    def interned(self, targets: tuple[str, ...]) -> tuple[str, ...]:
        """One tuple for each list of targets: thousands of entries name the same few."""
        return self.target_lists.setdefault(targets, targets)

    def warn(self, path: yamlfile.Path, message: str) -> None:
        self.warnings.append(f"{self.doc.where(path)}: {message}")

    def parsed(self, path: yamlfile.Path, parse: Callable[..., _T], text: str,
               *args: Any) -> _T | None:
        """`parse(text, ...)`, with a ValueError turned into a problem located at `path`."""
        try:
            return parse(text, *args)
        except ValueError as exc:
            self.fail(path, str(exc))
            return None

    def build(self, spec: _JobsFile, path: str, digest: str, previous: Config | None) -> Config:
        if spec.version != 1:
            self.fail(("version",), f"unsupported schema version {spec.version} (this oyez reads 1)")
        default_tz = self.parsed(("timezone",), times.zone, spec.timezone) or ZoneInfo("UTC")
        targets = {}
        for name, raw in spec.targets.items():
            target_spec = self.validate(_TargetSpec, raw, ("targets", name))
            if target_spec is not None and (target := self.target(name, target_spec)) is not None:
                targets[name] = target
        self.adapter_names = {name: target.adapter for name, target in targets.items()}
        if not spec.targets:
            self.fail(("targets",), "at least one target is required")
        # all an entry's meaning depends on beyond its own data
        context = (default_tz.key, tuple(spec.targets), tuple(sorted(self.adapter_names.items())))
        if previous is not None and previous.context == context:
            self.reusable = previous.entries
        self.default_tz, self.known_targets = default_tz, spec.targets
        seen: dict[str, yamlfile.Path] = {}
        posts = []
        for i, raw in enumerate(spec.posts):
            self.unique(raw, ("posts", i), seen)
            spec.posts[i] = None  # at 50k entries the plain data is as big as the config
            if (post := self.entry(raw, ("posts", i), self.built_post)) is not None:
                posts.append(post)
        events = []
        for i, raw in enumerate(spec.live_events):
            self.unique(raw, ("live_events", i), seen)
            spec.live_events[i] = None
            if (event := self.entry(raw, ("live_events", i), self.built_event)) is not None:
                events.append(event)
        alert_urls = tuple(self.alert(url, ("alerts", i)) for i, url in enumerate(spec.alerts))
        return Config(path, digest, default_tz, targets, tuple(posts), tuple(events),
                      tuple(self.warnings), alert_urls, self.entries, context)

    def entry(self, raw: Any, path: yamlfile.Path,
              build: Callable[[Any, yamlfile.Path], _E | None]) -> _E | None:
        """The entry `raw` at `path`: the previous config's, if its data is the same, else built.

        Only entries built without a problem or warning are kept for reuse (those are located
        by line, and lines move), nor one with a text a comment cut short (the data does not
        show it).
        """
        if not self.remember:
            return build(raw, path)
        key = hashlib.blake2b(f"{path[0]}{raw!r}".encode(), digest_size=16).digest()
        found = self.reusable.get(key)
        if found is not None and path not in self.cut_entries:
            self.entries[key] = found
            return cast(_E, found)  # the key names the section: a post, or a live event
        before = len(self.problems) + len(self.warnings)
        built = build(raw, path)
        if built is not None and len(self.problems) + len(self.warnings) == before \
                and path not in self.cut_entries:
            self.entries[key] = built
        return built

    def built_post(self, raw: Any, path: yamlfile.Path) -> Post | None:
        spec = self.validate(_PostSpec, raw, path)
        return None if spec is None else self.post(spec, path, self.default_tz, self.known_targets)

    def built_event(self, raw: Any, path: yamlfile.Path) -> LiveEvent | None:
        spec = self.validate(_LiveEventSpec, raw, path)
        return None if spec is None else self.live_event(spec, path, self.default_tz, self.known_targets)

    def alert(self, url: str, path: yamlfile.Path) -> SecretStr:
        """Expand and check one Apprise URL; a problem names its scheme only, never the URL."""
        expanded: dict[str, str] = {}
        value = self.expand(url, path, expanded)
        try:
            password = urlsplit(value).password or ""
        except ValueError:  # e.g. a broken [IPv6] host: Apprise will refuse it below
            password = ""
        for secret in (*expanded.values(), password, value):
            secrets.register(secret)
        if not _ENV_VAR.search(value):  # left unexpanded in a dry run: nothing to check yet
            problem = alerts.url_problem(value)
            if problem is not None:
                self.fail(path, f"alerts[{path[-1]}]: {problem}")
        return SecretStr(value)

    def validate(self, model: type[_M], raw: Any, path: yamlfile.Path) -> _M | None:
        """Validate one item's shape; after unknown keys alone, go on so its other problems show."""
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            self.problems.extend(_located(self.doc, exc, model, path))
            errors = exc.errors(include_url=False)
            if not all(e["type"] == "extra_forbidden" and len(e["loc"]) == 1 for e in errors):
                return None
            unknown = {e["loc"][0] for e in errors}
            try:
                return model.model_validate({k: v for k, v in raw.items() if k not in unknown})
            except ValidationError:
                return None

    def unique(self, raw: Any, path: yamlfile.Path, seen: dict[str, yamlfile.Path]) -> None:
        job_id = raw.get("id") if isinstance(raw, dict) else None
        if not isinstance(job_id, str):
            return
        if job_id in seen:
            first = self.doc.where(seen[job_id])
            self.fail((*path, "id"), f"duplicate id {job_id!r} (first used at {first})")
        else:
            seen[job_id] = path

    def target(self, name: str, spec: _TargetSpec) -> Target | None:
        path: yamlfile.Path = ("targets", name)
        try:
            adapter = adapters.get(spec.adapter)
        except KeyError:
            self.fail((*path, "adapter"), f"unknown adapter {spec.adapter!r}"
                      f"{_suggest(spec.adapter, adapters.names(), 'adapters')}")
            return None
        expanded: dict[str, str] = {}
        secret_keys = {key for key, f in adapter.Settings.model_fields.items()
                       if SecretStr in (f.annotation, *get_args(f.annotation))}
        raw = {}
        for key, value in (spec.model_extra or {}).items():
            if isinstance(value, int) and not isinstance(value, bool):
                value = self.doc.source((*path, key))  # an unquoted id: its digits as written
            if key in secret_keys and not (isinstance(value, str) and _ENV_VAR.fullmatch(value)):
                # never echo it: a secret written here would end up in git and in this message
                self.fail((*path, key), f"{key}: write the secret in .env or the environment and "
                          f"refer to it here as ${{VARIABLE}}, not inline")
                continue
            raw[key] = self.expand(value, (*path, key), expanded)
        if len(raw) < len(spec.model_extra or {}):
            return None
        try:
            settings = adapter.Settings.model_validate(raw)
        except ValidationError as exc:
            # never echo a value from the environment
            for problem in _located(self.doc, exc, adapter.Settings, path):
                for var, value in sorted(expanded.items(), key=lambda kv: -len(kv[1])):
                    problem = problem.replace(value, f"${{{var}}}") if len(value) >= 3 else problem
                self.problems.append(problem)
            return None
        fingerprint = hashlib.sha256(repr(sorted(_revealed(settings).items())).encode()).hexdigest()
        for value in settings.__dict__.values():
            if isinstance(value, SecretStr):
                secrets.register(value.get_secret_value())
        return Target(name, spec.adapter, settings, fingerprint[:16])

    def expand(self, value: Any, path: yamlfile.Path, expanded: dict[str, str]) -> Any:
        """Replace ${VAR} from the environment (only target settings get this)."""
        if not isinstance(value, str):
            return value

        def lookup(match: re.Match[str]) -> str:
            var = match.group(1)
            if self.env.get(var, "").strip():
                expanded[var] = self.env[var]
                return self.env[var]
            state = "is empty" if var in self.env else "is not set"
            if self.strict_env:
                self.fail(path, f"environment variable {var} {state} (set it or add it to .env)")
            else:
                self.warn(path, f"environment variable {var} {state} (needed to send; fine for a review "
                          "or a dry run)")
            return match.group(0)

        return _ENV_VAR.sub(lookup, value)

    def common(self, spec: _Timing, path: yamlfile.Path, default_tz: ZoneInfo,
               known_targets: Mapping[str, Any]) -> tuple[ZoneInfo, timedelta, tuple[str, ...]] | None:
        tz = self.parsed((*path, "timezone"), times.zone, spec.timezone) if spec.timezone else default_tz
        grace = self.parsed((*path, "grace"), times.duration, spec.grace or DEFAULT_GRACE)
        if grace is not None and grace <= timedelta(0):
            # the window due <= now < due + grace would be empty: the post could never go out
            self.fail((*path, "grace"), f"grace must be longer than 0s, got {spec.grace!r}")
            grace = None
        if spec.targets is None:
            if len(known_targets) != 1:
                self.fail(path, "targets: required when more than one target is defined")
                return None
            chosen = self.interned(tuple(known_targets))
        else:
            chosen = self.interned(tuple(spec.targets))
            for i, name in enumerate(chosen):
                if name not in known_targets:
                    self.fail((*path, "targets", i), f"unknown target {name!r}"
                              f"{_suggest(name, list(known_targets), 'targets')}")
            if not chosen:
                self.fail((*path, "targets"), "targets: list at least one target")
        if tz is None or grace is None:
            return None
        return tz, grace, chosen

    def url(self, value: str | None, path: yamlfile.Path) -> None:
        if value is not None:
            try:
                parts = urlsplit(value)
            except ValueError as exc:  # e.g. "https://[bad/": Invalid IPv6 URL
                self.fail(path, f"{path[-1]}: bad URL {value!r} ({exc})")
                return
            if parts.scheme not in ("http", "https") or not parts.netloc:
                self.fail(path, f"{path[-1]}: must be an http(s) URL, got {value!r}")

    def text(self, path: yamlfile.Path) -> None:
        """A text cut short by a YAML comment (what the networks refuse is `fit`'s to say)."""
        if self.doc.cut_by_comment(path):
            self.fail(path, f"{path[-1]}: the text after \" #\" is dropped (YAML reads it as a "
                      "comment, e.g. hashtags): put the whole text in double quotes \"...\"")

    def post(self, spec: _PostSpec, path: yamlfile.Path, default_tz: ZoneInfo,
             known_targets: Mapping[str, Any]) -> Post | None:
        common = self.common(spec, path, default_tz, known_targets)
        self.url(spec.link, (*path, "link"))
        self.url(spec.image, (*path, "image"))
        for i, image in enumerate(spec.images or []):
            self.url(image, (*path, "images", i))
        if spec.image is not None and spec.images is not None:
            self.fail((*path, "images"), "give image: (one) or images: (several), not both")
        images = tuple(spec.images or ([spec.image] if spec.image else []))
        if not spec.message.strip():
            self.fail((*path, "message"), "message is empty")
        options = tuple((k, v) for k in ("alt", "visibility", "spoiler_text")
                        if (v := getattr(spec, k)) is not None)
        if spec.image and not spec.alt:
            self.warnings.append(f"{self.doc.where((*path, 'image'))}: image without alt: "
                                 "describe it for people using screen readers (Bluesky and "
                                 "Mastodon show it)")
        if (field_ := _TEMPLATE_IN_POST.search(spec.message)) is not None:
            # a warning, not an error: braces are legitimate text in a post
            self.warn((*path, "message"), f"{field_.group(0)} will be published as written, braces "
                      "and all: posts are plain text (templates work in live_events messages)")
        if common is not None:
            for where, problem in fit.post(self.adapter_names, path, common[2], spec.message,
                                           spec.message_for or {}, spec.first_comment, images,
                                           spec.link, dict(options)):
                self.fail(where, problem)
        if (spec.at is None) == (spec.cron is None):
            self.fail(path, "a post needs exactly one of at: or cron:")
            return None
        if common is None:
            return None
        tz, grace, targets = common
        self.text((*path, "message"))
        at = until = start = trigger = None
        if spec.at is not None:
            at = self.parsed((*path, "at"), times.instant, spec.at, tz)
            for key, value in (("from", spec.from_), ("until", spec.until)):
                if value is not None:
                    self.fail((*path, key), f"{key}: only applies to cron posts")
            if at is None:
                return None
        else:
            assert spec.cron is not None
            trigger = self.parsed((*path, "cron"), times.cron, spec.cron, tz)
            if spec.from_ is not None:
                start = self.parsed((*path, "from"), times.day_start, spec.from_, tz)
            if spec.until is not None:
                until = self.parsed((*path, "until"), times.day_end, spec.until, tz)
            if start and until and until <= start:
                self.fail((*path, "until"), f"until ({spec.until}) must be after from ({spec.from_})")
            if trigger is None or (spec.until and until is None) or (spec.from_ and start is None):
                return None
        return Post(spec.id, targets, spec.message, spec.link, images[0] if images else None, tz,
                    grace, spec.draft, at, trigger, spec.cron, until, options=options, start=start,
                    images=images if spec.images is not None else (),
                    first_comment=spec.first_comment,
                    texts=dict(spec.message_for) if spec.message_for else _NO_TEXTS)

    def live_event(self, spec: _LiveEventSpec, path: yamlfile.Path, default_tz: ZoneInfo,
                   known_targets: Mapping[str, Any]) -> LiveEvent | None:
        common = self.common(spec, path, default_tz, known_targets)
        self.url(spec.link, (*path, "link"))
        self.url(spec.image, (*path, "image"))
        if common is None:
            return None
        tz, grace, targets = common
        self.text((*path, "title"))
        starts = self.parsed((*path, "starts"), times.instant, spec.starts, tz)
        ends = self.parsed((*path, "ends"), times.instant, spec.ends, tz)
        if starts is not None and ends is not None and ends <= starts:
            self.fail((*path, "ends"), f"ends ({spec.ends}) must be after starts ({spec.starts})")
        reminders = []
        parts: set[str] = set()
        for i, spec_r in enumerate(spec.reminders):
            rpath = (*path, "reminders", i)
            reminder = self.reminder(spec_r, rpath)
            if reminder is None:
                continue
            if reminder.part in parts:
                self.fail((*rpath, "before"), f"two reminders at the same time ({reminder.part})")
            parts.add(reminder.part)
            reminders.append(reminder)
        messages = [((*path, "reminders", i, "message"), r.message) for i, r in enumerate(spec.reminders)]
        messages += [((*path, key), getattr(spec, key)) for key in ("on_start", "on_end")
                     if getattr(spec, key) is not None]
        valid = [(mpath, template) for mpath, template in messages if self.template(template, mpath)]
        if starts is None or ends is None:
            return None
        names = self.adapter_names
        threaded = frozenset(t for t in targets if spec.thread and fit.replies(names.get(t, "")))
        event = LiveEvent(spec.id, spec.title, starts, ends, spec.link, targets, tuple(reminders),
                          spec.on_start, spec.on_end, tz, grace, spec.draft, spec.image, threaded)
        rendered = []
        for mpath, template in valid:  # as it will be published
            self.text(mpath)
            with contextlib.suppress(ValueError, TypeError, KeyError):  # reported by template()
                rendered.append((mpath, templates.render(template, event.values())))
        for where, problem in fit.event(names, path, targets, rendered, spec.image, spec.link):
            self.fail(where, problem)
        return event

    def reminder(self, spec: _ReminderSpec, path: yamlfile.Path) -> Reminder | None:
        """A reminder's timing; its message is checked with the event's other messages."""
        before = self.parsed((*path, "before"), times.duration, spec.before)
        at = None
        if spec.at is not None:
            clock_time = _CLOCK.fullmatch(spec.at.strip())
            if clock_time is None:
                self.fail((*path, "at"), f"bad clock time {spec.at!r} (use HH:MM, e.g. \"09:00\")")
                return None
            at = time(int(clock_time.group(1)), int(clock_time.group(2)))
        if before is None:
            return None
        if before <= timedelta(0) or (at is not None and before < timedelta(days=1)):
            self.fail((*path, "before"), f"reminder must come before the start, got {spec.before!r}"
                      f"{' (with at:, give whole days, e.g. 2d)' if at else ''}")
            return None
        if at is not None and before % timedelta(days=1):
            self.fail((*path, "before"), f"with at:, before: must be whole days (e.g. 2d), "
                      f"got {spec.before!r}")
            return None
        part = f"reminder-{times.short(before)}" + (f"-at-{at:%H%M}" if at else "")
        return Reminder(part, before, spec.message, at)

    def template(self, text: str, path: yamlfile.Path) -> bool:
        """Check a live-event message template; True when it can be rendered."""
        problem = _template_problem(text)
        if problem is not None:
            self.fail(path, problem)
        return problem is None


@functools.lru_cache(maxsize=1024)
def _template_problem(text: str) -> str | None:
    """Why a live-event message template cannot be rendered, or None (events share templates)."""
    problem = templates.fields_problem(text, TEMPLATE_FIELDS)
    if problem is None and not text.strip():
        problem = "message is empty"
    if problem is None:
        try:  # also catches bad format specs such as {title:d}
            templates.render(text, _SAMPLE_VALUES)
        except (ValueError, TypeError) as exc:
            problem = f"bad template: {exc}"
    return problem


_NO_TEXTS: Mapping[str, str] = MappingProxyType({})
_SAMPLE_VALUES: dict[str, Any] = {
    "title": "t", "id": "i", "link": "l",
    "starts": datetime(2020, 1, 1, tzinfo=ZoneInfo("UTC")),
    "ends": datetime(2020, 1, 1, tzinfo=ZoneInfo("UTC")),
}


def _revealed(settings: AdapterSettings) -> dict[str, Any]:
    return {
        key: value.get_secret_value() if isinstance(value, SecretStr) else value
        for key, value in settings.__dict__.items()
    }
