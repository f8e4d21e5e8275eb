"""A release of the etcd arbitrator revokes the etcd lease it was asked to end.

Invariant (S1, the witness's stale-release hole checked on etcd): a release
names the etcd lease id held when the release was called. A release the
executor abandoned at its deadline (its worker thread still running, stuck
on a dead endpoint) that reaches the next endpoint after this node was
granted again revokes the old lease, never the new one: the holder key on
the new lease stays, so the peer is not granted while this node serves.
No etcd is needed: the HTTP calls are stood in for.
"""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest
from etcd3gw.client import Etcd3Client

from failover.runtime.etcdlease import EtcdArbitrator, EtcdUnavailable

pytestmark = pytest.mark.anyio
OLD, NEW = 0x1111, 0x2222


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_an_abandoned_release_revokes_the_old_lease_not_the_new_grant() -> None:
    arbitrator = EtcdArbitrator(
        cluster="prod",
        node="alpha",
        endpoints=["http://127.0.0.1:9", "http://127.0.0.1:10"],
        ttl=6,
    )
    dead = arbitrator.clients[0]
    stuck, revoked, done = threading.Event(), [], threading.Event()

    def post(client: Etcd3Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert path == "/lease/revoke"
        if client is dead:  # hangs past the executor's deadline, then fails
            stuck.wait(10)
            raise EtcdUnavailable("timed out")
        revoked.append(int(body["ID"]))
        done.set()
        return {}

    arbitrator._post = post  # type: ignore[method-assign]
    arbitrator.lease = OLD
    with anyio.move_on_after(0.1):  # the executor abandons the release
        await arbitrator.release()
    arbitrator.lease = NEW  # alpha is granted again: its holder key is on NEW
    stuck.set()  # the dead endpoint gives up: the worker thread tries the next
    assert await anyio.to_thread.run_sync(done.wait, 10)
    assert revoked == [OLD]
    assert arbitrator.lease == NEW  # still renewed, and released, as ours
