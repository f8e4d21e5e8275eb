"""Two daemons in one process over a real TCP link (and UDP), with strangers on the TCP port.

Issue 8: an idle connection to the TCP heartbeat port received the node's
heartbeats and took the link from the peer. Here strangers connect to both
nodes' TCP ports, more than every limit of the transport, while the pair
runs: the TCP link must stay up on both nodes, carrying heartbeats both ways,
and the strangers must receive nothing but the handshake's hello. Real time
on loopback: waits are bounded generously, never timed.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from anyio.abc import SocketStream
from runtime_support import write_cluster
from test_runtime_udp import link_up, wait_until

from failover.config import load_config
from failover.runtime.control import NodeController
from failover.runtime.daemon import run_node
from failover.transport import MAX_FRAME_SIZE
from failover.wire import HELLO_SIZE, LINK_MAGIC
from failover_transports.framing import LengthPrefixedDecoder
from failover_transports.tcp import MAX_CONNECTIONS, MAX_UNPROVEN

pytestmark = pytest.mark.anyio

STRANGERS = MAX_CONNECTIONS + MAX_UNPROVEN + 2  # per node


async def listen(stream: SocketStream, into: bytearray, closed: anyio.Event) -> None:
    try:
        while True:
            into += await stream.receive()
    except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass
    finally:
        closed.set()


async def test_strangers_on_the_tcp_port_get_no_heartbeat_and_do_not_take_the_link(
    tmp_path: Path,
) -> None:
    links = [{"name": "lan", "transport": "tcp"}, {"name": "backup", "transport": "udp"}]
    # Fast heartbeats, but timeouts that a loaded machine's scheduling stalls do not reach:
    # a hijacked link stays silent for good, so it shows down all the same.
    timing = {"link_timeout": 1.0, "dead_timeout": 3.0}
    config = load_config(
        write_cluster(tmp_path, extra={"links": links}, cluster={"timing": timing})
    )
    async with anyio.create_task_group() as tg:
        nodes: dict[str, NodeController] = {}
        for name in ("alpha", "beta"):
            nodes[name] = await tg.start(
                lambda task_status, name=name: run_node(
                    config, name, task_status=task_status, handle_signals=False
                )
            )

        def states() -> dict[str, str]:
            return {name: c.status()["state"] for name, c in nodes.items()}

        def lan_up_on_both() -> bool:
            return all(link_up(c, "lan") for c in nodes.values())

        await wait_until(lambda: sorted(states().values()) == ["primary", "secondary"])
        await wait_until(lan_up_on_both)
        paired = states()

        received: list[bytearray] = []
        closed: list[anyio.Event] = []
        for name in nodes:
            endpoint = config.endpoint(name, "lan")
            for _ in range(STRANGERS):
                stream = await anyio.connect_tcp(str(endpoint.address), endpoint.port)  # type: ignore[attr-defined]
                received.append(bytearray())
                closed.append(anyio.Event())
                tg.start_soon(listen, stream, received[-1], closed[-1])

        # While the strangers hold their connections: the TCP link never goes down on
        # either node, and heartbeats keep coming (100 frames: about 2.5 s of them).
        went_down: list[str] = []
        counts = {name: c.status()["frames"]["received"] for name, c in nodes.items()}
        with anyio.fail_after(30):
            while any(
                c.status()["frames"]["received"] < counts[name] + 100 for name, c in nodes.items()
            ):
                went_down += [name for name, c in nodes.items() if not link_up(c, "lan")]
                await anyio.sleep(0.01)
        assert went_down == [], "the TCP link went down"
        assert lan_up_on_both() and states() == paired
        with anyio.fail_after(15):  # the proof deadline closes every stranger
            for event in closed:
                await event.wait()
        assert lan_up_on_both() and states() == paired
        tg.cancel_scope.cancel()

    for data in received:
        messages = LengthPrefixedDecoder(MAX_FRAME_SIZE).feed(bytes(data))
        assert len(messages) <= 1, "a stranger received more than the hello"
        assert all(len(m) == HELLO_SIZE and m.startswith(LINK_MAGIC) for m in messages)
