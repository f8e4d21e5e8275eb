"""A small synchronous client for the control API (what the CLI uses).

One HTTP request per call, over the daemon's Unix socket or over TCP with a
bearer token (the admin one, or the read-only one for queries), over TLS when
a CA file is given (``failover.api.control_tls``). Every call is bounded by
``timeout`` seconds for connecting and again for the answer. Failures are
reported as project errors with a message an operator can act on, never as
a socket traceback.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from typing import Any
from urllib.parse import quote

from failover.api.control_tls import client_context
from failover.api.protocol import COMMANDS, CommandResult
from failover.api.schema import (
    BANDWIDTH_PATH,
    COMMANDS_PREFIX,
    DEFAULT_TRANSITIONS_LIMIT,
    STATUS_PATH,
    TRANSITIONS_PATH,
    VERIFY_PATH,
)
from failover.errors import FailoverError, UsageError


class DaemonUnreachable(UsageError):
    """No daemon answers at the control address (not started, wrong path, no permission)."""


class ControlAPIError(FailoverError):
    """The daemon answered, but not with what the API promises (or with an error)."""


class _UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over an AF_UNIX stream socket."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class ControlClient:
    """Talks to one daemon. Give exactly one of ``unix_path`` or ``tcp``.

    Each method makes one request with at most ``timeout`` seconds to connect
    and ``timeout`` seconds of silence while waiting for the answer. Raises
    ``DaemonUnreachable`` when nothing listens (or permission is denied) and
    ``ControlAPIError`` when the daemon answers with an error or garbage.
    """

    def __init__(
        self,
        *,
        unix_path: str | None = None,
        tcp: tuple[str, int] | None = None,
        token: str | None = None,
        timeout: float = 5.0,
        ca_file: str | None = None,
        pinned: bool = False,
    ) -> None:
        """``ca_file``: speak TLS and accept only a server certificate it signed
        (``pinned``: it is the server's own certificate)."""
        if (unix_path is None) == (tcp is None):
            raise UsageError("give exactly one control address: a unix socket path or host:port")
        if ca_file is not None and tcp is None:
            raise UsageError("TLS (a CA file) is for the control API over TCP only")
        self._unix_path = unix_path
        self._tcp = tcp
        self._token = token
        self._timeout = timeout
        self._ca_file = ca_file
        self._tls = None if ca_file is None else client_context(ca_file, pinned=pinned)

    @property
    def address(self) -> str:
        """The control address, as shown in messages."""
        if self._unix_path is not None:
            return self._unix_path
        assert self._tcp is not None
        return f"{self._tcp[0]}:{self._tcp[1]}"

    def get_status(self) -> dict[str, Any]:
        """The daemon's status snapshot (schema in ``failover.api.protocol``)."""
        _, payload = self._request("GET", STATUS_PATH)
        if not isinstance(payload, dict):
            raise self._garbled("status is not a JSON object")
        return payload

    def get_transitions(self, limit: int = DEFAULT_TRANSITIONS_LIMIT) -> list[dict[str, Any]]:
        """The most recent transition records, oldest first (at most ``limit``)."""
        _, payload = self._request("GET", f"{TRANSITIONS_PATH}?limit={int(limit)}")
        records = payload.get("transitions") if isinstance(payload, dict) else None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise self._garbled("transitions is not a list of objects")
        return records

    def command(self, name: str) -> CommandResult:
        """Hand ``name`` to the daemon; ``accepted`` False means the core refused it."""
        if name not in COMMANDS:
            raise UsageError(f"unknown command {name!r} (known: {', '.join(COMMANDS)})")
        status, payload = self._request("POST", COMMANDS_PREFIX + quote(name), accept=(409,))
        return self._result(status, payload, "command")

    def set_bandwidth(self, rate: int) -> CommandResult:
        """Set the resync bandwidth limit (bytes/s, 0 = none)."""
        if rate < 0:
            raise UsageError(f"bandwidth {rate}: must be 0 (no limit) or positive")
        status, payload = self._request("POST", f"{BANDWIDTH_PATH}?rate={rate}", accept=(409,))
        return self._result(status, payload, "bandwidth")

    def verify(self) -> dict[str, Any]:
        """Have the daemon compare both copies; its report (``Controller.verify``)."""
        _, payload = self._request("POST", VERIFY_PATH)
        if not isinstance(payload, dict) or not isinstance(payload.get("in_sync"), bool):
            raise self._garbled("verify answer lacks in_sync")
        return payload

    def _result(self, status: int, payload: Any, what: str) -> CommandResult:
        if not isinstance(payload, dict):
            raise self._garbled(f"{what} answer is not a JSON object")
        accepted, message, state = (payload.get(k) for k in ("accepted", "message", "state"))
        if (
            not isinstance(accepted, bool)
            or not isinstance(message, str)
            or not isinstance(state, str)
            or accepted != (status == 200)
        ):
            raise self._garbled(f"{what} answer lacks accepted/message/state")
        return CommandResult(accepted=accepted, message=message, state=state)

    def _request(self, method: str, path: str, accept: tuple[int, ...] = ()) -> tuple[int, Any]:
        """One request; the status (200 or one of ``accept``) and the decoded JSON."""
        conn = self._connection()
        try:
            try:
                conn.connect()
            except (FileNotFoundError, ConnectionRefusedError):
                raise self._unreachable() from None
            except ssl.SSLCertVerificationError as exc:
                raise ControlAPIError(
                    f"the daemon on {self.address} presented a certificate that "
                    f"{self._ca_file} does not vouch for ({exc.verify_message}): "
                    "wrong CA file, or not the daemon you meant"
                ) from None
            except ssl.SSLError as exc:
                raise ControlAPIError(
                    f"no TLS handshake with the daemon on {self.address} ({exc.reason}): "
                    "does it listen with TLS (control.tcp.tls)?"
                ) from None
            except PermissionError:
                raise DaemonUnreachable(
                    f"cannot connect to {self.address}: permission denied "
                    "(run as root or as a member of the socket's group)"
                ) from None
            except TimeoutError:
                raise DaemonUnreachable(
                    f"the daemon on {self.address} did not accept a connection "
                    f"within {self._timeout:g} s"
                ) from None
            except OSError as exc:
                raise DaemonUnreachable(
                    f"cannot connect to {self.address}: {exc.strerror or exc}"
                ) from None
            headers = {"Accept": "application/json"}
            if self._token is not None:
                headers["Authorization"] = f"Bearer {self._token}"
            try:
                conn.request(method, path, headers=headers)
                response = conn.getresponse()
                body = response.read()
            except TimeoutError:
                raise ControlAPIError(
                    f"the daemon on {self.address} did not answer within {self._timeout:g} s"
                ) from None
            except (OSError, http.client.HTTPException):
                plain_tcp = self._tcp is not None and self._tls is None
                hint = " (if it listens with TLS, give its CA file: --ca-file)" if plain_tcp else ""
                raise ControlAPIError(
                    f"the daemon on {self.address} closed the connection without answering{hint}"
                ) from None
        finally:
            conn.close()
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
            if response.status == 200 or response.status in accept:
                raise self._garbled(
                    f"HTTP {response.status} with a body that is not JSON"
                ) from None
        if response.status == 200 or response.status in accept:
            return response.status, payload
        if response.status == 401:
            raise ControlAPIError(
                f"the daemon on {self.address} refused the token (check the token file)"
            )
        message = payload.get("error") if isinstance(payload, dict) else None
        if not isinstance(message, str):
            message = body[:200].decode("utf-8", errors="replace")
        if response.status == 403:
            raise ControlAPIError(f"the daemon on {self.address} refused: {message}")
        raise ControlAPIError(f"the daemon answered HTTP {response.status}: {message}")

    def _connection(self) -> http.client.HTTPConnection:
        if self._unix_path is not None:
            return _UnixHTTPConnection(self._unix_path, self._timeout)
        assert self._tcp is not None
        host, port = self._tcp
        if self._tls is not None:
            return http.client.HTTPSConnection(host, port, timeout=self._timeout, context=self._tls)
        return http.client.HTTPConnection(host, port, timeout=self._timeout)

    def _unreachable(self) -> DaemonUnreachable:
        return DaemonUnreachable(
            f"no daemon listening on {self.address} (is `failover run` started?)"
        )

    def _garbled(self, what: str) -> ControlAPIError:
        return ControlAPIError(f"unexpected answer from the daemon on {self.address}: {what}")
