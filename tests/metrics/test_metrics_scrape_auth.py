"""A scrape is a read like any GET: on TCP, no token or a wrong one gets 401 and no
metrics; a token that may read gets them. Only GET, without parameters."""

from __future__ import annotations

import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
import yaml
from metrics_support import get, parse
from runtime_support import MemoryNetwork, write_cluster

from failover.config import load_config
from failover.config.models import ControlTcp
from failover.runtime.daemon import run_node

pytestmark = pytest.mark.anyio
READ_TOKENS = "read_token_file" in ControlTcp.model_fields


def _token(path: Path) -> str:
    token = secrets.token_hex(16)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def daemon_on_tcp(tmp_path: Path) -> AsyncIterator[tuple[tuple[str, int], dict[str, str]]]:
    tokens = {"admin": _token(tmp_path / "admin.token")}
    tcp: dict[str, object] = {
        "address": "127.0.0.1",
        "port": _free_port(),
        "token_file": str(tmp_path / "admin.token"),
    }
    if READ_TOKENS:
        tokens["read"] = _token(tmp_path / "read.token")
        tcp["read_token_file"] = str(tmp_path / "read.token")
    path = write_cluster(tmp_path, cluster={"autostart": False})
    document = yaml.safe_load(path.read_text())  # alpha's control API on TCP
    document["nodes"]["alpha"]["control"] = {"tcp": tcp}
    path.write_text(yaml.safe_dump(document))
    config = load_config(path)
    async with anyio.create_task_group() as tg:

        async def run(*, task_status: anyio.abc.TaskStatus[object]) -> None:
            await run_node(
                config,
                "alpha",
                task_status=task_status,
                transport_loader=MemoryNetwork().transport,
                handle_signals=False,
            )

        await tg.start(run)
        yield ("127.0.0.1", int(str(tcp["port"]))), tokens
        tg.cancel_scope.cancel()


async def test_a_scrape_without_the_right_token_gets_401_and_no_metrics(tmp_path: Path) -> None:
    async with daemon_on_tcp(tmp_path) as (address, tokens):
        for token in ("", "x" * 32, tokens["admin"][:-1], tokens["admin"] + "0"):
            answer = await get("/metrics", tcp=address, token=token)
            assert answer.status == 401, token
            assert b"failover_" not in answer.body
            assert answer.headers["www-authenticate"].startswith("Bearer")
        answer = await get("/metrics", tcp=address, token=tokens["admin"])
        assert answer.status == 200
        assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert parse(answer.body).value("failover_state", state="stop") == 1
        # the scrape takes no query parameters
        assert (await get("/metrics?debug=1", tcp=address, token=tokens["admin"])).status == 400
        refused = await get("/metrics", tcp=address, token=tokens["admin"], method="POST")
        assert (refused.status, refused.headers["allow"]) == (405, "GET")


@pytest.mark.skipif(not READ_TOKENS, reason="read-only tokens arrive with i13-api's ControlTcp")
async def test_a_read_token_may_scrape(tmp_path: Path) -> None:
    async with daemon_on_tcp(tmp_path) as (address, tokens):
        answer = await get("/metrics", tcp=address, token=tokens["read"])
        assert answer.status == 200
        assert parse(answer.body).value("failover_state", state="stop") == 1
