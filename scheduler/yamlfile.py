"""Safe YAML loading that remembers the line of every value.

Only plain data is built: no Python tags, a size cap, and a cap on the
values produced (an alias counts each time it is used), so a "billion
laughs" file is refused at once.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import yaml

from .errors import ConfigError

Path = tuple[str | int, ...]  # keys and indexes from the document's root
MAX_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 20  # jobs.yaml needs 5 (live_events, an event, reminders, a reminder, its keys)

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SCALAR_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:timestamp",
}
_constructor = yaml.constructor.SafeConstructor()


class Document:
    """Plain data from a YAML file, and what is needed to say where a path is.

    The node tree that locates any path is composed again only when a problem
    must be located (at 10k entries it is ~35 MB and 0.2 s); what valid files
    need is kept from the one pass over the parser's events: which texts a
    comment cut short, and the source of each integer.
    """

    def __init__(self, name: str, data: Any, text: str, cut: set[Path], sources: dict[Path, str]) -> None:
        self.name = name
        self.data = data
        self.text = text
        self.cut = cut
        self.sources = sources
        self._root: yaml.Node | None = None

    def _walk(self, path: Path) -> tuple[yaml.Node | None, int]:
        """The node at `path` (None if absent) and the line of it or its nearest enclosing value."""
        if self._root is None:
            self._root = yaml.compose(self.text, Loader=_Loader)
        node = self._root
        assert node is not None
        line = node.start_mark.line + 1
        for step in path:
            if isinstance(node, yaml.MappingNode):
                found = next(((k, v) for k, v in node.value if k.value == step), None)
                if found is None:
                    return None, line
                line, node = found[0].start_mark.line + 1, found[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
                node = node.value[step]
                line = node.start_mark.line + 1
            else:
                return None, line
        return node, line

    def where(self, path: Path) -> str:
        """Return `name:LINE` for `path`, or for the nearest enclosing value that exists."""
        return f"{self.name}:{self._walk(path)[1]}"

    def source(self, path: Path) -> str:
        """The text of the integer at `path` as written in the file (e.g. `0123`, not 83)."""
        return self.sources.get(path, "")

    def cut_by_comment(self, path: Path) -> bool:
        """True when the unquoted text at `path` is followed by ` #...` on its line.

        YAML reads that as a comment, so `message: Join us #NoToHate` means
        "Join us": hashtags vanish without a word unless someone says so.
        """
        return path in self.cut


def load(text: str, name: str) -> Document:
    """Parse `text` into a Document, or raise ConfigError with located problems."""
    if len(text.encode()) > MAX_BYTES:
        raise ConfigError([f"{name}:1: file is larger than {MAX_BYTES // 1024 // 1024} MiB"])
    reader = _Reader(text, name)
    try:
        found = reader.document()
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_syntax_problem(exc, text, name)]) from None
    except yaml.YAMLError as exc:  # e.g. a control character: has a position, not a mark
        position = getattr(exc, "position", 0) or 0
        line = text.count("\n", 0, position) + 1
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise ConfigError([f"{name}:{line}: YAML error: {reason}"]) from None
    if not found:
        raise ConfigError([f"{name}:1: file is empty"])
    if reader.problems:
        raise ConfigError(reader.problems)
    return Document(name, reader.data, text, reader.cut, reader.sources)


_COMMENT = re.compile(r"[ \t]+#")
_CURLY_QUOTES = "\u201c\u201d\u2018\u2019"


def _syntax_problem(exc: yaml.MarkedYAMLError, text: str, name: str) -> str:
    """The parser's error as what to do about it, at the line where the mistake is."""
    problem = exc.problem or str(exc)
    mark = exc.problem_mark or exc.context_mark
    if exc.context == "while scanning a quoted scalar" and exc.context_mark is not None:
        # the parser notices only at the end of the file; the mistake is where the quote opens
        mark, problem = exc.context_mark, "this quoted text has no closing quote: add it"
    line = mark.line + 1 if mark else 1
    source = text.splitlines()[line - 1] if 0 < line <= len(text.splitlines()) else ""
    if "mapping values are not allowed" in problem:
        if any(q in source for q in _CURLY_QUOTES):
            problem = ("curly quotes (\u201c \u201d) are not quotes to YAML: retype them as "
                       'straight double quotes "..."')
        else:
            problem = ('a ": " inside unquoted text starts a new key: put the whole text in '
                       'double quotes "..."')
    elif "\t" in source and "cannot start any token" in problem:
        problem = "a tab is used for indentation: indent with spaces"
    elif "did not find expected key" in problem:
        problem += " (text after a closing quote? put the whole text in quotes; or check the indentation)"
    return f"{name}:{line}: YAML syntax error: {problem}"


