"""What the control server and its clients agree on: paths, limits, the token file.

The JSON shapes themselves are documented on ``failover.api.protocol`` (status)
and in docs/api.md; this module holds the constants both sides must share so
that a change to one is a change to the other.
"""

from __future__ import annotations

from pathlib import Path

from failover.errors import UsageError

API_VERSION = "v1"
STATUS_PATH = f"/{API_VERSION}/status"
TRANSITIONS_PATH = f"/{API_VERSION}/transitions"
COMMANDS_PREFIX = f"/{API_VERSION}/commands/"
BANDWIDTH_PATH = f"/{API_VERSION}/replication/bandwidth"
VERIFY_PATH = f"/{API_VERSION}/replication/verify"
VERIFY_TIMEOUT = 900.0
"""Seconds a client waits for a verify (both copies are read in full)."""

DEFAULT_TRANSITIONS_LIMIT = 50
MAX_TRANSITIONS_LIMIT = 1000


def read_token_file(path: str | Path) -> str:
    """The bearer token stored in ``path`` (surrounding whitespace removed).

    Raises ``UsageError`` when the file cannot be read or holds no token, so
    neither the daemon nor the CLI ever runs with an empty token by accident.
    """
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UsageError(f"cannot read the control token file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"the control token file {path} is not UTF-8 text") from None
    if not token:
        raise UsageError(f"the control token file {path} is empty")
    if any(ch.isspace() for ch in token):
        raise UsageError(f"the control token in {path} must be one word (no spaces)")
    return token
