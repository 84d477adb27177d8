"""Safe YAML loading that remembers the line of every value.

Only plain data is built: no Python tags, a size cap, and a cap on the
values produced (an alias counts each time it is used), so a "billion
laughs" file is refused at once.
"""

from __future__ import annotations

from typing import Any

import yaml

from .errors import ConfigError

Path = tuple[str | int, ...]
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
_COLLECTION_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}
_constructor = yaml.constructor.SafeConstructor()


class Document:
    """Plain data from a YAML file plus the line where each path starts."""

    def __init__(self, name: str, data: Any, lines: dict[Path, int]) -> None:
        self.name = name
        self.data = data
        self.lines = lines

    def where(self, path: Path) -> str:
        """Return `name:LINE` for the nearest enclosing path that has a line."""
        while path not in self.lines and path:
            path = path[:-1]
        return f"{self.name}:{self.lines.get(path, 1)}"


def load(text: str, name: str) -> Document:
    """Parse `text` into a Document, or raise ConfigError with located problems."""
    if len(text.encode()) > MAX_BYTES:
        raise ConfigError([f"{name}:1: file is larger than {MAX_BYTES // 1024 // 1024} MiB"])
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise ConfigError([f"{name}:{line}: YAML syntax error: {exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:  # e.g. a control character: has a position, not a mark
        position = getattr(exc, "position", 0) or 0
        line = text.count("\n", 0, position) + 1
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise ConfigError([f"{name}:{line}: YAML error: {reason}"]) from None
    if node is None:
        raise ConfigError([f"{name}:1: file is empty"])
    lines: dict[Path, int] = {}
    problems: list[str] = []
    # without aliases a document cannot hold more values than it has characters
    budget = [len(text) + 100]
    data = _convert(node, (), lines, problems, budget, name)
    if problems:
        raise ConfigError(problems)
    return Document(name, data, lines)


def _convert(
    node: yaml.Node,
    path: Path,
    lines: dict[Path, int],
    problems: list[str],
    budget: list[int],
    name: str,
) -> Any:
    line = node.start_mark.line + 1
    lines.setdefault(path, line)
    budget[0] -= 1
    if budget[0] < 0:
        if budget[0] == -1:
            problems.append(f"{name}:{line}: too many values: aliases (*name) expand too far")
        return None
    if isinstance(node, yaml.CollectionNode) and node.tag not in _COLLECTION_TAGS:
        problems.append(f"{name}:{line}: unsupported YAML tag {node.tag!r}")
        return None
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                problems.append(f"{name}:{key_node.start_mark.line + 1}: unsupported mapping key")
                continue
            key = key_node.value
            if key in result:
                problems.append(f"{name}:{key_node.start_mark.line + 1}: duplicate key {key!r}")
                continue
            lines[(*path, key)] = key_node.start_mark.line + 1
            result[key] = _convert(value_node, (*path, key), lines, problems, budget, name)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _convert(item, (*path, i), lines, problems, budget, name)
            for i, item in enumerate(node.value)
        ]
    if node.tag not in _SCALAR_TAGS:
        problems.append(f"{name}:{line}: unsupported YAML tag {node.tag!r}")
        return None
    if node.tag == "tag:yaml.org,2002:timestamp":
        return node.value  # times are parsed by oyez itself, in the file's time zone
    return _constructor.construct_object(node)
