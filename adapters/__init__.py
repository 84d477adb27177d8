"""Adapters by the name jobs.yaml uses: built-ins plus the `oyez.adapters` entry points."""

from __future__ import annotations

import functools
from importlib.metadata import entry_points
from typing import cast

from .base import Adapter

_BUILTIN = {
    "facebook_page": "adapters.facebook:FacebookPage",
    "mastodon": "adapters.mastodon:Mastodon",
    "bluesky": "adapters.bluesky:Bluesky",
    "webhook": "adapters.webhook:Webhook",
    "instagram": "adapters.instagram:Instagram",
    "threads": "adapters.threads:Threads",
}


def names() -> list[str]:
    """Every adapter name that can be used in jobs.yaml."""
    return sorted(set(_BUILTIN) | {ep.name for ep in entry_points(group="oyez.adapters")})


@functools.cache  # reading entry points scans every installed package (~4 ms): once per name
def get(name: str) -> type[Adapter]:
    """Return the adapter class registered as `name`, or raise KeyError."""
    for ep in entry_points(group="oyez.adapters", name=name):
        return cast(type[Adapter], ep.load())
    if name in _BUILTIN:
        module, _, attr = _BUILTIN[name].partition(":")
        return cast(type[Adapter], getattr(__import__(module, fromlist=[attr]), attr))
    raise KeyError(name)
