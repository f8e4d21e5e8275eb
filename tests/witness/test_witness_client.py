"""The node's arbitrator against a real witness on loopback, and the events the executor reports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from failover.core import effects as fx
from failover.core import events as ev
from failover.core.state import INITIAL, Generation
from failover.platform.application import Application
from failover.runtime.arbitrator import (
    Denied,
    Granted,
    Lost,
    Released,
    Unreachable,
    WitnessArbitrator,
    arbitration_event,
)
from failover.runtime.executor import ActionExecutor
from failover.witness.service import Witness, serve

from .witness_support import KEY, OTHER_KEY

pytestmark = pytest.mark.anyio
G1 = Generation(1, "alpha")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def address(tmp_path: Path) -> AsyncIterator[str]:
    witness = Witness(tmp_path, {"prod": KEY})
    async with anyio.create_task_group() as tg:
        host, port = await tg.start(serve, witness, "127.0.0.1", 0)
        yield f"{host}:{port}"
        tg.cancel_scope.cancel()


def client(address: str, node: str, key: bytes = KEY, **kwargs: float) -> WitnessArbitrator:
    return WitnessArbitrator(
        cluster="prod", key=key, node=node, incarnation=7, address=address, ttl=6.0, **kwargs
    )


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_two_nodes_through_the_network(address: str) -> None:
    alpha, beta = client(address, "alpha"), client(address, "beta")
    assert await alpha.request(G1, INITIAL, False) == Granted(G1)
    refused = await beta.request(Generation(1, "beta"), INITIAL, False)
    assert isinstance(refused, Denied) and "held by alpha" in refused.reason
    assert await alpha.renew(G1) == Granted(G1)
    assert isinstance(await beta.renew(G1), Lost)
    assert await alpha.release() == Released()
    assert await beta.request(Generation(2, "beta"), G1, False) == Granted(Generation(2, "beta"))


async def test_a_wrong_key_or_no_witness_is_unreachable(address: str) -> None:
    stranger = client(address, "alpha", OTHER_KEY, attempt_timeout=0.1, attempts=2)
    reply = await stranger.request(G1, INITIAL, False)
    assert isinstance(reply, Unreachable) and "no answer" in reply.reason
    nobody = client(f"127.0.0.1:{free_udp_port()}", "alpha", attempt_timeout=0.1, attempts=2)
    reply = await nobody.request(G1, INITIAL, False)
    assert isinstance(reply, Unreachable)


async def test_a_release_delayed_past_a_new_grant_leaves_the_node_holding(
    tmp_path: Path,
) -> None:
    # S1: alpha's release datagrams are held in the network past the executor's
    # wait; alpha is granted again meanwhile (it serves). When they arrive,
    # they name the grant they end, not this one: alpha keeps the lease and
    # beta is refused, so the two never serve at once.
    witness = Witness(tmp_path, {"prod": KEY})
    async with (
        anyio.create_task_group() as tg,
        await anyio.create_udp_socket(local_host="127.0.0.1") as sink,
    ):
        host, port = await tg.start(serve, witness, "127.0.0.1", 0)
        alpha = client(f"{host}:{port}", "alpha", attempt_timeout=0.1, attempts=2)
        beta = client(f"{host}:{port}", "beta")
        assert await alpha.request(G1, INITIAL, False) == Granted(G1)
        alpha.port = sink.extra(anyio.abc.SocketAttribute.local_port)  # the network holds them
        assert isinstance(await alpha.release(), Unreachable)
        held = []
        with anyio.move_on_after(1):
            while len(held) < 2:
                held.append((await sink.receive())[0])
        assert len(held) == 2  # both tries of the release
        alpha.port = port
        assert await alpha.request(G1, G1, False) == Granted(G1)  # alpha serves again
        for datagram in held:  # now they arrive
            assert witness.handle(datagram, "127.0.0.1:1", time.monotonic()) is not None
        assert witness.cluster("prod").record.holder == "alpha"
        refused = await beta.request(Generation(2, "beta"), G1, False)
        assert isinstance(refused, Denied) and "held by alpha" in refused.reason
        # alpha's own release, naming the grant it holds, still frees it
        assert await alpha.release() == Released()
        assert witness.cluster("prod").record.holder is None
        tg.cancel_scope.cancel()


def test_replies_become_the_cores_events() -> None:
    request = fx.RequestArbitration(generation=G1, base=INITIAL)
    renew = fx.RenewArbitration(generation=G1)
    release = fx.ReleaseArbitration()
    assert arbitration_event(request, Granted(G1)) == ev.ArbitrationGranted(generation=G1)
    assert arbitration_event(request, Denied("held")) == ev.ArbitrationDenied(reason="held")
    assert arbitration_event(request, Unreachable("x")) == ev.ArbitrationDenied(reason="x")
    assert arbitration_event(renew, Granted(G1)) == ev.ArbitrationGranted(generation=G1)
    assert arbitration_event(renew, Lost("gone")) == ev.ArbitrationLost(reason="gone")
    # silence is not a loss: the core's own fence deadline runs
    assert arbitration_event(renew, Unreachable("x")) is None
    assert arbitration_event(release, Released()) is None
    assert arbitration_event(release, Unreachable("x")) is None
    assert arbitration_event(release, Lost("not yours any more")) is None


async def test_the_executor_reports_the_witness_answers(address: str, tmp_path: Path) -> None:
    send, receive = anyio.create_memory_object_stream[ev.Event](10)
    app = Application(None, None, output_dir=tmp_path / "out", env={})
    executor = ActionExecutor(app, send.send, arbitrator=client(address, "alpha"))
    other = ActionExecutor(app, send.send, arbitrator=client(address, "beta"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(executor.run)
        tg.start_soon(other.run)
        with anyio.fail_after(10):
            executor.submit(fx.RequestArbitration(generation=G1, base=INITIAL))
            assert await receive.receive() == ev.ArbitrationGranted(generation=G1)
            executor.submit(fx.RenewArbitration(generation=G1))  # beside the queue
            assert executor.idle
            assert await receive.receive() == ev.ArbitrationGranted(generation=G1)
            other.submit(fx.RequestArbitration(generation=Generation(1, "beta"), base=INITIAL))
            denied = await receive.receive()
        tg.cancel_scope.cancel()
    assert isinstance(denied, ev.ArbitrationDenied) and "held by alpha" in denied.reason


def test_witness_run_serves_until_sigterm(tmp_path: Path) -> None:
    (tmp_path / "prod.key").write_bytes(KEY)
    port = free_udp_port()
    config = tmp_path / "witness.yaml"
    config.write_text(
        f"listen: 127.0.0.1:{port}\nstate_dir: state\n"
        "clusters:\n  - name: prod\n    key_file: prod.key\n"
    )
    log = tmp_path / "witness.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "failover",
            "witness",
            "run",
            "-c",
            str(config),
            "--log-file",
            str(log),
        ],
        env=os.environ.copy(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while "witness listening" not in (log.read_text() if log.exists() else ""):
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)  # a bounded poll of another process
        reply = anyio.run(client(f"127.0.0.1:{port}", "alpha").request, G1, INITIAL, False)
        assert reply == Granted(G1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "witness stopping" in log.read_text()