_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_INT = "tag:yaml.org,2002:int"
_Resolvers = dict[str | None, list[tuple[str, re.Pattern[str]]]]
_IMPLICIT: _Resolvers = yaml.resolver.Resolver.yaml_implicit_resolvers


def _resolved(value: str, implicit: tuple[bool, bool]) -> str:
    """The tag YAML gives an untagged scalar, as `Resolver.resolve` does (inlined: it is asked
    for every value of the file)."""
    if implicit[0]:  # plain: may be a number, a boolean, null or a timestamp
        for tag, pattern in _IMPLICIT.get(value[:1], ()):
            if pattern.match(value):
                return tag
        for tag, pattern in _IMPLICIT.get(None, ()):
            if pattern.match(value):
                return tag
    return _STR


class _Reader:
    """Builds plain data straight from the parser's events (no node tree), checking as
    `compose` and a safe constructor would: one document, known anchors, plain tags only,
    no duplicate or complex keys, and a budget of values (an alias counts each time it is used:
    without aliases a document cannot hold more values than it has characters)."""

    def __init__(self, text: str, name: str) -> None:
        self.text = text
        self.name = name
        self.loader = _Loader(text)
        self.next: Any = self.loader.get_event  # the parser's own method: no generator in between
        self.budget = len(text) + 100
        self.anchors: dict[str, tuple[Any, int, Any]] = {}  # value, values in it, where
        self.problems: list[str] = []
        self.cut: set[Path] = set()
        self.sources: dict[Path, str] = {}
        self.data: Any = None

    def document(self) -> bool:
        """Read the stream's one document into `data`; False if there is none."""
        try:
            self.next()  # stream start
            start: Any = self.next()
            if isinstance(start, yaml.StreamEndEvent):
                return False
            self.data = self.value(self.next(), ())
            self.next()  # document end
            extra: Any = self.next()
        finally:
            self.loader.dispose()
        if not isinstance(extra, yaml.StreamEndEvent):
            raise yaml.composer.ComposerError("expected a single document in the stream",
                                              start.start_mark, "but found another document",
                                              extra.start_mark)
        return True

    def fail(self, mark: Any, message: str) -> None:
        self.problems.append(f"{self.name}:{mark.line + 1}: {message}")

    def spend(self, count: int, mark: Any) -> bool:
        """Take `count` values from the budget; False (said once) when it runs out."""
        before = self.budget
        self.budget -= count
        if self.budget < 0 <= before:
            self.fail(mark, "too many values: aliases (*name) expand too far")
        return self.budget >= 0

    def value(self, event: Any, path: Path) -> Any:
        """The value that starts with `event` (its events are consumed)."""
        if type(event) is yaml.ScalarEvent and event.anchor is None and self.budget > 0:
            self.budget -= 1  # the common case, first
            return self.scalar(event, path)
        mark: Any = event.start_mark
        if isinstance(event, yaml.AliasEvent):
            if event.anchor not in self.anchors:
                raise yaml.composer.ComposerError(None, None, f"found undefined alias {event.anchor!r}",
                                                  mark)
            value, count, _ = self.anchors[event.anchor]
            return value if self.spend(count, mark) else None
        before = self.budget
        if not self.spend(1, event.start_mark):
            self.skip(event)
            return None
        if len(path) >= MAX_DEPTH and isinstance(event, yaml.CollectionStartEvent):
            self.fail(mark, f"values nested more than {MAX_DEPTH} levels deep")  # not a traceback
            self.skip(event)
            return None
        if isinstance(event, yaml.ScalarEvent):
            value = self.scalar(event, path)
        elif isinstance(event, yaml.MappingStartEvent):
            value = self.mapping(event, path)
        else:
            value = self.sequence(event, path)
        if event.anchor is not None:
            if event.anchor in self.anchors:
                raise yaml.composer.ComposerError(
                    f"found duplicate anchor {event.anchor!r}; first occurrence",
                    self.anchors[event.anchor][2], "second occurrence", event.start_mark)
            self.anchors[event.anchor] = (value, before - self.budget, event.start_mark)
        return value

    def skip(self, event: Any) -> None:
        """Consume the rest of the value that starts with `event`."""
        depth = int(isinstance(event, yaml.CollectionStartEvent))
        while depth:
            found = self.next()
            depth += isinstance(found, yaml.CollectionStartEvent) - isinstance(found, yaml.CollectionEndEvent)

    def scalar(self, event: Any, path: Path) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            tag = _resolved(event.value, event.implicit)
        if tag == _STR:
            if not event.style and path:  # plain text: a " #" after it on its line is a comment
                end = event.end_mark.index
                if self.text[end:end + 1] in (" ", "\t"):
                    stop = self.text.find("\n", end)
                    if _COMMENT.match(self.text, end, stop if stop >= 0 else len(self.text)):
                        self.cut.add(path)
            return event.value
        if tag == _TIMESTAMP:
            return event.value  # times are parsed by oyez itself, in the file's time zone
        if tag not in _SCALAR_TAGS:
            return self.bad_tag(event, tag)
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        try:
            value = _constructor.yaml_constructors[tag](_constructor, node)
        except (yaml.YAMLError, ValueError, OverflowError):  # e.g. `0b_`, which resolves as an int
            self.fail(event.start_mark, f"bad value {event.value!r} (quote it to make it text)")
            return None
        if tag == _INT:
            self.sources[path] = event.value
        return value

    def mapping(self, event: Any, path: Path) -> Any:
        if event.tag not in (None, "!", _MAP):
            self.skip(event)
            return self.bad_tag(event, event.tag)
        result: dict[Any, Any] = {}
        key_event: Any
        while not isinstance(key_event := self.next(), yaml.MappingEndEvent):
            key: Any = getattr(key_event, "value", None)
            if not isinstance(key_event, yaml.ScalarEvent) or (
                    key_event.tag is None and key == "<<" and key_event.style == ""):
                self.fail(key_event.start_mark, "unsupported mapping key")
                self.skip(key_event)
                self.skip(self.next())  # never read: `<<: *x` is no merge here
                continue
            value_event: Any = self.next()
            if key in result:
                self.fail(key_event.start_mark, f"duplicate key {key!r}")
                self.skip(value_event)
                continue
            key = sys.intern(key)  # the same few keys in every entry: one string each
            result[key] = self.value(value_event, (*path, key))
        return result

    def sequence(self, event: Any, path: Path) -> Any:
        if event.tag not in (None, "!", _SEQ):
            self.skip(event)
            return self.bad_tag(event, event.tag)
        result: list[Any] = []
        item: Any
        while not isinstance(item := self.next(), yaml.SequenceEndEvent):
            result.append(self.value(item, (*path, len(result))))
        return result

    def bad_tag(self, event: Any, tag: str | None) -> None:
        self.fail(event.start_mark, f"unsupported YAML tag {tag!r}")
