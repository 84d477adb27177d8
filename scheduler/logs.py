"""Log line formats: human text by default, or one JSON object per line for log shippers."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from .secrets import redact

# what every LogRecord has; anything else came in through `extra=` and becomes a field
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", ...extra fields}`, one object per line.

    Runs after the redacting filter has scrubbed the message; extra fields are
    scrubbed here, since they are not part of the message.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value if isinstance(value, int | float | bool) or value is None \
                    else redact(str(value))
        return json.dumps(entry, ensure_ascii=False)


def formatter(name: str) -> logging.Formatter:
    """The formatter for `--log-format NAME` (text or json)."""
    return JsonFormatter() if name == "json" else logging.Formatter(TEXT)
