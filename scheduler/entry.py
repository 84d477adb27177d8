"""The `oyez` console script: hold stop signals first, then import the rest.

Importing oyez takes a few tenths of a second (pydantic, SQLAlchemy,
APScheduler). A service manager's SIGTERM in that window would otherwise kill
the daemon mid-start with no cleanup, so the signals are held from the first
line: `oyez run` then treats a held SIGTERM as a clean stop (`take_held`),
and every other command gets the signal's default effect (`release`).
"""

from __future__ import annotations

import signal
from types import FrameType

HELD = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_pending: list[int] = []
_holding = False


def _hold(signum: int, _frame: FrameType | None) -> None:
    _pending.append(signum)


def hold() -> None:
    """Record SIGTERM, SIGINT and SIGHUP instead of acting on them, until released or taken."""
    global _holding
    _holding = True
    for signum in HELD:
        signal.signal(signum, _hold)


def take_held() -> list[int]:
    """The signals held so far (the caller installs its own handlers first)."""
    global _holding
    _holding = False
    taken = list(_pending)
    _pending.clear()
    return taken


def release() -> None:
    """Give the signals back their default effect, and deliver any that were held."""
    if not _holding:
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    for signum in take_held():
        signal.raise_signal(signum)


def main() -> int:
    """Entry point of the `oyez` console script and of `python -m scheduler`."""
    hold()
    from .cli import main as cli_main

    return cli_main()
