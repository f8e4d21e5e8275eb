"""``type: etcd`` against a real etcd on loopback: the core's grant rule held at etcd.

Each test uses its own key prefix in one etcd started for the module (the
test that kills etcd starts its own); the etcd is killed by PID and its data
directory removed at the end.
"""

from __future__ import annotations

import base64
import itertools
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme
from etcd3gw.client import Etcd3Client

from failover.core import effects as fx
from failover.core import events as ev
from failover.core.arbitration import LeaseRecord
from failover.core.state import INITIAL, Generation
from failover.runtime.arbitrator import (
    Denied,
    Granted,
    Lost,
    Released,
    Unreachable,
    arbitration_event,
)
from failover.runtime.etcdlease import EtcdArbitrator, EtcdTls, encode_holder
from failover.testing.etcd import NO_ETCD, EtcdServer

pytestmark = [pytest.mark.anyio, pytest.mark.skipif(NO_ETCD is not None, reason=str(NO_ETCD))]
G1, B1 = Generation(1, "alpha"), Generation(1, "beta")
_prefixes = itertools.count()


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    server = EtcdServer(tmp_path_factory.mktemp("etcd") / "data")
    server.start()
    yield server
    server.remove()


@pytest.fixture
def prefix() -> str:
    return f"/test{next(_prefixes)}"


def node(server: EtcdServer | str, name: str, prefix: str, ttl: float = 6) -> EtcdArbitrator:
    url = server if isinstance(server, str) else server.url
    return EtcdArbitrator(cluster="prod", node=name, endpoints=[url], key_prefix=prefix, ttl=ttl)


def put(server: EtcdServer, key: str, value: bytes) -> None:
    raw = Etcd3Client(host="127.0.0.1", port=server.client_port, api_path="/v3/")
    b64 = base64.b64encode
    raw.post(
        raw.get_url("/kv/put"),
        json={"key": b64(key.encode()).decode(), "value": b64(value).decode()},
    )


async def test_grant_deny_renew_release(etcd: EtcdServer, prefix: str) -> None:
    alpha, beta = node(etcd, "alpha", prefix), node(etcd, "beta", prefix)
    assert await alpha.request(G1, INITIAL, False) == Granted(G1)
    refused = await beta.request(B1, INITIAL, False)
    assert isinstance(refused, Denied) and "held by alpha" in refused.reason
    assert await alpha.renew(G1) == Granted(G1)
    lost = await beta.renew(B1)
    assert isinstance(lost, Lost)
    assert await alpha.release() == Released()
    assert await alpha.release() == Released()  # nothing left to give back
    # beta's data is behind the generation alpha was granted: refused though free
    stale = await beta.request(Generation(2, "beta"), INITIAL, False)
    assert isinstance(stale, Denied)
    assert "our generation 0 is not the newest known (1:alpha)" in stale.reason
    # from the newest base it is granted
    assert await beta.request(B1, G1, False) == Granted(B1)
    assert await beta.renew(B1) == Granted(B1)
    # forced overrides the data rule, never the lease
    forced = await alpha.request(Generation(5, "alpha"), INITIAL, True)
    assert isinstance(forced, Denied) and "held by beta" in forced.reason
    assert await beta.release() == Released()
    # a new generation not above the newest granted (1:beta) is raised above it
    assert await alpha.request(G1, INITIAL, True) == Granted(Generation(2, "alpha"))


async def test_a_retry_from_the_same_base_is_granted_again(etcd: EtcdServer, prefix: str) -> None:
    """The core's retry clause: granted, crashed before adopting, asks again."""
    alpha, beta = node(etcd, "alpha", prefix), node(etcd, "beta", prefix)
    assert await alpha.request(G1, INITIAL, False) == Granted(G1)
    again = node(etcd, "alpha", prefix)  # the daemon restarted: a new client, same node
    assert await again.request(G1, INITIAL, False) == Granted(Generation(2, "alpha"))
    assert isinstance(await alpha.renew(G1), Lost)  # the old run's lease no longer holds the key
    assert await again.release() == Released()
    assert isinstance(await beta.request(B1, INITIAL, False), Denied)


async def test_two_nodes_racing_one_is_granted(etcd: EtcdServer, prefix: str) -> None:
    replies: dict[str, object] = {}

    async def ask(client: EtcdArbitrator, wanted: Generation) -> None:
        replies[client.node] = await client.request(wanted, INITIAL, True)

    for round_ in range(8):
        alpha, beta = node(etcd, "alpha", prefix), node(etcd, "beta", prefix)
        replies.clear()
        async with anyio.create_task_group() as tg:
            tg.start_soon(ask, alpha, Generation(round_ * 2 + 1, "alpha"))
            tg.start_soon(ask, beta, Generation(round_ * 2 + 1, "beta"))
        granted = [name for name, reply in replies.items() if isinstance(reply, Granted)]
        assert len(granted) == 1, replies
        winner = alpha if granted == ["alpha"] else beta
        assert await winner.release() == Released()


