"""Every route of the control API and every error code, against a fake controller."""

from __future__ import annotations

from pathlib import Path

import pytest
from api_fakes import FakeController, request, serving

from failover.api.protocol import COMMANDS

pytestmark = pytest.mark.anyio


async def test_status_returns_the_controller_snapshot(
    controller: FakeController, sock_dir: Path
) -> None:
    async with serving(controller, unix_path=str(sock_dir / "c.sock")) as ends:
        answer = await request(ends, "GET", "/v1/status")
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == controller.status()


async def test_transitions_default_to_the_last_50_oldest_first(
    controller: FakeController, sock_dir: Path
) -> None:
    async with serving(controller, unix_path=str(sock_dir / "c.sock")) as ends:
        answer = await request(ends, "GET", "/v1/transitions")
    assert answer.status == 200
    assert answer.json() == {"transitions": controller.records[-50:]}


@pytest.mark.parametrize("limit", [0, 1, 7, 1000])
async def test_transitions_honour_the_limit(
    controller: FakeController, sock_dir: Path, limit: int
) -> None:
    async with serving(controller, unix_path=str(sock_dir / "c.sock")) as ends:
        answer = await request(ends, "GET", f"/v1/transitions?limit={limit}")
    assert answer.status == 200
    expected = controller.records[len(controller.records) - limit :] if limit else []
    assert answer.json()["transitions"] == expected


async def test_transitions_never_exceed_the_limit_even_if_the_controller_does(
    controller: FakeController, sock_dir: Path
) -> None:
    controller.transitions = lambda limit: controller.records  # type: ignore[method-assign]
    async with serving(controller, unix_path=str(sock_dir / "c.sock")) as ends:
        answer = await request(ends, "GET", "/v1/transitions?limit=2")
    assert answer.json()["transitions"] == controller.records[-2:]


@pytest.mark.parametrize(
    "target",
    [
        "/v1/transitions?limit=1001",
        "/v1/transitions?limit=-1",
        "/v1/transitions?limit=ten",
        "/v1/transitions?limit=",
        "/v1/transitions?limit=1&limit=2",
        "/v1/transitions?limit",
        "/v1/transitions?lines=3",
        "/v1/status?verbose=1",
    ],
)
async def test_a_bad_query_is_400(controller: FakeController, sock_dir: Path, target: str) -> None:
    async with serving(controller, unix_path=str(sock_dir / "c.sock")) as ends:
        answer = await request(ends, "GET", target)
    assert answer.status == 400
    assert isinstance(answer.json()["error"], str)


@pytest.mark.parametrize("name", COMMANDS)
async def test_an_accepted_command_is_200(
    controller: FakeController, sock_dir: Path, name: str
) -> None:
    async with serving(controller, unix_path=str(sock_dir / "c.sock")) as ends:
        answer = await request(ends, "POST", f"/v1/commands/{name}")
    assert answer.status == 200
    assert answer.json() == {"accepted": True, "message": f"{name} done", "state": "primary"}
    assert controller.commands == [name]


async def test_a_refused_command_is_409_with_the_core_reason(
    controller: FakeController, sock_dir: Path
) -> None:
    controller.state = "wait"
    controller.refusals["swap"] = "the peer is not secondary"
    async with serving(controller, unix_path=str(sock_dir / "c.sock")) as ends:
        answer = await request(ends, "POST", "/v1/commands/swap")
    assert answer.status == 409
    assert answer.json() == {
        "accepted": False,
        "message": "the peer is not secondary",
        "state": "wait",
    }


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/"),
        ("GET", "/v1"),
        ("GET", "/v1/status/"),
        ("GET", "/v2/status"),
        ("GET", "/v1/commands"),
        ("POST", "/v1/commands/reboot"),
        ("POST", "/v1/commands/"),
        ("POST", "/v1/commands/start/now"),
    ],
)
async def test_unknown_routes_and_commands_are_404(
    controller: FakeController, sock_dir: Path, method: str, target: str
) -> None:
    async with serving(controller, unix_path=str(sock_dir / "c.sock")) as ends:
        answer = await request(ends, method, target)
    assert answer.status == 404
    assert "error" in answer.json()
    assert controller.commands == []


