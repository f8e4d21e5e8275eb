"""The synchronous client against a served fake, and against daemons that are absent or broken."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from api_fakes import WAIT, FakeController, serving_in_thread

from failover.api.client import ControlAPIError, ControlClient, DaemonUnreachable
from failover.api.protocol import CommandResult
from failover.errors import UsageError

TOKEN = "client-test-token"


@pytest.fixture
def unix_client(controller: FakeController, sock_dir: Path) -> Iterator[ControlClient]:
    path = str(sock_dir / "c.sock")
    with serving_in_thread(controller, unix_path=path):
        yield ControlClient(unix_path=path, timeout=WAIT)


def test_get_status_returns_the_snapshot(
    unix_client: ControlClient, controller: FakeController
) -> None:
    assert unix_client.get_status() == controller.status()


def test_get_transitions_returns_the_latest_oldest_first(
    unix_client: ControlClient, controller: FakeController
) -> None:
    assert unix_client.get_transitions(3) == controller.records[-3:]


def test_command_reports_acceptance_and_refusal(
    unix_client: ControlClient, controller: FakeController
) -> None:
    controller.refusals["swap"] = "peer is not secondary"
    assert unix_client.command("stop") == CommandResult(True, "stop done", "primary")
    assert unix_client.command("swap") == CommandResult(False, "peer is not secondary", "primary")
    assert controller.commands == ["stop", "swap"]


def test_an_unknown_command_is_refused_before_any_request(unix_client: ControlClient) -> None:
    with pytest.raises(UsageError, match="unknown command 'reboot'"):
        unix_client.command("reboot")


def test_a_missing_socket_means_no_daemon(sock_dir: Path) -> None:
    path = sock_dir / "absent.sock"
    with pytest.raises(DaemonUnreachable) as caught:
        ControlClient(unix_path=str(path)).get_status()
    assert str(caught.value) == f"no daemon listening on {path} (is `failover run` started?)"


def test_a_stale_socket_means_no_daemon(sock_dir: Path) -> None:
    path = sock_dir / "stale.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()
    with pytest.raises(DaemonUnreachable, match="no daemon listening"):
        ControlClient(unix_path=str(path)).get_status()


def test_tcp_with_the_token(controller: FakeController) -> None:
    with serving_in_thread(controller, tcp=("127.0.0.1", 0), token=TOKEN) as ends:
        assert ends.tcp is not None
        client = ControlClient(tcp=ends.tcp, token=TOKEN, timeout=WAIT)
        assert client.get_status()["state"] == "primary"
        wrong = ControlClient(tcp=ends.tcp, token="nope", timeout=WAIT)
        with pytest.raises(ControlAPIError, match="refused the token"):
            wrong.get_status()


def test_tcp_with_nobody_listening_means_no_daemon() -> None:
    spare = socket.socket()
    spare.bind(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()
    with pytest.raises(DaemonUnreachable, match=f"no daemon listening on 127.0.0.1:{port}"):
        ControlClient(tcp=("127.0.0.1", port), token=TOKEN).get_status()


def test_a_daemon_that_never_answers_times_out(sock_dir: Path) -> None:
    path = sock_dir / "mute.sock"
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mute.bind(str(path))
    mute.listen(1)  # connections queue up, nobody ever reads them
    try:
        with pytest.raises(ControlAPIError, match=r"did not answer within 0\.2 s"):
            ControlClient(unix_path=str(path), timeout=0.2).get_status()
    finally:
        mute.close()


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b"", "closed the connection without answering"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "not JSON"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]", "not a JSON object"),
        (b'HTTP/1.1 500 Oops\r\nContent-Length: 15\r\n\r\n{"error":"bad"}', "HTTP 500: bad"),
    ],
)
def test_a_garbled_answer_is_a_control_api_error(
    sock_dir: Path, reply: bytes, message: str
) -> None:
    path = sock_dir / "odd.sock"
    with _answering_once(path, reply), pytest.raises(ControlAPIError, match=message):
        ControlClient(unix_path=str(path), timeout=WAIT).get_status()


def test_exactly_one_address_is_needed() -> None:
    with pytest.raises(UsageError):
        ControlClient()
    with pytest.raises(UsageError):
        ControlClient(unix_path="/x", tcp=("127.0.0.1", 1))


@contextmanager
def _answering_once(path: Path, reply: bytes) -> Iterator[None]:
    """A Unix socket server that reads one request, sends ``reply`` and closes."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(WAIT)
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                received += chunk
            conn.sendall(reply)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(WAIT)
        server.close()
