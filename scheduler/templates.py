"""Message templates: `{field}` or `{field:format}` with a fixed set of fields, nothing else."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from datetime import datetime
from typing import Any

_formatter = string.Formatter()
MAX_FIELDS = 50  # with widths under 1000, a message stays under 50k characters


def fields_problem(template: str, allowed: frozenset[str]) -> str | None:
    """Return why `template` is not acceptable, or None when it is."""
    try:
        parts = list(_formatter.parse(template))
    except ValueError as exc:
        return f"bad template: {exc} (write {{{{ and }}}} for literal braces)"
    if sum(name is not None for _, name, _, _ in parts) > MAX_FIELDS:
        return f"too many template fields (at most {MAX_FIELDS})"
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in allowed:
            return f"unknown template field {{{name}}} (allowed: {', '.join(sorted(allowed))})"
        if conversion or (spec and ("{" in spec or "}" in spec)):
            return f"template field {{{name}}} may only carry a plain format like {{{name}:%H:%M}}"
        if spec and re.search(r"\d{4,}", spec):
            return f"template field {{{name}}}: format width too large"
    return None


def render(template: str, values: Mapping[str, Any]) -> str:
    """Fill `template` from `values`, by plain lookup and `format()` only.

    Times take strftime codes, plus `%P` for a lower-case am/pm on every
    platform: `{starts:%-I%P}` gives "6pm".
    """
    out: list[str] = []
    for literal, name, spec, _ in _formatter.parse(template):
        out.append(literal)
        if name is not None:
            value = values[name]
            if spec and isinstance(value, datetime):
                spec = _lower_ampm(spec, value)
            out.append(format(value, spec or ""))
    return "".join(out)


def _lower_ampm(spec: str, moment: datetime) -> str:
    """Replace `%P` by am/pm; codes are matched in pairs, so `%%P` stays a literal."""
    ampm = moment.strftime("%p").lower()
    return re.sub(r"%.", lambda m: ampm if m.group(0) == "%P" else m.group(0), spec)
