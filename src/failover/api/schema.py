"""What the control server and its clients agree on: paths, limits, the token file.

The JSON shapes themselves are documented on ``failover.api.protocol`` (status)
and in docs/api.md; this module holds the constants both sides must share so
that a change to one is a change to the other.
"""

from __future__ import annotations

import hmac
import os
import stat
from pathlib import Path

from failover.errors import UsageError

API_VERSION = "v1"
STATUS_PATH = f"/{API_VERSION}/status"
TRANSITIONS_PATH = f"/{API_VERSION}/transitions"
COMMANDS_PREFIX = f"/{API_VERSION}/commands/"
BANDWIDTH_PATH = f"/{API_VERSION}/replication/bandwidth"
VERIFY_PATH = f"/{API_VERSION}/replication/verify"
OPENAPI_PATH = f"/{API_VERSION}/openapi.json"
METRICS_PATH = "/metrics"
"""Prometheus metrics (docs/metrics.md): outside the versioned API, where scrapers look."""
VERIFY_TIMEOUT = 900.0
"""Seconds a client waits for a verify (both copies are read in full)."""

DEFAULT_TRANSITIONS_LIMIT = 50
MAX_TRANSITIONS_LIMIT = 1000


READ_ROLE = "read"
ADMIN_ROLE = "admin"
READ_METHODS = frozenset({"GET", "HEAD"})
"""The methods a read-only token may use; every other one is an admin action."""


def required_role(method: str) -> str:
    """The role a request needs: ``read`` to look (GET), ``admin`` to act (POST)."""
    return READ_ROLE if method in READ_METHODS else ADMIN_ROLE


MIN_TOKEN_CHARS = 16
"""The shortest bearer token accepted (``openssl rand -hex 16`` gives 32)."""
MAX_TOKEN_FILE_BYTES = 4096


def read_token_file(path: str | Path) -> str:
    """The bearer token stored in ``path`` (surrounding whitespace removed).

    Raises ``UsageError`` when the file cannot be read, is not a regular file,
    is readable or writable by every user, or holds no token, a token with
    spaces or one shorter than ``MIN_TOKEN_CHARS``: neither the daemon nor the
    CLI ever runs with a token anyone could read or guess.
    """
    try:
        # O_NONBLOCK: a FIFO put in its place must be refused below, not block the open.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise UsageError(f"the control token file {path} is not a regular file")
            raw = os.read(fd, MAX_TOKEN_FILE_BYTES + 1)
        finally:
            os.close(fd)
    except OSError as exc:
        raise UsageError(f"cannot read the control token file {path}: {exc.strerror}") from None
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        raise UsageError(
            f"the control token file {path} is open to every user (mode "
            f"{stat.S_IMODE(mode):o}): chmod 600 {path}"
        )
    if len(raw) > MAX_TOKEN_FILE_BYTES:
        raise UsageError(
            f"the control token file {path} is larger than {MAX_TOKEN_FILE_BYTES} bytes"
        )
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise UsageError(f"the control token file {path} is not UTF-8 text") from None
    if not token:
        raise UsageError(f"the control token file {path} is empty")
    if any(ch.isspace() for ch in token):
        raise UsageError(f"the control token in {path} must be one word (no spaces)")
    if len(token) < MIN_TOKEN_CHARS:
        raise UsageError(
            f"the control token in {path} has {len(token)} characters, at least "
            f"{MIN_TOKEN_CHARS} are needed (e.g. openssl rand -hex 32 > {path})"
        )
    return token


def read_control_tokens(
    admin_file: str | Path, read_file: str | Path | None
) -> tuple[str, str | None]:
    """The admin token and the read-only one (None without ``read_token_file``).

    Raises ``UsageError`` as ``read_token_file`` does, and when both files hold
    the same token: a monitoring host given the read token would hold the admin's.
    """
    admin = read_token_file(admin_file)
    if read_file is None:
        return admin, None
    read = read_token_file(read_file)
    if hmac.compare_digest(admin.encode("utf-8"), read.encode("utf-8")):
        raise UsageError(
            f"the control token files {admin_file} (admin) and {read_file} (read-only) "
            "hold the same token: give the read-only role its own (openssl rand -hex 32)"
        )
    return admin, read
