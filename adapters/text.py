"""Text as networks count it: grapheme clusters, URLs and mentions.

Mastodon and Bluesky both limit posts in grapheme clusters (what a reader
sees as one character: 👍🏽 is one, though it is two code points). Python's
`len` counts code points, so counting uses the `regex` module's `\\X`, which
follows the current Unicode segmentation rules (UAX #29) and is kept up to date
with each Unicode release.
"""

from __future__ import annotations

import regex

# Wide enough for what people paste into posts; trailing punctuation is not part of a URL.
URL = regex.compile(r"https?://[^\s<>\"']+?(?=[.,;:!?)\]'\"]*(?:\s|$))")
MENTION = regex.compile(r"(?<![\w@])@([A-Za-z0-9_]+)(?:@([A-Za-z0-9.-]+\.[A-Za-z]{2,}))?")
HANDLE = regex.compile(r"(?<![\w@])@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")
_GRAPHEME = regex.compile(r"\X")


def graphemes(text: str) -> int:
    """The number of grapheme clusters in `text`."""
    if text.isascii():  # fast path: in ASCII only CR LF joins two code points into one cluster
        return len(text) - text.count("\r\n")
    return len(_GRAPHEME.findall(text))


def mastodon_text(text: str, url_cost: int = 23) -> str:
    """`text` as Mastodon's StatusLengthValidator sees it: every URL `url_cost`
    characters long, a remote mention `@user@domain` only `@user`."""
    return MENTION.sub(lambda m: "@" + m.group(1), URL.sub("x" * url_cost, text))


def mastodon_length(text: str, url_cost: int = 23) -> int:
    """Length as Mastodon counts it: the graphemes of `mastodon_text`."""
    return graphemes(mastodon_text(text, url_cost))


def utf8_span(text: str, start: int, end: int) -> tuple[int, int]:
    """Character offsets [start, end) in `text` as UTF-8 byte offsets."""
    head = len(text[:start].encode())
    return head, head + len(text[start:end].encode())