@pytest.mark.parametrize(
    ("method", "target", "allowed"),
    [
        ("POST", "/v1/status", "GET"),
        ("DELETE", "/v1/transitions", "GET"),
        ("HEAD", "/v1/status", "GET"),
        ("GET", "/v1/commands/start", "POST"),
        ("PUT", "/v1/commands/stop", "POST"),
    ],
)
async def test_a_wrong_method_is_405_naming_the_allowed_one(
    controller: FakeController, sock_dir: Path, method: str, target: str, allowed: str
) -> None:
    async with serving(controller, unix_path=str(sock_dir / "c.sock")) as ends:
        answer = await request(ends, method, target)
    assert answer.status == 405
    assert answer.headers["allow"] == allowed
    if method != "HEAD":
        assert "error" in answer.json()
    assert controller.commands == []


async def test_a_body_larger_than_the_limit_is_413(
    controller: FakeController, sock_dir: Path
) -> None:
    async with serving(controller, unix_path=str(sock_dir / "c.sock")) as ends:
        answer = await request(ends, "POST", "/v1/commands/start", body=b"x" * 10_000)
    assert answer.status == 413
    assert answer.headers["connection"] == "close"
    assert controller.commands == []


async def test_a_small_body_is_ignored(controller: FakeController, sock_dir: Path) -> None:
    async with serving(controller, unix_path=str(sock_dir / "c.sock")) as ends:
        answer = await request(ends, "POST", "/v1/commands/start", body=b"{}")
    assert answer.status == 200
    assert controller.commands == ["start"]


async def test_a_controller_failure_is_500_without_details(
    controller: FakeController, sock_dir: Path
) -> None:
    controller.broken = True
    async with serving(controller, unix_path=str(sock_dir / "c.sock")) as ends:
        answer = await request(ends, "GET", "/v1/status")
        controller.broken = False
        after = await request(ends, "GET", "/v1/status")
    assert answer.status == 500
    assert answer.json() == {"error": "internal error (see the daemon log)"}
    assert b"secret" not in answer.body
    assert b"Traceback" not in answer.body
    assert after.status == 200


async def test_a_status_that_is_not_json_is_500(controller: FakeController, sock_dir: Path) -> None:
    controller.reason = float("nan")  # type: ignore[assignment]
    async with serving(controller, unix_path=str(sock_dir / "c.sock")) as ends:
        answer = await request(ends, "GET", "/v1/status")
    assert answer.status == 500


async def test_a_command_the_daemon_could_not_handle_in_time_is_503(
    controller: FakeController, sock_dir: Path
) -> None:
    async def stuck(name: str) -> None:
        raise TimeoutError

    controller.command = stuck  # type: ignore[assignment]
    async with serving(controller, unix_path=str(sock_dir / "c.sock")) as ends:
        answer = await request(ends, "POST", "/v1/commands/start")
    assert answer.status == 503
    assert "in time" in answer.json()["error"]


async def test_the_bandwidth_is_set_with_a_rate(controller: FakeController, sock_dir: Path) -> None:
    async with serving(controller, unix_path=str(sock_dir / "c.sock")) as ends:
        answer = await request(ends, "POST", "/v1/replication/bandwidth?rate=5000000")
        controller.refusals["bandwidth"] = "no replicated directories are configured"
        refused = await request(ends, "POST", "/v1/replication/bandwidth?rate=0")
    assert answer.status == 200 and answer.json()["accepted"] is True
    assert refused.status == 409 and "no replicated" in refused.json()["message"]
    assert controller.bandwidths == [5_000_000, 0]


@pytest.mark.parametrize("query", ["", "?rate=", "?rate=-1", "?rate=1.5", "?rate=1e9", "?speed=1"])
async def test_a_bad_bandwidth_is_400(
    controller: FakeController, sock_dir: Path, query: str
) -> None:
    async with serving(controller, unix_path=str(sock_dir / "c.sock")) as ends:
        answer = await request(ends, "POST", f"/v1/replication/bandwidth{query}")
    assert answer.status == 400
    assert controller.bandwidths == []