async def test_a_commit_on_a_stale_read_fails_even_when_the_holder_is_gone_again(
    etcd: EtcdServer, prefix: str
) -> None:
    """alpha reads (free, generation 0), beta is granted and releases (the holder
    key is absent again), then alpha's txn must not commit its stale ruling."""
    alpha, beta = node(etcd, "alpha", prefix), node(etcd, "beta", prefix)
    client = alpha.clients[0]
    snap = alpha._read(client)
    assert snap.holder is None and snap.holder_revision == 0
    assert await beta.request(B1, INITIAL, False) == Granted(B1)
    assert await beta.release() == Released()
    lease = alpha._grant_lease(client)
    assert lease is not None
    stale = LeaseRecord(holder="alpha", generation=G1, granted_to="alpha")
    assert alpha._commit(client, snap, stale, lease) is False
    # and the rule, read afresh, refuses alpha: beta's generation is the newest
    refused = await alpha.request(G1, INITIAL, False)
    assert isinstance(refused, Denied) and "(1:beta)" in refused.reason


async def test_the_peer_is_granted_only_after_the_lease_ran_out(
    etcd: EtcdServer, prefix: str
) -> None:
    ttl = 2
    alpha, beta = node(etcd, "alpha", prefix, ttl), node(etcd, "beta", prefix, ttl)
    asked = time.monotonic()
    assert await alpha.request(G1, INITIAL, False) == Granted(G1)
    refused = await beta.request(B1, G1, False)
    assert isinstance(refused, Denied) and "held by alpha" in refused.reason
    deadline = time.monotonic() + 30
    while not isinstance(reply := await beta.request(B1, G1, False), Granted):
        assert time.monotonic() < deadline, reply  # a bounded poll of etcd
        await anyio.sleep(0.2)
    # the property, on this machine's clock: never before alpha's lease could run out
    assert time.monotonic() >= asked + ttl
    lost = await alpha.renew(G1)
    assert isinstance(lost, Lost) and "ran out" in lost.reason


async def test_a_dead_endpoint_is_passed_over(etcd: EtcdServer, prefix: str) -> None:
    alpha = EtcdArbitrator(
        cluster="prod",
        node="alpha",
        endpoints=["http://127.0.0.1:1", etcd.url],
        key_prefix=prefix,
        ttl=6,
    )
    assert await alpha.request(G1, INITIAL, False) == Granted(G1)
    assert await alpha.renew(G1) == Granted(G1)


NO_BASE = '"granted_to": null, "granted_from": {"counter": 0, "origin": ""}'
HOSTILE = [
    ("holder", b"\xff\xfe not text", "not JSON"),
    ("holder", b"[1, 2]", "not a failover value of format 1"),
    ("holder", b'{"format": 1, "node": "x"}', "keys ['format', 'node']"),
    ("holder", b'{"format": 1, "node": 7, "generation": {"counter": 1, "origin": "a"}}', "node:"),
    ("record", b"1e999999", "not a failover value"),
    ("record", b'{"format": 2}', "not a failover value of format 1"),
    ("record", b'{"format": true}', "not a failover value of format 1"),
    ("holder", b"[" * 100_000 + b"]" * 100_000, "not JSON (RecursionError)"),
]
for counter in ("true", "-3", "1.5", '"1"'):
    value = f'{{"format": 1, "generation": {{"counter": {counter}, "origin": "a"}}, {NO_BASE}}}'
    HOSTILE.append(("record", value.encode(), "generation: not a generation"))


@pytest.mark.parametrize(("key", "value", "says"), HOSTILE)
async def test_a_value_not_ours_is_a_denial_with_its_key_named(
    etcd: EtcdServer, prefix: str, key: str, value: bytes, says: str
) -> None:
    put(etcd, f"{prefix}/prod/{key}", value)
    reply = await node(etcd, "alpha", prefix).request(G1, INITIAL, True)
    assert isinstance(reply, Denied), reply
    assert f"etcd key {prefix}/prod/{key}: " in reply.reason and says in reply.reason
    assert "not read as free" in reply.reason


async def test_a_holder_key_rewritten_under_us_loses_the_renewal(
    etcd: EtcdServer, prefix: str
) -> None:
    alpha = node(etcd, "alpha", prefix)
    assert await alpha.request(G1, INITIAL, False) == Granted(G1)
    put(etcd, f"{prefix}/prod/holder", encode_holder("alpha", G1))  # ours, but no lease
    lost = await alpha.renew(G1)
    assert isinstance(lost, Lost) and "no longer ours" in lost.reason
    put(etcd, f"{prefix}/prod/holder", b"garbage")
    lost = await alpha.renew(G1)
    assert isinstance(lost, Lost) and "not ours" in lost.reason


