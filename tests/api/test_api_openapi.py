"""``/v1/openapi.json``: the document is valid OpenAPI 3.1, lists every route the
server dispatches with the role it needs, and its models describe what a real
daemon answers (every object forbids keys it does not list: the code and the
document cannot drift apart unseen). The real daemon also shows its TCP
listener wired from the config: both roles, TLS, and one token for both
roles refused at start."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme
import yaml
from api_fakes import WAIT, FakeController, request, serving, write_token
from openapi_spec_validator import validate
from pydantic import BaseModel, ValidationError

from failover.api.client import ControlAPIError, ControlClient
from failover.api.openapi import (
    ANONYMOUS,
    OPERATIONS,
    CommandAnswer,
    Degraded,
    Operation,
    ScriptRun,
    Status,
    Transitions,
    openapi_document,
    role_of,
)
from failover.api.schema import OPENAPI_PATH, required_role
from failover.api.server import ROUTES, ControlEndpoints, Route
from failover.config import load_config
from failover.errors import UsageError
from failover.platform.scripts import ScriptResult
from failover.platform.scripts import ScriptRun as LoggedRun
from failover.runtime.daemon import run_node
from failover.runtime.degraded import DiskFault

pytestmark = pytest.mark.anyio

ADMIN = "admin-token-for-the-tests"
READ = "read-only-token-for-the-tests"


async def test_the_read_token_may_get_the_document(controller: FakeController) -> None:
    async with serving(controller, tcp=("127.0.0.1", 0), token=ADMIN, read_token=READ) as ends:
        answer = await request(
            ends, "GET", OPENAPI_PATH, headers=(("authorization", f"Bearer {READ}"),)
        )
        stranger = await request(ends, "GET", OPENAPI_PATH)
    assert answer.status == 200
    assert answer.json()["openapi"] == "3.1.0"
    assert stranger.status == 401


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(openapi_document(ROUTES))


def test_every_route_the_server_dispatches_is_in_the_document_with_its_role() -> None:
    document = openapi_document(ROUTES)
    listed = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert listed == {(route.method, route.path) for route in ROUTES}
    for route in ROUTES:
        operation = document["paths"][route.path][route.method.lower()]
        role = role_of(route)
        # the console's page files alone need no token (tests/console/test_console_glue.py
        # checks every row against what the server answers, with each token and none)
        assert role == required_role(route.method) or (
            role == ANONYMOUS and route.path.startswith("/console/")
        )
        assert operation["security"] == ([] if role == ANONYMOUS else [{"bearer": [role]}])
        assert operation["x-failover-role"] == role
        assert "200" in operation["responses"]
        assert ("403" in operation["responses"]) == (role == "admin")
        assert ("401" in operation["responses"]) == (role != ANONYMOUS)
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "roles: read (GET), admin (everything)",
    }


def test_a_route_without_a_described_operation_is_an_error() -> None:
    with pytest.raises(LookupError, match="/v1/new"):
        openapi_document((*ROUTES, Route("GET", "/v1/new", "new")))


async def test_the_served_answers_match_their_models(controller: FakeController) -> None:
    async with serving(controller, tcp=("127.0.0.1", 0), token=ADMIN) as ends:
        bearer = (("authorization", f"Bearer {ADMIN}"),)
        served = await request(ends, "GET", OPENAPI_PATH, headers=bearer)
        command = await request(ends, "POST", "/v1/commands/stop", headers=bearer)
    assert served.json() == openapi_document(ROUTES)
    CommandAnswer.model_validate_json(command.body)


def test_the_status_models_refuse_a_key_they_do_not_list() -> None:
    # what makes the real daemon's check below catch a drift
    with pytest.raises(ValidationError, match="extra"):
        ScriptRun.model_validate({**_script_run(), "new_key": 1})


def _script_run() -> dict[str, Any]:
    result = ScriptResult("start", returncode=0, timed_out=False, tail=("x",), duration=0.1)
    return LoggedRun(result, 1.0).view(2.0)


def test_script_runs_and_disk_faults_match_their_models(tmp_path: Path) -> None:
    ScriptRun.model_validate(_script_run())
    fault = DiskFault.start(tmp_path / "meta", OSError(28, "No space left on device"), 1.0)
    Degraded.model_validate(fault.view(3.0, 2))


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def real_config(tmp_path: Path, control: dict[str, Any]) -> Path:
    """A real pair's file (fast timings, UDP on loopback); node alpha's ``control``."""
    script = tmp_path / "start.sh"
    script.write_text("#!/bin/sh\necho started\n")
    script.chmod(0o755)
    key = tmp_path / "cluster.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    document = {
        "cluster": {
            "name": "dispatch",
            "key_file": str(key),
            "state_dir": str(tmp_path / "state"),
            "profile": "fast",
        },
        "links": [{"name": "lan", "transport": "udp"}],
        "application": {"start": str(script)},
        "nodes": {
            "alpha": {
                "control": control,
                "links": {"lan": {"address": "127.0.0.1", "port": _free_udp_port()}},
            },
            "beta": {"links": {"lan": {"address": "127.0.0.1", "port": _free_udp_port()}}},
        },
    }
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@asynccontextmanager
async def real_daemon(tmp_path: Path, sock_dir: Path) -> AsyncIterator[ControlEndpoints]:
    """Node alpha of a real pair (the real core), its peer absent, on a Unix socket."""
    socket_path = str(sock_dir / "alpha.sock")
    config = load_config(real_config(tmp_path, {"socket": socket_path}))
    async with anyio.create_task_group() as group:
        await group.start(
            lambda task_status: run_node(
                config, "alpha", handle_signals=False, task_status=task_status
            )
        )
        yield ControlEndpoints(socket_path, None)
        group.cancel_scope.cancel()


async def test_a_real_daemons_answers_match_the_documented_models(
    tmp_path: Path, sock_dir: Path
) -> None:
    async with real_daemon(tmp_path, sock_dir) as ends:
        first = await _status_once(ends, lambda s: s.substatus.value == "ready")
        prim = await request(ends, "POST", "/v1/commands/prim")  # a first start waits for beta
        serving = await _status_once(ends, lambda s: s.state.value == "alone" and bool(s.scripts))
        transitions = await request(ends, "GET", "/v1/transitions")
        refused = await request(ends, "POST", "/v1/commands/second")
    assert first.state.value == "wait"
    assert CommandAnswer.model_validate_json(prim.body).accepted
    assert serving.peer is None
    assert [run.ok for run in serving.scripts["start"]] == [True]
    records = Transitions.model_validate_json(transitions.body).transitions
    assert [r.to.value for r in records][-1] == "alone"
    CommandAnswer.model_validate_json(refused.body)


async def _status_once(ends: ControlEndpoints, done: Callable[[Status], bool]) -> Status:
    """The first status ``done`` accepts, each one validated (a bounded poll of the API)."""
    with anyio.fail_after(WAIT):
        while True:
            answer = await request(ends, "GET", "/v1/status")
            status = Status.model_validate_json(answer.body)
            if done(status):
                return status
            await anyio.sleep(0.05)


def _free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_a_real_daemon_serves_both_roles_over_tls(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key, ca_file = tmp_path / "api.pem", tmp_path / "api.key", tmp_path / "ca.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    admin = write_token(tmp_path / "admin", ADMIN)
    read = write_token(tmp_path / "read", READ)
    port = _free_tcp_port()
    tcp = {
        "address": "127.0.0.1",
        "port": port,
        "token_file": str(admin),
        "read_token_file": str(read),
        "tls": {"cert_file": str(cert), "key_file": str(key)},
    }
    config = load_config(real_config(tmp_path, {"tcp": tcp}), local_node="alpha")
    reader = ControlClient(tcp=("127.0.0.1", port), token=READ, ca_file=str(ca_file))
    operator = ControlClient(tcp=("127.0.0.1", port), token=ADMIN, ca_file=str(ca_file))
    async with anyio.create_task_group() as group:
        await group.start(
            lambda task_status: run_node(
                config, "alpha", handle_signals=False, task_status=task_status
            )
        )
        status = await anyio.to_thread.run_sync(reader.get_status)
        with pytest.raises(ControlAPIError, match="needs the admin role"):
            await anyio.to_thread.run_sync(reader.command, "stop")
        stopped = await anyio.to_thread.run_sync(operator.command, "stop")
        group.cancel_scope.cancel()
    Status.model_validate(status)
    assert stopped.accepted


async def test_a_real_daemon_refuses_one_token_for_both_roles(tmp_path: Path) -> None:
    admin = write_token(tmp_path / "admin", ADMIN)
    read = write_token(tmp_path / "read", ADMIN)
    tcp = {
        "address": "127.0.0.1",
        "port": _free_tcp_port(),
        "token_file": str(admin),
        "read_token_file": str(read),
    }
    config = load_config(real_config(tmp_path, {"tcp": tcp}))
    with pytest.raises(UsageError) as caught:
        with anyio.fail_after(WAIT):
            await run_node(config, "alpha", handle_signals=False)
    assert str(admin) in str(caught.value)
    assert str(read) in str(caught.value)


def test_a_route_described_with_a_new_model_or_a_media_type_makes_a_valid_document(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # what another part adding a route does: a Route row and its Operation
    class Event(BaseModel):
        kind: str

    monkeypatch.setitem(OPERATIONS, "metrics", Operation("metrics", {200: "text/plain"}))
    monkeypatch.setitem(OPERATIONS, "event", Operation("one event", {200: Event}))
    routes = (*ROUTES, Route("GET", "/metrics", "metrics"), Route("GET", "/v1/event", "event"))
    document = openapi_document(routes)
    validate(document)
    assert "text/plain" in document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert "Event" in document["components"]["schemas"]
