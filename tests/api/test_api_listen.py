"""Where the server listens: the Unix socket file, and TCP with its mandatory token."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest
from api_fakes import FakeController, request, serving

from failover.api.server import ControlEndpoints, serve_control
from failover.errors import UsageError

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-token-for-tests"


async def test_the_socket_is_created_0660_in_a_new_directory_and_removed_at_exit(
    controller: FakeController, sock_dir: Path
) -> None:
    path = sock_dir / "run" / "failover" / "alpha.sock"
    async with serving(controller, unix_path=str(path)) as ends:
        mode = path.stat().st_mode
        answer = await request(ends, "GET", "/v1/status")
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o660
    assert answer.status == 200
    assert not path.exists()


async def test_a_stale_socket_file_is_replaced(controller: FakeController, sock_dir: Path) -> None:
    path = sock_dir / "c.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: what a killed daemon leaves
    async with serving(controller, unix_path=str(path)) as ends:
        answer = await request(ends, "GET", "/v1/status")
    assert answer.status == 200


async def test_a_socket_another_process_listens_on_is_refused(
    controller: FakeController, sock_dir: Path
) -> None:
    path = sock_dir / "c.sock"
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(path))
    live.listen(1)
    try:
        with pytest.raises(UsageError, match="already listens"):
            await serve_control(controller, unix_path=str(path))
        assert path.exists()
    finally:
        live.close()


async def test_a_regular_file_in_the_way_is_refused(
    controller: FakeController, sock_dir: Path
) -> None:
    path = sock_dir / "c.sock"
    path.write_text("precious")
    with pytest.raises(UsageError, match="not a socket"):
        await serve_control(controller, unix_path=str(path))
    assert path.read_text() == "precious"


async def test_nothing_to_listen_on_is_refused(controller: FakeController) -> None:
    with pytest.raises(UsageError):
        await serve_control(controller)


@pytest.mark.parametrize("token", [None, ""])
async def test_tcp_without_a_token_refuses_to_start(
    controller: FakeController, token: str | None
) -> None:
    with pytest.raises(UsageError, match="token"):
        await serve_control(controller, tcp=("127.0.0.1", 0), token=token)


async def test_tcp_with_the_right_token_is_served(controller: FakeController) -> None:
    async with serving(controller, tcp=("127.0.0.1", 0), token=TOKEN) as ends:
        assert ends.tcp is not None and ends.tcp[1] != 0
        status = await request(ends, "GET", "/v1/status", headers=_bearer(TOKEN))
        command = await request(ends, "POST", "/v1/commands/stop", headers=_bearer(TOKEN))
        lower = await request(
            ends, "GET", "/v1/status", headers=(("authorization", f"bearer {TOKEN}"),)
        )
    assert status.status == 200
    assert command.status == 200
    assert lower.status == 200
    assert controller.commands == ["stop"]


@pytest.mark.parametrize(
    "headers",
    [
        (),
        (("authorization", "Bearer not-the-token"),),
        (("authorization", f"Basic {TOKEN}"),),
        (("authorization", f"Bearer {TOKEN}x"),),
        (("authorization", "Bearer"),),
    ],
)
async def test_tcp_with_a_missing_or_wrong_token_is_401(
    controller: FakeController, headers: tuple[tuple[str, str], ...]
) -> None:
    async with serving(controller, tcp=("127.0.0.1", 0), token=TOKEN) as ends:
        status = await request(ends, "GET", "/v1/status", headers=headers)
        command = await request(ends, "POST", "/v1/commands/stop", headers=headers)
    assert status.status == 401
    assert status.headers["www-authenticate"].startswith("Bearer")
    assert "error" in status.json()
    assert command.status == 401
    assert controller.commands == []


async def test_the_unix_socket_takes_no_token_when_tcp_has_one(
    controller: FakeController, sock_dir: Path
) -> None:
    options = {"unix_path": str(sock_dir / "c.sock"), "tcp": ("127.0.0.1", 0), "token": TOKEN}
    async with serving(controller, **options) as ends:
        assert ends.unix_path is not None and ends.tcp is not None
        local = await request(ControlEndpoints(ends.unix_path, None), "GET", "/v1/status")
        remote = await request(ControlEndpoints(None, ends.tcp), "GET", "/v1/status")
    assert local.status == 200
    assert remote.status == 401


async def test_a_tcp_address_that_cannot_be_bound_is_a_usage_error(
    controller: FakeController,
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        with pytest.raises(UsageError, match="cannot listen"):
            await serve_control(controller, tcp=taken.getsockname(), token=TOKEN)
    finally:
        taken.close()


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)
