"""The project's exception types, split by who is at fault.

- ``UsageError``: the operator or the calling code asked for something invalid
  (a bad config file, a command illegal in this state). Shown as a one-line
  message, never a traceback.
- ``PeerProtocolError``: the peer (or anything on the network) sent something
  malformed, forged, replayed or of an unknown version. Counted and dropped;
  it never crashes the daemon or changes a state.
- ``TransportError``: a link failed (socket closed, cable pulled). The link is
  marked down; the core decides what that means.
"""

from __future__ import annotations


class FailoverError(Exception):
    """Base of every error this project raises on purpose."""


class UsageError(FailoverError):
    """Local misuse: bad input from the operator, the config or the caller."""


class ConfigError(UsageError):
    """A configuration file is invalid. ``problems`` lists every one found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class SpecError(FailoverError):
    """The transition table in spec/ is malformed (found when it is loaded)."""


class PeerProtocolError(FailoverError):
    """The remote side broke the protocol: malformed, forged or replayed frame."""


class TransportError(FailoverError):
    """A transport could not send or receive; the link is considered down."""


class PluginNotFound(UsageError):
    """A configured plugin name is not installed."""
