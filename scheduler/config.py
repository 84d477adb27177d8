"""jobs.yaml, schema version 1: pydantic models for its shape, then meaning.

`load(path)` returns a `Config` of plain frozen dataclasses with every time in
UTC, or raises ConfigError listing every problem as `jobs.yaml:LINE: message`.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path as FsPath
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from pydantic import BaseModel, ConfigDict, SecretStr, StringConstraints, ValidationError

import adapters
from adapters.base import AdapterSettings

from . import fit, secrets, templates, times, yamlfile
from .errors import ConfigError

Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]
TEMPLATE_FIELDS = frozenset({"title", "starts", "ends", "id", "link"})
DEFAULT_GRACE = "15m"
_M = TypeVar("_M", bound=BaseModel)
_T = TypeVar("_T")
_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


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
    until: str | None = None
    message: str
    message_for: dict[str, str] | None = None  # target name -> that target's own text
    link: str | None = None
    image: str | None = None
    images: list[str] | None = None
    first_comment: str | None = None


class _ReminderSpec(_Strict):
    before: str
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


@dataclass(frozen=True)
class Target:
    """A named account posts go to."""

    name: str
    adapter: str
    settings: AdapterSettings
    fingerprint: str  # changes when any setting (token included) changes; reveals nothing


@dataclass(frozen=True)
class Post:
    """An announcement: once at `at`, or on every `cron` fire until `until`."""

    id: str
    targets: tuple[str, ...]
    message: str
    link: str | None
    image: str | None
    tz: ZoneInfo
    grace: timedelta
    draft: bool
    at: datetime | None = None
    cron: BaseTrigger | None = field(default=None, compare=False)
    cron_text: str | None = None
    until: datetime | None = None
    images: tuple[str, ...] = ()  # all images, when the post has several (`image` is the first)
    first_comment: str | None = None
    texts: dict[str, str] = field(default_factory=dict)  # target -> its own text (message_for)


@dataclass(frozen=True)
class Reminder:
    """A post `before` the start of a live event; `part` names it, e.g. reminder-2d."""

    part: str
    before: timedelta
    message: str


@dataclass(frozen=True)
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


def load(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None,
         strict_env: bool = True) -> Config:
    """Read and validate a jobs.yaml file. Raises ConfigError.

    With `strict_env=False` (dry runs) a missing `${VAR}` is a warning and the
    placeholder is kept, since nothing is sent.
    """
    name = os.path.basename(os.fspath(path))
    try:
        raw = FsPath(path).read_bytes()
    except OSError as exc:
        raise ConfigError([f"{name}:0: cannot read: {exc.strerror}"]) from None
    return parse(raw, name=name, path=os.fspath(path), env=env, strict_env=strict_env)


def parse(raw: bytes, *, name: str = "jobs.yaml", path: str = "jobs.yaml",
          env: Mapping[str, str] | None = None, strict_env: bool = True) -> Config:
    """Validate the bytes of a jobs.yaml; see `load`."""
    with _gc_paused():
        return _parse(raw, name, path, env, strict_env)


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
           strict_env: bool) -> Config:
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
    except ValidationError as exc:
        raise ConfigError([_one_line(p) for p in _located(doc, exc)]) from None
    builder = _Builder(doc, os.environ if env is None else env, strict_env)
    config = builder.build(spec, path, hashlib.sha256(raw).hexdigest())
    if builder.problems:
        raise ConfigError(sorted({_one_line(p) for p in builder.problems}, key=_line_order))
    return config


def _one_line(problem: str) -> str:
    """Keep each problem on one line, whatever the file's values contain."""
    return problem.replace("\r", "\\r").replace("\n", "\\n")


def _line_order(problem: str) -> tuple[int, str]:
    parts = problem.split(":", 2)
    return (int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0, problem)


def _located(doc: yamlfile.Document, exc: ValidationError, prefix: yamlfile.Path = ()) -> list[str]:
    problems = []
    for error in exc.errors(include_url=False):
        loc = (*prefix, *error["loc"])
        dotted = ".".join(str(p) for p in loc)
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = f"unknown key {loc[-1]!r}"
        elif error["type"] == "missing":
            message = f"missing required key {loc[-1]!r}"
        elif error["type"] == "string_pattern_mismatch":
            message = f"{dotted}: bad id {error['input']!r} (letters, digits, _ . - only)"
        else:
            message = f"{dotted}: {message}"
        problems.append(f"{doc.where(loc)}: {message}")
    return problems


