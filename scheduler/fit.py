"""Whether each message fits each of its targets' networks, for `oyez validate`.

Pure functions over validated values: they return problems as (YAML path,
message) for the config builder to locate. Adapters say what their network
refuses through `adapters.base.message_problems` (their `message_problems`,
`text_problem` or `max_chars`), and whether they can publish comments or
replies through `replies`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import adapters
from adapters.base import Message, message_problems

from . import yamlfile

Problem = tuple[yamlfile.Path, str]


def replies(adapter_name: str) -> bool:
    """Whether the adapter publishes comments or replies (first comments, live threads)."""
    return bool(getattr(_adapter(adapter_name), "replies", False))


def message(target: str, adapter_name: str, text: str, images: tuple[str, ...], link: str | None,
            where: yamlfile.Path, item: yamlfile.Path, *, shared: bool,
            options: Mapping[str, Any] | None = None) -> list[Problem]:
    """What `target`'s network would refuse in one message: text problems at `where`, image
    problems at the post or event (`item`); a `shared` text says how to give the target its own."""
    adapter = _adapter(adapter_name)
    found = [] if adapter is None else message_problems(adapter, Message(
        text, link, images[0] if images else None, images, options=options or {}))
    problems: list[Problem] = []
    for problem in found:
        if "image" in problem:
            problems.append((item, f"target {target}: {problem}"))
        else:
            hint = f"; give {target} its own text with `message_for: {{{target}: ...}}`" if shared else ""
            problems.append((where, f"target {target}: {problem}{hint}"))
    return problems


def post(adapters_by_target: Mapping[str, str], path: yamlfile.Path, targets: tuple[str, ...],
         text: str, own: Mapping[str, str], first_comment: str | None, images: tuple[str, ...],
         link: str | None, options: Mapping[str, Any] | None = None) -> list[Problem]:
    """Problems of a post's texts (`text`, each target's `own` text, its first comment) for
    each of its targets whose adapter is known (`adapters_by_target`)."""
    problems: list[Problem] = [
        ((*path, "message_for", name), f"message_for: {name!r} is not one of this post's targets "
                                       f"({', '.join(targets)})")
        for name in own if name not in targets]
    for name in targets:
        adapter_name = adapters_by_target.get(name)
        if adapter_name is None:
            continue  # the target itself is wrong, and reported
        where = (*path, "message_for", name) if name in own else (*path, "message")
        problems += message(name, adapter_name, own.get(name, text), images, link, where, path,
                            shared=name not in own, options=options)
        if first_comment is not None and not replies(adapter_name):
            problems.append(((*path, "first_comment"), f"target {name}: {adapter_name} takes no "
                             "first comment from oyez (leave it out, or list only other targets)"))
        elif first_comment is not None:
            problems += message(name, adapter_name, first_comment, (), None, (*path, "first_comment"),
                                path, shared=False)
    return problems


def event(adapters_by_target: Mapping[str, str], path: yamlfile.Path, targets: tuple[str, ...],
          texts: list[tuple[yamlfile.Path, str]], image: str | None, link: str | None) -> list[Problem]:
    """Problems of a live event's rendered messages (each at its `texts` path) for each target."""
    return [problem for where, text in texts for name in targets if name in adapters_by_target
            for problem in message(name, adapters_by_target[name], text, (image,) if image else (),
                                   link, where, path, shared=False)]


def _adapter(name: str) -> Any:
    try:
        return adapters.get(name)
    except KeyError:
        return None
