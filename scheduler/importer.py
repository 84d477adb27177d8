"""`oyez import posts.csv`: append one-off posts from a spreadsheet to jobs.yaml.

The CSV has a header row naming its columns: id, at and message (required),
targets, link and image (optional; targets separated by `;` or `,`). It may
start with a UTF-8 BOM and use CRLF line ends (as Excel saves them). `at` is
either ISO (`2027-01-14 18:00`, seconds and an offset allowed) or day-first
as in the UK (`14/01/2027 18:00`, `14/01/2027 18:00:00`, `14/01/2027 6:00 PM`);
month-first US dates are not accepted, since 01/02 would be ambiguous.

jobs.yaml is edited round-trip (ruamel.yaml): comments, order and layout are
kept and the new posts are appended to `posts:`. Every row is checked first,
together with the rest of the file (`config.parse`); if any row is bad,
nothing is written and each bad row is reported as `posts.csv:ROW: message`
(ROW as a spreadsheet numbers it: the header is row 1).
"""

from __future__ import annotations

import csv
import difflib
import io
import os
import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import LiteralScalarString
from ruamel.yaml.util import load_yaml_guess_indent

from . import config
from .errors import ConfigError

COLUMNS = ("id", "at", "targets", "message", "link", "image")
REQUIRED = ("id", "at", "message")
DAY_FIRST = ("%d/%m/%Y %H:%M", "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %I:%M %p", "%d/%m/%Y %I:%M:%S %p")
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{1,2}:\d{2}")
_LOCATED = re.compile(r"^[^:]+:(\d+): (.*)$", re.S)
_EMPTY_POSTS = re.compile(r"^posts:\s*(\[\s*\])?\s*(#.*)?$")  # `posts: []` becomes a block list


def import_csv(csv_path: str, jobs_path: str) -> int:
    """Append the CSV's posts to jobs.yaml; return how many. Raises ConfigError, writing nothing."""
    name = os.path.basename(csv_path)
    rows, problems = read_rows(_read(csv_path, name), name)
    jobs = Path(jobs_path)
    original = _read(jobs_path, jobs.name)
    updated, spans = append_posts(original, [post for _, post in rows], jobs.name)
    try:  # the rows that could be read are checked with the file, so each bad row is reported
        config.parse(updated.encode(), name=jobs.name, path=jobs_path, strict_env=False)
    except ConfigError as exc:
        problems += _blame(exc.problems, [n for n, _ in rows], spans, name)
    if problems:
        raise ConfigError(sorted(problems, key=_row_order))
    old = original.splitlines()
    for op, i1, i2, _, _ in difflib.SequenceMatcher(None, old, updated.splitlines(),
                                                    autojunk=False).get_opcodes():
        if op != "equal" and not (op == "insert" or all(_EMPTY_POSTS.match(x) for x in old[i1:i2])):
            raise ConfigError([f"{jobs.name}:{i1 + 1}: cannot append without changing this line "
                               "of the file's layout; add the posts by hand"])
    _replace(jobs, updated)
    return len(rows)


def _read(path: str, name: str) -> str:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([f"{name}:0: cannot read: {exc.strerror}"]) from None
    try:
        return raw.decode("utf-8-sig")  # Excel's "CSV UTF-8" starts with a BOM
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{name}:1: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                           "save it as CSV UTF-8"]) from None


