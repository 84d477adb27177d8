"""Safe YAML loading that remembers the line of every value.

Only plain data is built: no Python tags, a size cap, and a cap on the
values produced (an alias counts each time it is used), so a "billion
laughs" file is refused at once.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from .errors import ConfigError

Path = tuple[str | int, ...]  # keys and indexes from the document's root
MAX_BYTES = 4 * 1024 * 1024

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
    """Plain data from a YAML file, and its node tree to say where a path is."""

    def __init__(self, name: str, data: Any, root: yaml.Node, text: str = "") -> None:
        self.name = name
        self.data = data
        self.root = root
        self.text = text

    def _walk(self, path: Path) -> tuple[yaml.Node | None, int]:
        """The node at `path` (None if absent) and the line of it or its nearest enclosing value."""
        node, line = self.root, self.root.start_mark.line + 1
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
        """The text of the scalar at `path` as written in the file (e.g. `0123`, not 83)."""
        node = self._walk(path)[0]
        return str(node.value) if isinstance(node, yaml.ScalarNode) else ""

    def cut_by_comment(self, path: Path) -> bool:
        """True when the unquoted text at `path` is followed by ` #...` on its line.

        YAML reads that as a comment, so `message: Join us #NoToHate` means
        "Join us": hashtags vanish without a word unless someone says so.
        """
        node = self._walk(path)[0]
        if not isinstance(node, yaml.ScalarNode) or node.style:  # plain: None, or "" from libyaml
            return False
        end = node.end_mark.index
        stop = self.text.find("\n", end)
        return bool(_COMMENT.match(self.text, end, stop if stop >= 0 else len(self.text)))


def load(text: str, name: str) -> Document:
    """Parse `text` into a Document, or raise ConfigError with located problems."""
    if len(text.encode()) > MAX_BYTES:
        raise ConfigError([f"{name}:1: file is larger than {MAX_BYTES // 1024 // 1024} MiB"])
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_syntax_problem(exc, text, name)]) from None
    except yaml.YAMLError as exc:  # e.g. a control character: has a position, not a mark
        position = getattr(exc, "position", 0) or 0
        line = text.count("\n", 0, position) + 1
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise ConfigError([f"{name}:{line}: YAML error: {reason}"]) from None
    if node is None:
        raise ConfigError([f"{name}:1: file is empty"])
    problems: list[str] = []
    # without aliases a document cannot hold more values than it has characters
    budget = [len(text) + 100]
    data = _convert(node, problems, budget, name)
    if problems:
        raise ConfigError(problems)
    return Document(name, data, node, text)


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


def _convert(node: yaml.Node, problems: list[str], budget: list[int], name: str) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        if budget[0] == -1:
            problems.append(f"{name}:{node.start_mark.line + 1}: too many values: "
                            "aliases (*name) expand too far")
        return None
    tag = node.tag
    if tag == _STR:
        return node.value
    if isinstance(node, yaml.MappingNode):
        if tag != "tag:yaml.org,2002:map":
            return _bad_tag(node, problems, name)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                problems.append(f"{name}:{key_node.start_mark.line + 1}: unsupported mapping key")
            elif key in result:
                problems.append(f"{name}:{key_node.start_mark.line + 1}: duplicate key {key!r}")
            else:
                result[key] = _convert(value_node, problems, budget, name)
        return result
    if isinstance(node, yaml.SequenceNode):
        if tag != "tag:yaml.org,2002:seq":
            return _bad_tag(node, problems, name)
        return [_convert(item, problems, budget, name) for item in node.value]
    if tag not in _SCALAR_TAGS:
        return _bad_tag(node, problems, name)
    if tag == "tag:yaml.org,2002:timestamp":
        return node.value  # times are parsed by oyez itself, in the file's time zone
    try:
        return _constructor.construct_object(node)
    except (yaml.YAMLError, ValueError, OverflowError):  # e.g. `0b_`, which resolves as an int
        problems.append(f"{name}:{node.start_mark.line + 1}: bad value {node.value!r} "
                        "(quote it to make it text)")
        return None


def _bad_tag(node: yaml.Node, problems: list[str], name: str) -> None:
    problems.append(f"{name}:{node.start_mark.line + 1}: unsupported YAML tag {node.tag!r}")
