"""The systemd notify protocol: one datagram to $NOTIFY_SOCKET per state change.

READY=1 when the first schedule is built, WATCHDOG=1 from the main loop (so a
hung daemon is restarted), STOPPING=1 at shutdown. Outside systemd
($NOTIFY_SOCKET unset) every call does nothing. See sd_notify(3).
"""

from __future__ import annotations

import contextlib
import os
import socket


class Notifier:
    """Sends states to the service manager, if there is one."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        # '@' names a socket in the abstract namespace: a leading NUL byte on the wire
        self.address = "\0" + path[1:] if path.startswith("@") else path
        usec = env.get("WATCHDOG_USEC", "")
        ours = env.get("WATCHDOG_PID", str(os.getpid())) == str(os.getpid())
        # systemd's advice: ping at half the interval
        self.watchdog_seconds = int(usec) / 2e6 if usec.isdigit() and ours else None

    def notify(self, state: str) -> bool:
        """Send `state` (e.g. "READY=1"); False when not under systemd or the send failed."""
        if not self.address:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock, \
                contextlib.suppress(OSError):
            # never block: a manager that is not reading must not stall the daemon
            sock.sendto(state.encode(), socket.MSG_DONTWAIT, self.address)
            return True
        return False
