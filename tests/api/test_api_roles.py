"""Two roles on the TCP listener: the admin token does everything, the read token only GET.

Invariant: a request that changes something (every POST) runs only with the
admin token (or on the Unix socket); the read-only token gets 403 from the
request head, before any body is read, and the controller is never called.
Only the Authorization header counts: a token in the query string is nothing.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest
from api_fakes import (
    FakeController,
    connect,
    raw_exchange,
    request,
    serving,
    serving_in_thread,
    status_line,
    write_cluster_file,
    write_token,
)

from failover.api.schema import read_control_tokens
from failover.api.server import ControlLimits, serve_control
from failover.cli import main
from failover.config import load_config
from failover.errors import ConfigError, UsageError

pytestmark = pytest.mark.anyio

ADMIN = "admin-token-for-the-tests"
READ = "read-only-token-for-the-tests"
AS_ADMIN = (("authorization", f"Bearer {ADMIN}"),)
AS_READER = (("authorization", f"Bearer {READ}"),)
ADMIN_POSTS = ["/v1/commands/stop", "/v1/replication/bandwidth?rate=5", "/v1/replication/verify"]


def _tcp(controller: FakeController, **options: object):  # type: ignore[no-untyped-def]
    return serving(controller, tcp=("127.0.0.1", 0), token=ADMIN, read_token=READ, **options)


async def test_the_read_token_may_get_status_and_transitions(controller: FakeController) -> None:
    async with _tcp(controller) as ends:
        status = await request(ends, "GET", "/v1/status", headers=AS_READER)
        log = await request(ends, "GET", "/v1/transitions?limit=2", headers=AS_READER)
    assert status.status == 200
    assert status.json()["state"] == "primary"
    assert log.status == 200
    assert len(log.json()["transitions"]) == 2


@pytest.mark.parametrize("target", ADMIN_POSTS)
async def test_the_read_token_replayed_on_a_post_gets_403_naming_the_role(
    controller: FakeController, target: str
) -> None:
    calls: list[str] = []
    report = {"at": 1.0, "in_sync": True, "directories": {}, "text": "ok"}

    async def verify() -> dict[str, object]:
        calls.append("verify")
        return report

    controller.verify = verify  # type: ignore[method-assign]
    async with _tcp(controller) as ends:
        refused = await request(ends, "POST", target, headers=AS_READER)
        reached = [*calls, *controller.commands, *map(str, controller.bandwidths)]
        done = await request(ends, "POST", target, headers=AS_ADMIN)
    assert refused.status == 403
    assert refused.json()["required_role"] == "admin"
    assert "needs the admin role" in refused.json()["error"]
    assert refused.headers.get("connection") == "close"
    assert reached == []  # the refused request reached nothing
    assert done.status == 200


async def test_the_read_token_is_refused_from_the_head_before_any_body(
    controller: FakeController,
) -> None:
    head = (
        b"POST /v1/commands/stop HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + READ.encode()
        + b"\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n"
    )
    async with _tcp(controller) as ends:
        answer = await raw_exchange(ends, head)
    assert status_line(answer) == 403
    assert b"100 Continue" not in answer
    assert controller.commands == []


@pytest.mark.parametrize(
    "target",
    [
        f"/v1/status?token={ADMIN}",
        f"/v1/status?access_token={ADMIN}",
        f"/v1/status?authorization=Bearer%20{ADMIN}",
    ],
)
async def test_a_token_in_the_query_string_is_ignored(
    controller: FakeController, target: str
) -> None:
    async with _tcp(controller) as ends:
        answer = await request(ends, "GET", target)
    assert answer.status == 401


async def test_a_query_token_does_not_raise_the_read_token_to_admin(
    controller: FakeController,
) -> None:
    async with _tcp(controller) as ends:
        answer = await request(
            ends, "POST", f"/v1/commands/stop?access_token={ADMIN}", headers=AS_READER
        )
    assert answer.status == 403
    assert controller.commands == []


@pytest.mark.parametrize(
    "header",
    [f"Bearer {READ}x", f"Bearer {READ[:-1]}", f"Basic {READ}", "Bearer", ""],
    ids=["longer", "shorter", "basic", "no-token", "empty"],
)
async def test_a_wrong_token_stays_401_with_two_roles(
    controller: FakeController, header: str
) -> None:
    async with _tcp(controller) as ends:
        answer = await request(ends, "GET", "/v1/status", headers=(("authorization", header),))
    assert answer.status == 401


async def test_without_a_read_token_the_admin_token_is_the_only_one(
    controller: FakeController,
) -> None:
    async with serving(controller, tcp=("127.0.0.1", 0), token=ADMIN) as ends:
        read = await request(ends, "GET", "/v1/status", headers=AS_READER)
        admin = await request(ends, "POST", "/v1/commands/stop", headers=AS_ADMIN)
    assert read.status == 401
    assert admin.status == 200


async def test_the_unix_socket_stays_admin(controller: FakeController, sock_dir: Path) -> None:
    async with serving(controller, unix_path=str(sock_dir / "c.sock")) as ends:
        answer = await request(ends, "POST", "/v1/commands/stop")
    assert answer.status == 200
    assert controller.commands == ["stop"]


async def test_read_token_holders_are_not_denied_by_strangers(controller: FakeController) -> None:
    # the pending-connection rules hold for the read token too: 40 idle strangers
    # (beyond the cap of 32) push each other out, never a token holder
    async with _tcp(controller) as ends, AsyncExitStack() as stack:
        for _ in range(40):
            await stack.enter_async_context(await connect(ends))
        answer = await request(ends, "GET", "/v1/status", headers=AS_READER)
    assert answer.status == 200


async def test_a_read_token_holder_silent_after_connecting_is_cut_at_the_auth_deadline(
    controller: FakeController,
) -> None:
    limits = ControlLimits(auth_timeout=0.3, request_timeout=30.0)
    async with _tcp(controller, limits=limits) as ends:
        stream = await connect(ends)
        async with stream:
            with anyio.fail_after(10):
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await stream.receive()


async def test_the_same_token_for_both_roles_is_refused(controller: FakeController) -> None:
    with pytest.raises(UsageError, match="must differ"):
        await serve_control(controller, tcp=("127.0.0.1", 0), token=ADMIN, read_token=ADMIN)


def test_two_token_files_with_the_same_token_are_refused_naming_both(tmp_path: Path) -> None:
    admin = write_token(tmp_path / "admin", ADMIN)
    read = write_token(tmp_path / "read", ADMIN)
    with pytest.raises(UsageError) as caught:
        read_control_tokens(admin, read)
    assert str(admin) in str(caught.value)
    assert str(read) in str(caught.value)
    assert read_control_tokens(admin, write_token(tmp_path / "other", READ)) == (ADMIN, READ)


def _config(path: Path, port: int, admin: Path, read: Path) -> Path:
    tcp = f"address: 127.0.0.1, port: {port}, token_file: {admin}, read_token_file: {read}"
    return write_cluster_file(path, f"tcp: {{{tcp}}}")


def test_check_config_names_both_token_files_when_they_hold_the_samewrite_token(
    tmp_path: Path,
) -> None:
    admin = write_token(tmp_path / "admin", ADMIN)
    read = write_token(tmp_path / "read", ADMIN)
    config = _config(tmp_path / "cluster.yaml", 7480, admin, read)
    with pytest.raises(ConfigError) as caught:
        load_config(config, local_node="alpha")
    (problem,) = caught.value.problems
    assert "nodes.alpha.control.tcp.read_token_file" in problem
    assert str(admin) in problem
    assert str(read) in problem
    load_config(config)  # on another machine the files are not read


def test_the_cli_works_with_either_token_and_says_so_in_one_line(
    controller: FakeController, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = write_token(tmp_path / "admin", ADMIN)
    read = write_token(tmp_path / "read", READ)
    with serving_in_thread(controller, tcp=("127.0.0.1", 0), token=ADMIN, read_token=READ) as ends:
        assert ends.tcp is not None
        where = ["--tcp", f"127.0.0.1:{ends.tcp[1]}"]
        assert main(["status", *where, "--token-file", str(read)]) == 0
        capsys.readouterr()
        assert main(["stop", *where, "--token-file", str(read)]) == 2
        err = capsys.readouterr().err
        assert main(["stop", *where, "--token-file", str(admin)]) == 0
        config = _config(tmp_path / "cluster.yaml", ends.tcp[1], admin, read)
        from_file = ["-c", str(config), "--node", "alpha"]
        assert main(["state", "-q", *from_file, "--token-file", str(read)]) == 1  # serial down
        assert main(["swap", *from_file, "--token-file", str(read)]) == 2
    assert controller.commands == ["stop"]
    assert err.count("\n") == 1
    assert "needs the admin role" in err
    assert "Traceback" not in err


def test_with_the_config_a_user_who_cannot_read_the_admin_token_uses_the_read_token(
    controller: FakeController, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    read = write_token(tmp_path / "read", READ)
    with serving_in_thread(controller, tcp=("127.0.0.1", 0), token=ADMIN, read_token=READ) as ends:
        assert ends.tcp is not None
        config = _config(tmp_path / "cluster.yaml", ends.tcp[1], tmp_path / "not-mine", read)
        from_file = ["-c", str(config), "--node", "alpha"]
        assert main(["status", "--json", *from_file]) == 0
        capsys.readouterr()
        assert main(["stop", *from_file]) == 2
        named = ["--token-file", str(tmp_path / "not-mine")]
        assert main(["status", *from_file, *named]) == 2  # a file named is the one used
    err = capsys.readouterr().err
    assert "needs the admin role" in err
    assert "cannot read the control token file" in err
    assert controller.commands == []


async def test_a_second_authorization_header_cannot_raise_the_read_token(
    controller: FakeController,
) -> None:
    async with _tcp(controller) as ends:
        smuggled = await request(ends, "POST", "/v1/commands/stop", headers=AS_READER + AS_ADMIN)
    assert smuggled.status == 403  # the first header is the one read
    assert controller.commands == []