class _Builder:
    """Turns validated specs into a Config, collecting every problem with its line."""

    def __init__(self, doc: yamlfile.Document, env: Mapping[str, str], strict_env: bool) -> None:
        self.doc = doc
        self.env = env
        self.strict_env = strict_env
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.adapter_names: dict[str, str] = {}  # target -> adapter, for the targets built

    def fail(self, path: yamlfile.Path, message: str) -> None:
        self.problems.append(f"{self.doc.where(path)}: {message}")

    def parsed(self, path: yamlfile.Path, parse: Callable[..., _T], text: str,
               *args: Any) -> _T | None:
        """`parse(text, ...)`, with a ValueError turned into a problem located at `path`."""
        try:
            return parse(text, *args)
        except ValueError as exc:
            self.fail(path, str(exc))
            return None

    def build(self, spec: _JobsFile, path: str, digest: str) -> Config:
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
        seen: dict[str, yamlfile.Path] = {}
        posts = []
        for i, raw in enumerate(spec.posts):
            self.unique(raw, ("posts", i), seen)
            post_spec = self.validate(_PostSpec, raw, ("posts", i))
            if post_spec is not None and (post := self.post(post_spec, ("posts", i), default_tz,
                                                            spec.targets)) is not None:
                posts.append(post)
        events = []
        for i, raw in enumerate(spec.live_events):
            self.unique(raw, ("live_events", i), seen)
            event_spec = self.validate(_LiveEventSpec, raw, ("live_events", i))
            if event_spec is not None and (event := self.live_event(
                    event_spec, ("live_events", i), default_tz, spec.targets)) is not None:
                events.append(event)
        return Config(path, digest, default_tz, targets, tuple(posts), tuple(events),
                      tuple(self.warnings))

    def validate(self, model: type[_M], raw: Any, path: yamlfile.Path) -> _M | None:
        """Validate one item's shape; after unknown keys alone, go on so its other problems show."""
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            self.problems.extend(_located(self.doc, exc, path))
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
            self.fail((*path, "adapter"), f"unknown adapter {spec.adapter!r} "
                      f"(known: {', '.join(adapters.names())})")
            return None
        expanded: dict[str, str] = {}
        raw = {key: self.expand(value, (*path, key), expanded)
               for key, value in (spec.model_extra or {}).items()}
        try:
            settings = adapter.Settings.model_validate(raw)
        except ValidationError as exc:
            for problem in _located(self.doc, exc, path):  # never echo a value from the environment
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
            if var in self.env:
                expanded[var] = self.env[var]
                return self.env[var]
            if self.strict_env:
                self.fail(path, f"environment variable {var} is not set (set it or add it to .env)")
            else:
                self.warnings.append(f"{self.doc.where(path)}: environment variable {var} is not set")
            return match.group(0)

        return _ENV_VAR.sub(lookup, value)

    def common(self, spec: _Timing, path: yamlfile.Path, default_tz: ZoneInfo,
               known_targets: Mapping[str, Any]) -> tuple[ZoneInfo, timedelta, tuple[str, ...]] | None:
        tz = self.parsed((*path, "timezone"), times.zone, spec.timezone) if spec.timezone else default_tz
        grace = self.parsed((*path, "grace"), times.duration, spec.grace or DEFAULT_GRACE)
        if spec.targets is None:
            if len(known_targets) != 1:
                self.fail(path, "targets: required when more than one target is defined")
                return None
            chosen = tuple(known_targets)
        else:
            chosen = tuple(spec.targets)
            for i, name in enumerate(chosen):
                if name not in known_targets:
                    self.fail((*path, "targets", i), f"unknown target {name!r}")
            if not chosen:
                self.fail((*path, "targets"), "targets: list at least one target")
        if tz is None or grace is None:
            return None
        return tz, grace, chosen

    def url(self, value: str | None, path: yamlfile.Path) -> None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                self.fail(path, f"{path[-1]}: must be an http(s) URL, got {value!r}")

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
        if common is not None:
            for where, problem in fit.post(self.adapter_names, path, common[2], spec.message,
                                           spec.message_for or {}, spec.first_comment, images,
                                           spec.link):
                self.fail(where, problem)
        if (spec.at is None) == (spec.cron is None):
            self.fail(path, "a post needs exactly one of at: or cron:")
            return None
        if common is None:
            return None
        tz, grace, targets = common
        at = until = trigger = None
        if spec.at is not None:
            at = self.parsed((*path, "at"), times.instant, spec.at, tz)
            if spec.until is not None:
                self.fail((*path, "until"), "until: only applies to cron posts")
            if at is None:
                return None
        else:
            assert spec.cron is not None
            trigger = self.parsed((*path, "cron"), times.cron, spec.cron, tz)
            if spec.until is not None:
                until = self.parsed((*path, "until"), times.day_end, spec.until, tz)
                if until is None:
                    return None
            if trigger is None:
                return None
        return Post(spec.id, targets, spec.message, spec.link, images[0] if images else None, tz,
                    grace, spec.draft, at, trigger, spec.cron, until,
                    images=images if spec.images is not None else (),
                    first_comment=spec.first_comment, texts=dict(spec.message_for or {}))

    def live_event(self, spec: _LiveEventSpec, path: yamlfile.Path, default_tz: ZoneInfo,
                   known_targets: Mapping[str, Any]) -> LiveEvent | None:
        common = self.common(spec, path, default_tz, known_targets)
        self.url(spec.link, (*path, "link"))
        if common is None:
            return None
        tz, grace, targets = common
        starts = self.parsed((*path, "starts"), times.instant, spec.starts, tz)
        ends = self.parsed((*path, "ends"), times.instant, spec.ends, tz)
        if starts is not None and ends is not None and ends <= starts:
            self.fail((*path, "ends"), f"ends ({spec.ends}) must be after starts ({spec.starts})")
        reminders = []
        parts: set[str] = set()
        for i, reminder in enumerate(spec.reminders):
            rpath = (*path, "reminders", i)
            before = self.parsed((*rpath, "before"), times.duration, reminder.before)
            self.template(reminder.message, (*rpath, "message"))
            if before is None:
                continue
            if before <= timedelta(0):
                self.fail((*rpath, "before"), f"reminder must come before the start, got {reminder.before!r}")
            part = f"reminder-{times.short(before)}"
            if part in parts:
                self.fail((*rpath, "before"), f"two reminders at the same time ({part})")
            parts.add(part)
            reminders.append(Reminder(part, before, reminder.message))
        for key in ("on_start", "on_end"):
            value = getattr(spec, key)
            if value is not None:
                self.template(value, (*path, key))
        self.url(spec.image, (*path, "image"))
        if starts is None or ends is None:
            return None
        names = self.adapter_names
        threaded = frozenset(t for t in targets if spec.thread and fit.replies(names.get(t, "")))
        event = LiveEvent(spec.id, spec.title, starts, ends, spec.link, targets, tuple(reminders),
                          spec.on_start, spec.on_end, tz, grace, spec.draft, spec.image, threaded)
        rendered = []
        templated = [((*path, "reminders", i, "message"), r.message) for i, r in enumerate(spec.reminders)]
        templated += [((*path, key), getattr(spec, key)) for key in ("on_start", "on_end")
                      if getattr(spec, key) is not None]
        for where, template in templated:
            if templates.fields_problem(template, TEMPLATE_FIELDS) is not None:
                continue  # reported by template(); never rendered (a width may be huge)
            with contextlib.suppress(ValueError, TypeError, KeyError):  # reported by template()
                rendered.append((where, templates.render(template, event.values())))
        for where, problem in fit.event(names, path, targets, rendered, spec.image, spec.link):
            self.fail(where, problem)
        return event

    def template(self, text: str, path: yamlfile.Path) -> None:
        problem = templates.fields_problem(text, TEMPLATE_FIELDS)
        if problem is None and not text.strip():
            problem = "message is empty"
        if problem is None:
            try:  # also catches bad format specs such as {title:d}
                templates.render(text, _SAMPLE_VALUES)
            except (ValueError, TypeError) as exc:
                problem = f"bad template: {exc}"
        if problem is not None:
            self.fail(path, problem)


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