async def test_etcd_killed_is_a_denial_and_a_silent_renewal(tmp_path: Path) -> None:
    server = EtcdServer(tmp_path / "data")
    server.start()
    try:
        alpha = node(server, "alpha", "/failover")
        assert await alpha.request(G1, INITIAL, False) == Granted(G1)
        server.kill()
        request = fx.RequestArbitration(generation=G1, base=INITIAL, forced=False)
        reply = await alpha.request(G1, INITIAL, False)
        assert isinstance(reply, Unreachable)
        assert reply.reason == f"etcd unreachable: {server.url}: cannot connect"
        assert arbitration_event(request, reply) == ev.ArbitrationDenied(reason=reply.reason)
        renewal = await alpha.renew(G1)
        assert isinstance(renewal, Unreachable)
        assert arbitration_event(fx.RenewArbitration(G1), renewal) is None
    finally:
        server.remove()
    assert not (tmp_path / "data").exists()


async def test_an_endpoint_that_never_answers_is_unreachable_within_its_timeout(
    prefix: str,
) -> None:
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        alpha = EtcdArbitrator(
            cluster="prod", node="alpha", endpoints=[url], key_prefix=prefix, ttl=6, timeout=0.3
        )
        reply = await alpha.request(G1, INITIAL, False)
    assert reply == Unreachable(f"etcd unreachable: {url}: no answer in time")


async def test_a_lease_granted_shorter_than_asked_is_refused(
    etcd: EtcdServer, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """etcd never shortens a lease; were it to, the node's deadline would come
    after etcd frees the key: the grant is refused and the lease revoked."""
    alpha = node(etcd, "alpha", prefix, ttl=6)
    post = EtcdArbitrator._post
    revoked: list[object] = []

    def shortened(
        self: EtcdArbitrator, client: Etcd3Client, path: str, body: dict[str, Any]
    ) -> Any:
        answer = post(self, client, path, body)
        if path == "/lease/grant":
            answer["TTL"] = "5"
        if path == "/lease/revoke":
            revoked.append(body["ID"])
        return answer

    monkeypatch.setattr(EtcdArbitrator, "_post", shortened)
    reply = await alpha.request(G1, INITIAL, False)
    assert reply == Denied("etcd granted a lease shorter than the 6 s asked")
    assert len(revoked) == 1
    monkeypatch.undo()
    assert await node(etcd, "beta", prefix).request(B1, INITIAL, False) == Granted(B1)


def test_over_tls_with_a_client_certificate(
    tmp_path: Path, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the configured CA and client certificate, whatever the environment
    says (requests would take its CA bundle over ours, and go through a proxy)."""
    ca = trustme.CA()
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "other-ca.pem"))
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:1")
    server_cert, client_cert = ca.issue_cert("127.0.0.1"), ca.issue_cert("alpha")
    paths = {
        name: tmp_path / f"{name}.pem"
        for name in ("ca", "server", "server-key", "client", "client-key")
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server_cert.cert_chain_pems[0].write_to_path(str(paths["server"]))
    server_cert.private_key_pem.write_to_path(str(paths["server-key"]))
    client_cert.cert_chain_pems[0].write_to_path(str(paths["client"]))
    client_cert.private_key_pem.write_to_path(str(paths["client-key"]))
    server = EtcdServer(tmp_path / "data", tls=(paths["server"], paths["server-key"], paths["ca"]))
    server.start()
    try:

        def client(tls: EtcdTls | None) -> EtcdArbitrator:
            return EtcdArbitrator(
                cluster="prod",
                node="alpha",
                endpoints=[server.url],
                key_prefix=prefix,
                ttl=6,
                tls=tls,
            )

        trusted = EtcdTls(str(paths["ca"]), str(paths["client"]), str(paths["client-key"]))
        assert anyio.run(client(trusted).request, G1, INITIAL, False) == Granted(G1)
        # no client certificate, or etcd's certificate not trusted: unreachable, said so
        for tls in (EtcdTls(str(paths["ca"])), None):
            reply = anyio.run(client(tls).request, G1, INITIAL, False)
            assert isinstance(reply, Unreachable), reply
            assert reply.reason.startswith(f"etcd unreachable: {server.url}: cannot connect: TLS: ")
    finally:
        server.remove()


async def test_an_answer_of_another_shape_is_unreachable_not_a_traceback(
    etcd: EtcdServer, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever answers at an endpoint (a proxy, another service) is no etcd."""
    alpha = node(etcd, "alpha", prefix)
    for answer in ({"responses": 7}, {"responses": [[], []]}, {"responses": [{"x": 1}]}):
        monkeypatch.setattr(Etcd3Client, "post", lambda *_, answer=answer, **__: answer)
        reply = await alpha.request(G1, INITIAL, False)
        assert isinstance(reply, Unreachable) and "malformed answer" in reply.reason, reply