def read_rows(text: str, name: str) -> tuple[list[tuple[int, CommentedMap]], list[str]]:
    """(spreadsheet row, post) for each good non-empty row, and a problem for each bad one.

    Raises ConfigError when the header is wrong (then no row can be read).
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lower() for h in next(reader, [])]
        records = list(reader)
    except csv.Error as exc:
        raise ConfigError([f"{name}:{reader.line_num}: {exc}"]) from None
    problems = [f"{name}:1: unknown column {h!r} (columns: {', '.join(COLUMNS)})"
                for h in header if h not in COLUMNS]
    problems += [f"{name}:1: missing column {c!r}" for c in REQUIRED if c not in header]
    if problems:
        raise ConfigError(problems)
    rows = []
    for number, record in enumerate(records, start=2):
        cells = {h: v.strip() for h, v in zip(header, record, strict=False) if v.strip()}
        if not cells:
            continue
        missing = [c for c in REQUIRED if c not in cells]
        if missing:
            problems.append(f"{name}:{number}: empty {', '.join(missing)}")
            continue
        try:
            rows.append((number, _post(cells)))
        except ValueError as exc:
            problems.append(f"{name}:{number}: {exc}")
    return rows, problems


def _post(cells: dict[str, str]) -> CommentedMap:
    post = CommentedMap()
    post["id"] = cells["id"]
    post["at"] = wall_clock(cells["at"])
    if "targets" in cells:
        targets = CommentedSeq(t.strip() for t in re.split(r"[;,]", cells["targets"]) if t.strip())
        targets.fa.set_flow_style()
        post["targets"] = targets
    message = cells["message"].replace("\r\n", "\n")
    post["message"] = LiteralScalarString(message) if "\n" in message else message
    for key in ("link", "image"):
        if key in cells:
            post[key] = cells[key]
    return post


def wall_clock(text: str) -> str:
    """`at` as jobs.yaml writes it: ISO kept as is, day-first turned into ISO. Raises ValueError."""
    if _ISO.match(text):
        return text
    for fmt in DAY_FIRST:
        try:
            moment = datetime.strptime(text.upper(), fmt)
        except ValueError:
            continue
        return f"{moment:%Y-%m-%d %H:%M}" + (f":{moment:%S}" if moment.second else "")
    raise ValueError(f"at: cannot read {text!r} as a date and time (use 2027-01-14 18:00 "
                     "or 14/01/2027 18:00, day first)")


def append_posts(text: str, posts: list[CommentedMap], name: str) -> tuple[str, list[tuple[int, int]]]:
    """`text` with `posts` appended to its posts: list, and the 1-based lines [first, last]
    of each new one."""
    crlf = "\r\n" in text
    text = text.replace("\r\n", "\n")  # ruamel keeps layout best with plain line ends
    try:
        _, indent, dash = load_yaml_guess_indent(text)
        yaml = YAML(typ="rt")
        yaml.preserve_quotes = True
        yaml.width = 4096  # never re-wrap long lines
        yaml.indent(mapping=2, sequence=indent or 4, offset=dash or 2)
        data = yaml.load(text)
    except YAMLError as exc:
        raise ConfigError([f"{name}:1: cannot read it to append to: {exc}"]) from None
    if not isinstance(data, CommentedMap):
        raise ConfigError([f"{name}:1: expected a mapping with targets and posts"])
    existing = data.setdefault("posts", CommentedSeq())
    if not isinstance(existing, CommentedSeq):
        raise ConfigError([f"{name}:{data.lc.key('posts')[0] + 1}: posts: must be a list"])
    existing.fa.set_block_style()
    before = len(existing)
    if before and posts:
        _move_trailing_comment(existing[-1], posts[-1])
    existing.extend(posts)
    out = io.StringIO()
    yaml.dump(data, out)
    updated = out.getvalue()
    reread = yaml.load(updated)
    keys = list(reread)
    after = keys.index("posts") + 1
    end = reread.lc.key(keys[after])[0] if after < len(keys) else len(updated.splitlines())
    starts = [reread["posts"].lc.item(i)[0] + 1 for i in range(before, len(reread["posts"]))]
    spans = list(zip(starts, [*(s - 1 for s in starts[1:]), end], strict=True))
    return (updated.replace("\n", "\r\n") if crlf else updated), spans


def _move_trailing_comment(last: Any, new_last: CommentedMap) -> None:
    """The blank lines or comment after the last post belong after the new last post."""
    if not isinstance(last, CommentedMap) or not last:
        return
    key, new_key = list(last)[-1], list(new_last)[-1]
    trailing = last.ca.items.pop(key, None)
    if trailing is None:
        return
    token = trailing[2]
    if isinstance(new_last[new_key], LiteralScalarString) and token is not None \
            and token.value.startswith("\n"):
        token.value = token.value[1:]  # a block scalar ends its own line
    new_last.ca.items[new_key] = trailing


def _blame(problems: list[str], rows: list[int], spans: list[tuple[int, int]], name: str) -> list[str]:
    """Turn `jobs.yaml:LINE: ...` problems inside an appended post into `posts.csv:ROW: ...`."""
    blamed = []
    for problem in problems:
        match = _LOCATED.match(problem)
        line = int(match.group(1)) if match else 0
        owner = [row for row, (first, last) in zip(rows, spans, strict=True) if first <= line <= last]
        blamed.append(f"{name}:{owner[0]}: {match.group(2)}" if match and owner else problem)
    return blamed


def _row_order(problem: str) -> tuple[int, str]:
    match = _LOCATED.match(problem)
    return (int(match.group(1)) if match else 0, problem)


def _replace(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (a running daemon never reads half a file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
