"""A fake systemd notification socket: a datagram socket the test binds and reads."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

BOUND = 20.0  # seconds: an upper bound on every wait, not an expected duration

Message = dict[str, str]


def parse(datagram: bytes) -> Message:
    """``KEY=value`` lines (sd_notify(3)) as a dict."""
    fields = {}
    for line in datagram.decode().splitlines():
        key, _, value = line.partition("=")
        fields[key] = value
    return fields


class NotifySocket:
    """Bound in the abstract namespace (``@...``), as systemd's own socket may be."""

    def __init__(self) -> None:
        self.name = f"@failover-test-{os.getpid()}-{os.urandom(4).hex()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind("\0" + self.name[1:])
        self.messages: list[Message] = []  # every message received, in order

    def receive(self, timeout: float) -> Message | None:
        """The next message, or None if none comes within ``timeout`` seconds."""
        self.sock.settimeout(timeout)
        try:
            message = parse(self.sock.recv(4096))
        except (TimeoutError, BlockingIOError):  # (a timeout of 0: non-blocking)
            return None
        self.messages.append(message)
        return message

    def drain(self) -> list[Message]:
        """The messages already queued (none is waited for)."""
        drained = []
        while (message := self.receive(0)) is not None:
            drained.append(message)
        return drained

    def wait_for(
        self, what: str, predicate: Callable[[Message], bool], check: Callable[[], None] = bool
    ) -> Message:
        """The first message from now on that satisfies ``predicate``; fails after BOUND.
        ``check`` runs between messages (to fail early when the daemon died)."""
        deadline = time.monotonic() + BOUND
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(min(left, 0.5))
            if message is not None and predicate(message):
                return message
            check()
        raise AssertionError(f"no {what} within {BOUND} s; received {self.messages}")

    def close(self) -> None:
        self.sock.close()
