"""The data plane of two nodes in one process, over loopback: real FUSE mirrors,
the tracker, and a replication session between them."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import ssl
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme
from structlog.testing import capture_logs

from failover.api.openapi import Replication, VerifyReport
from failover.core import effects as fx
from failover.core import events as ev
from failover.core.state import Generation
from failover.errors import TransportError, UsageError
from failover.replication import receiving as receiving_module
from failover.replication import resync_attempt
from failover.replication.channel import AckLevel, ChannelSettings, SessionIdentity
from failover.replication.channel_session import greet_as_primary, greet_as_secondary
from failover.replication.directories import directories_hold_data
from failover.replication.fusermount import abort_connections
from failover.replication.quarantine import list_quarantines, load_manifest
from failover.replication.receiving import MAX_HANDSHAKES
from failover.replication.resync_wire import ResyncRequest
from failover.runtime.control import not_in_sync
from failover.runtime.dataplane import DataPlane, DataPlaneSettings
from failover.testing.proxy import CuttableProxy
from failover.testing.transport_contract import WAIT_TIMEOUT, free_port
from failover.tls import tls_context
from failover_transports.tcp import TcpEndpoint
from failover_transports.tcp_replication import TcpReplicationTransport

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        os.geteuid() != 0 or not os.path.exists("/dev/fuse"), reason="needs root and /dev/fuse"
    ),
]

KEY = b"d" * 32


@dataclass
class Node:
    plane: DataPlane
    root: Path
    events: list[ev.Event]
    event_seen: anyio.Event
    proxy: CuttableProxy | None = None  # between this node and its peer's receiver
    taken: int = 0  # events next_event returned


@asynccontextmanager
async def pair(
    tmp_path: Path,
    timeout: float = 2.0,
    tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None,
    probe_interval: float | None = None,
    cuttable: bool = False,
) -> AsyncIterator[tuple[Node, Node]]:
    """Two data planes; ``cuttable``: alpha reaches beta through a ``CuttableProxy``."""
    ports = {"alpha": free_port("tcp"), "beta": free_port("tcp")}
    proxy = CuttableProxy(ports["beta"]) if cuttable else None
    remotes = dict(ports, beta=ports["beta"] if proxy is None else proxy.port)
    nodes: dict[str, Node] = {}
    proxied = contextlib.nullcontext() if proxy is None else proxy.running()
    async with proxied, anyio.create_task_group() as tg:
        for name, peer in (("alpha", "beta"), ("beta", "alpha")):
            root = tmp_path / name / "data"
            root.mkdir(parents=True)
            events: list[ev.Event] = []
            seen = anyio.Event()

            async def report(event: ev.Event, name: str = name) -> None:
                nodes[name].events.append(event)
                nodes[name].event_seen.set()  # the current one (next_event renews it)

            settings = DataPlaneSettings(
                cluster="c1",
                node=name,
                peer=peer,
                key=KEY,
                roots={"data": root},
                state_dir=tmp_path / name / "tracking",
                quarantine_dir=tmp_path / name / "quarantine",
                transport=TcpReplicationTransport(),
                local=TcpEndpoint(address=IPv4Address("127.0.0.1"), port=ports[name]),
                remote=TcpEndpoint(address=IPv4Address("127.0.0.1"), port=remotes[peer]),
                channel=ChannelSettings(timeout=timeout, probe_interval=probe_interval),
                tls_server=None if tls is None else tls[0],
                tls_client=None if tls is None else tls[1],
            )
            # alpha serves generation 2; both last held 1 together
            serves = "2:alpha" if name == "alpha" else "1:alpha"
            plane = DataPlane(
                settings,
                report,
                generation=functools.partial(str, serves),
                synced_generation=lambda: "1:alpha",
            )
            nodes[name] = Node(plane, root, events, seen, proxy if name == "alpha" else None)
            await tg.start(plane.run)
        try:
            yield nodes["alpha"], nodes["beta"]
        finally:
            tg.cancel_scope.cancel()


async def receiving(node: Node, sessions: int = 1) -> None:
    """Until ``node`` has authenticated ``sessions`` sessions (the primary's
    handshake returns once it sent CONFIRM, before the secondary opened it)."""
    with anyio.fail_after(WAIT_TIMEOUT):
        while node.plane.receiving.sessions_received < sessions:
            await anyio.sleep(0.01)  # a bounded poll of the other node's task


async def next_event(node: Node) -> ev.Event:
    """The next event ``node`` reports (the core's input) that this function has
    not returned yet."""
    with anyio.fail_after(WAIT_TIMEOUT):
        while len(node.events) <= node.taken:
            node.event_seen = anyio.Event()
            await node.event_seen.wait()
    node.taken += 1
    return node.events[node.taken - 1]


def write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


async def test_a_synced_write_on_the_serving_node_is_on_the_peer(tmp_path: Path) -> None:
    async with pair(tmp_path) as (alpha, beta):
        # a node that does not serve shows its directory read-only
        with pytest.raises(OSError) as refused:
            await anyio.to_thread.run_sync(write_synced, beta.root / "x", b"no")
        assert refused.value.errno == errno.EROFS
        await alpha.plane.serve()
        await alpha.plane.start_replication()
        assert alpha.plane.status()["replicating"]
        await anyio.to_thread.run_sync(write_synced, alpha.root / "record", b"call 1\n")
        # fsync returned: the peer has it (read through its read-only mirror)
        assert (beta.root / "record").read_bytes() == b"call 1\n"
        assert beta.plane.receiving.sessions_received == 1
        assert not alpha.events  # nothing broke


async def test_a_lost_peer_breaks_replication_and_fsync_returns(tmp_path: Path) -> None:
    async with pair(tmp_path, timeout=1.0) as (alpha, beta):
        await alpha.plane.serve()
        await alpha.plane.start_replication()
        await receiving(beta)
        beta.plane.receiving.stop()  # the peer's receiver goes away
        with anyio.fail_after(WAIT_TIMEOUT):
            await anyio.to_thread.run_sync(write_synced, alpha.root / "after", b"alone")
            await alpha.event_seen.wait()
        assert [type(e) for e in alpha.events] == [ev.ReplicationFailed]
        assert not alpha.plane.status()["replicating"]
        assert (alpha.root / "after").read_bytes() == b"alone"  # the application went on


async def test_a_cut_of_the_idle_channel_shows_in_status_then_fails_replication(
    tmp_path: Path,
) -> None:
    interval = 0.1
    async with pair(tmp_path, timeout=1.5, probe_interval=interval, cuttable=True) as (alpha, _):
        assert alpha.proxy is not None
        await alpha.plane.serve()
        await alpha.plane.start_replication()
        with anyio.fail_after(WAIT_TIMEOUT):  # a bounded poll of status, as an operator would
            while not (alpha.plane.status()["sender"] or {}).get("last_probe_rtt"):
                await anyio.sleep(interval / 10)
        # the core sees a protected pair: heartbeats still flow
        assert not_in_sync(None, alpha.plane.status()) is None
        alpha.proxy.cut()  # idle: nothing in flight, nothing to time out but the probe
        with anyio.fail_after(WAIT_TIMEOUT):
            while alpha.plane.status()["channel_problem"] is None:
                await anyio.sleep(interval / 10)
        status = alpha.plane.status()
        assert status["replicating"] and not alpha.events  # status first, the core later
        reason = not_in_sync(None, status)
        assert reason is not None
        assert reason.startswith("replication channel: no answer from beta for ")
        with anyio.fail_after(WAIT_TIMEOUT):  # then the replication timeout passes
            await alpha.event_seen.wait()
        assert alpha.events == [ev.ReplicationFailed("no answer from beta for 1.5 s (probed)")]
        assert not alpha.plane.status()["replicating"]


async def test_tracking_records_what_the_peer_missed(tmp_path: Path) -> None:
    async with pair(tmp_path) as (alpha, _beta):
        await alpha.plane.serve()
        alpha.plane.start_tracking("1:alpha")
        await anyio.to_thread.run_sync(write_synced, alpha.root / "missed", b"m" * 10)
        assert alpha.plane.tracker is not None
        changes = alpha.plane.tracker.changes()
        assert changes.name_changed("data", b"missed")


async def test_a_lost_split_brain_moves_the_divergent_changes_to_quarantine(
    tmp_path: Path,
) -> None:
    async with pair(tmp_path) as (alpha, _beta):
        await alpha.plane.serve()
        await anyio.to_thread.run_sync(write_synced, alpha.root / "kept", b"before the split")
        alpha.plane.stop_tracking()  # the peer had everything up to here
        alpha.plane.start_tracking("1:alpha")
        await anyio.to_thread.run_sync(write_synced, alpha.root / "divergent", b"after")
        await alpha.plane.unserve()
        outcome = await alpha.plane.quarantine(fx.Quarantine(since=Generation(1, "alpha")))
        assert outcome == ev.QuarantineDone()
        assert sorted(p.name for p in alpha.root.iterdir()) == ["kept"]
        moved = list((tmp_path / "alpha" / "quarantine").rglob("divergent"))
        assert [p.read_bytes() for p in moved] == [b"after"]
        assert list((tmp_path / "alpha" / "quarantine").rglob("manifest.json"))


async def test_a_split_brain_quarantine_that_fails_is_reported_and_keeps_the_data(
    tmp_path: Path,
) -> None:
    async with pair(tmp_path) as (alpha, _beta):
        await alpha.plane.serve()
        alpha.plane.stop_tracking()
        alpha.plane.start_tracking("1:alpha")
        await anyio.to_thread.run_sync(write_synced, alpha.root / "divergent", b"after")
        await alpha.plane.unserve()
        (tmp_path / "alpha" / "quarantine").write_bytes(b"a file where the directory goes")
        outcome = await alpha.plane.quarantine(fx.Quarantine(since=Generation(1, "alpha")))
        # not swallowed: the core hears it (and retries); nothing was lost
        assert isinstance(outcome, ev.QuarantineFailed)
        assert outcome.reason.startswith("could not quarantine data: ")
        assert (alpha.root / "divergent").read_bytes() == b"after"


async def test_the_core_s_serving_decision_refuses_the_peer_s_sessions(tmp_path: Path) -> None:
    async with pair(tmp_path) as (alpha, beta):
        await alpha.plane.serve()
        beta.plane.fence_writes(False, serving=True)  # beta's core decided to serve
        refused = beta.plane.receiving.handshakes_refused
        await alpha.plane.start_replication()
        failed = await next_event(alpha)
        assert isinstance(failed, ev.ReplicationFailed)
        assert beta.plane.receiving.handshakes_refused == refused + 1
        assert beta.plane.receiving.sessions_received == 0
        beta.plane.fence_writes(False, serving=False)  # and then that it does not
        await alpha.plane.start_replication()
        await receiving(beta)
        assert alpha.plane.status()["replicating"]


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def test_a_returning_peer_is_resynced_with_what_changed_then_replicated(
    tmp_path: Path,
) -> None:
    async with pair(tmp_path) as (alpha, beta):
        # the common history: both hold "old" (beta's real directory is written directly)
        for node in (alpha, beta):
            node.plane.directories.mirrors["data"].unmount()
            (node.root / "old").write_bytes(b"o" * 300_000)
            node.plane.directories.mirrors["data"].mount()
        await alpha.plane.serve()
        await anyio.to_thread.run_sync(alpha.plane.stop_tracking)
        await anyio.to_thread.run_sync(alpha.plane.start_tracking, "1:alpha")

        def change() -> None:  # while beta is away
            fd = os.open(alpha.root / "old", os.O_WRONLY)
            os.pwrite(fd, b"N" * 10, 200_000)
            os.close(fd)
            write_synced(alpha.root / "new", b"fresh")

        await anyio.to_thread.run_sync(change)
        since, generation = Generation(1, "alpha"), Generation(2, "alpha")
        beta.plane.start_resync(fx.StartResync("target", "incremental", since, generation))
        alpha.plane.start_resync(fx.StartResync("source", "incremental", since, generation))
        with anyio.fail_after(WAIT_TIMEOUT):
            await alpha.event_seen.wait()
            await beta.event_seen.wait()
        assert alpha.events == [ev.PeerResynced(Generation(2, "alpha"))]
        assert beta.events == [ev.ResyncDone(Generation(2, "alpha"))]
        assert tree(alpha.root) == tree(beta.root)
        # status as the API documents it (/v1/openapi.json), with a resync done
        for node in (alpha, beta):
            Replication.model_validate(node.plane.status())
        # the resync's session goes on as the synchronous replication
        await alpha.plane.start_replication()
        await anyio.to_thread.run_sync(write_synced, alpha.root / "later", b"replicated")
        assert (beta.root / "later").read_bytes() == b"replicated"
        assert beta.plane.receiving.sessions_received == 1


async def test_verify_finds_a_difference_and_status_keeps_it(tmp_path: Path) -> None:
    async with pair(tmp_path) as (alpha, beta):
        await alpha.plane.serve()
        await alpha.plane.start_replication()
        for name in ("a", "b"):
            await anyio.to_thread.run_sync(write_synced, alpha.root / name, name.encode() * 5000)
        clean = await alpha.plane.verify()
        assert clean["in_sync"] and clean["text"] == "both copies are identical"
        # a bit rots on the peer's disk, under its mirror
        fd = os.open("b", os.O_WRONLY, dir_fd=beta.plane.directories.mirrors["data"].backing_fd)
        os.pwrite(fd, b"X", 4321)
        os.close(fd)
        found = await alpha.plane.verify()
        assert not found["in_sync"]
        assert [d["path"] for d in found["directories"]["data"]["differing"]] == ["b"]
        assert alpha.plane.status()["verified"]["differences"] == 1
        VerifyReport.model_validate(found)  # as the API documents them (/v1/openapi.json)
        Replication.model_validate(alpha.plane.status())
        with pytest.raises(UsageError, match="replicating primary"):
            await beta.plane.verify()


async def test_replication_runs_over_mutual_tls(tmp_path: Path) -> None:
    ca = trustme.CA()
    files = {
        "ca_file": tmp_path / "ca.pem",
        "cert_file": tmp_path / "c.pem",
        "key_file": tmp_path / "k.pem",
    }
    cert = ca.issue_cert("node.failover.invalid")
    ca.cert_pem.write_to_path(str(files["ca_file"]))
    cert.cert_chain_pems[0].write_to_path(str(files["cert_file"]))
    cert.private_key_pem.write_to_path(str(files["key_file"]))
    paths = {k: str(v) for k, v in files.items()}
    tls = (tls_context(server=True, **paths), tls_context(server=False, **paths))
    async with pair(tmp_path, tls=tls) as (alpha, beta):
        await alpha.plane.serve()
        await alpha.plane.start_replication()
        assert alpha.plane.status()["replicating"]
        await anyio.to_thread.run_sync(write_synced, alpha.root / "secret", b"over tls")
        assert (beta.root / "secret").read_bytes() == b"over tls"


async def wrote_while_away(alpha: Node) -> tuple[Generation, Generation]:
    """alpha serves generation 2 and wrote ``while-away`` since 1, which its peer
    last held: (since, generation) of the resync that follows."""
    await alpha.plane.serve()
    await anyio.to_thread.run_sync(alpha.plane.stop_tracking)
    await anyio.to_thread.run_sync(alpha.plane.start_tracking, "1:alpha")
    await anyio.to_thread.run_sync(write_synced, alpha.root / "while-away", b"w")
    return Generation(1, "alpha"), Generation(2, "alpha")


async def test_a_resync_that_cannot_start_yet_is_reported_and_the_core_s_retry_runs(
    tmp_path: Path,
) -> None:
    async with pair(tmp_path) as (alpha, beta):
        since, generation = await wrote_while_away(alpha)
        # the source starts first: beta does not ask for a resync yet
        effect = fx.StartResync("source", "incremental", since, generation)
        alpha.plane.start_resync(effect)
        failed = await next_event(alpha)
        # one attempt, reported: the core decides when to try again (no retry here)
        assert isinstance(failed, ev.ResyncFailed) and not failed.full_needed
        assert "did not ask for a resync" in failed.reason
        assert alpha.plane.sourcing.failures == 1
        assert alpha.plane.status()["resync_failures"] == 1
        beta.plane.start_resync(fx.StartResync("target", "incremental", since, generation))
        alpha.plane.start_resync(effect)  # the core's retry, at its deadline
        assert await next_event(alpha) == ev.PeerResynced(generation)
        assert await next_event(beta) == ev.ResyncDone(generation)
        assert (beta.root / "while-away").read_bytes() == b"w"
        assert alpha.events == [failed, ev.PeerResynced(generation)]


async def test_an_incremental_resync_from_a_wrong_tracking_point_is_the_core_s_to_decide(
    tmp_path: Path,
) -> None:
    async with pair(tmp_path) as (alpha, beta):
        since, generation = await wrote_while_away(alpha)  # tracked since 1:alpha
        await anyio.to_thread.run_sync(alpha.plane.stop_tracking)
        await anyio.to_thread.run_sync(alpha.plane.start_tracking, "0:lost")
        beta.plane.start_resync(fx.StartResync("target", "incremental", since, generation))
        alpha.plane.start_resync(fx.StartResync("source", "incremental", since, generation))
        failed = await next_event(alpha)
        # not copied in full on the data plane's own decision: reported, nothing sent
        assert isinstance(failed, ev.ResyncFailed) and failed.full_needed
        assert "since 0:lost" in failed.reason and "holds 1:alpha" in failed.reason
        assert not (beta.root / "while-away").exists()
        # the core answers with a full resync
        alpha.plane.start_resync(fx.StartResync("source", "full", since, generation))
        assert await next_event(alpha) == ev.PeerResynced(generation)
        assert (beta.root / "while-away").read_bytes() == b"w"


class _Recorder:
    """A ``MessageStream`` end that keeps every message sent through it: what an
    eavesdropper on the replication network records."""

    def __init__(self, send: Any, receive: Any, sent: list[bytes]) -> None:
        self._send, self._receive, self.sent = send, receive, sent

    async def send(self, message: bytes) -> None:
        self.sent.append(message)
        await self._send.send(message)

    async def receive(self, *, limit: int | None = None) -> bytes:
        try:
            message = bytes(await self._receive.receive())
        except (anyio.EndOfStream, anyio.ClosedResourceError) as exc:
            raise TransportError("recorder: closed") from exc
        if limit is not None and len(message) > limit:
            raise TransportError(f"recorder: a {len(message)}-byte message, the limit is {limit}")
        return message

    async def aclose(self) -> None:
        await self._send.aclose()


async def recorded_handshake() -> list[bytes]:
    """HELLO and CONFIRM of a real alpha -> beta handshake under the pair's key."""
    alpha_id = SessionIdentity("c1", KEY, "alpha", "beta", "2:alpha")
    beta_id = SessionIdentity("c1", KEY, "beta", "alpha", "1:alpha")
    to_beta = anyio.create_memory_object_stream[bytes](10)
    to_alpha = anyio.create_memory_object_stream[bytes](10)
    sent: list[bytes] = []
    primary_end = _Recorder(to_beta[0], to_alpha[1], sent)
    secondary_end = _Recorder(to_alpha[0], to_beta[1], [])
    async with anyio.create_task_group() as tg:
        tg.start_soon(greet_as_secondary, secondary_end, beta_id, WAIT_TIMEOUT)
        await greet_as_primary(primary_end, alpha_id, AckLevel.WRITTEN, WAIT_TIMEOUT)
    return sent


async def test_unauthenticated_connections_change_nothing_of_a_live_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 8: connects to the secondary's replication port without the key
    (idle, junk, half a message, a replayed recorded handshake), more of them
    than may authenticate at once, during synchronous writes: the live session
    is never ended or replaced, no write waits for a broken session, every
    hostile connection is closed by the handshake deadline or at once."""
    with capture_logs() as logs:
        async with pair(tmp_path, timeout=1.0) as (alpha, beta):
            await alpha.plane.serve()
            await alpha.plane.start_replication()
            port = beta.plane.settings.local.port  # type: ignore[attr-defined]
            asked: list[bytes] = []  # the resync request: computed only for a verified HELLO
            resync_request = beta.plane.target.request

            def counted(session: Any) -> bytes:  # the session's ResyncTarget
                asked.append(resync_request(session))
                return asked[-1]

            monkeypatch.setattr(beta.plane.target, "request", counted)
            replay = await recorded_handshake()
            hostile: list[Any] = []
            transport = TcpReplicationTransport()
            for n in range(MAX_HANDSHAKES + 4):  # more than may authenticate at once
                kind = n % 4
                if kind == 3:  # a recorded HELLO then its CONFIRM, framed as the peer does
                    stream = await transport.connect(beta.plane.settings.local, WAIT_TIMEOUT)
                    for message in replay:
                        await stream.send(message)
                else:
                    stream = await anyio.connect_tcp("127.0.0.1", port)
                    if kind == 1:
                        await stream.send(os.urandom(700))
                    elif kind == 2:  # a length prefix, then half of the message
                        await stream.send((4096).to_bytes(4, "big") + os.urandom(100))
                hostile.append(stream)
                # the application writes synchronously all along
                name = alpha.root / f"record-{n}"
                await anyio.to_thread.run_sync(write_synced, name, b"%d\n" % n)
                assert (beta.root / name.name).read_bytes() == b"%d\n" % n

            async def closed_by_beta(stream: Any) -> None:
                with contextlib.suppress(
                    TransportError, anyio.EndOfStream, anyio.BrokenResourceError
                ):
                    while True:  # a WELCOME may come first (to the replay): read to the end
                        await stream.receive()

            with anyio.fail_after(WAIT_TIMEOUT):  # the handshake deadline is 1 s
                for stream in hostile:
                    await closed_by_beta(stream)
            await anyio.to_thread.run_sync(write_synced, alpha.root / "after", b"still synced")
            assert (beta.root / "after").read_bytes() == b"still synced"
            assert not alpha.events, "the live session broke"
            assert alpha.plane.status()["replicating"]
            assert beta.plane.receiving.sessions_received == 1  # never replaced
            assert beta.plane.receiving.handshakes == 0
            assert beta.plane.receiving.handshakes_refused == len(hostile), (
                "every stranger is counted"
            )
            refusals = [r for r in logs if r["event"] == "replication connection refused"]
            # one record per REFUSAL_LOG_INTERVAL (10 s), however many strangers
            assert 1 <= len(refusals) < len(hostile) // 2, refusals
            assert len(asked) <= (MAX_HANDSHAKES + 4) // 4  # the replayed HELLOs at most
            for stream in hostile:
                await stream.aclose()


async def test_the_write_fence_holds_an_unreplicated_fsync_until_the_core_lifts_it(
    tmp_path: Path,
) -> None:
    """Issue 8: a primary whose session breaks must not tell the application a
    write is durable while its secondary may take over without it. Held until
    the core lifts the fence (the new generation persisted, the peer out of
    secondary or lost); held ones fail with EIO when the node stops serving."""
    async with pair(tmp_path, timeout=1.0) as (alpha, beta):
        await alpha.plane.serve()
        alpha.plane.fence_writes(True)  # the core: beta is an alive secondary
        await alpha.plane.start_replication()
        await receiving(beta)
        await anyio.to_thread.run_sync(write_synced, alpha.root / "replicated", b"on both")
        beta.plane.receiving.stop()  # the session breaks
        results: list[str] = []

        async def application(name: str) -> None:
            try:
                await anyio.to_thread.run_sync(
                    write_synced, alpha.root / name, b"x", abandon_on_cancel=True
                )
                results.append("acknowledged")
            except OSError as exc:
                results.append(errno.errorcode[exc.errno or 0])

        async def held(count: int) -> None:
            with anyio.fail_after(WAIT_TIMEOUT):
                while alpha.plane.status()["writes_held"] < count:
                    await anyio.sleep(0.01)  # a bounded poll of a FUSE thread's state

        @asynccontextmanager
        async def applications() -> AsyncIterator[anyio.abc.TaskGroup]:
            """The application's writes, done within the deadline: a regression fails
            the test and lets a held write go (EIO), never hangs it on its own mount."""
            try:
                with anyio.fail_after(WAIT_TIMEOUT):
                    async with anyio.create_task_group() as tg:
                        yield tg
            except BaseException:
                alpha.plane.fence_writes(False, serving=False)
                raise

        async with applications() as tg:
            tg.start_soon(application, "held")
            await held(1)
            with anyio.fail_after(WAIT_TIMEOUT):
                await alpha.event_seen.wait()
            assert [type(e) for e in alpha.events] == [ev.ReplicationFailed]
            tg.start_soon(application, "held too")  # also without any session
            await held(2)
            assert results == []  # nothing acknowledged while fenced
            alpha.plane.fence_writes(False)  # the core: new generation on disk, peer left
        assert results == ["acknowledged", "acknowledged"]
        alpha.plane.fence_writes(True)
        async with applications() as tg:
            tg.start_soon(application, "never acknowledged")
            await held(1)
            # the core left serving (stop), then the peer took over: never acknowledged
            alpha.plane.fence_writes(True, serving=False)
            alpha.plane.fence_writes(False, serving=False)
        assert results[2:] == ["EIO"]
        alpha.plane.fence_writes(True)
        async with applications() as tg:
            tg.start_soon(application, "not acknowledged either")
            await held(1)
            await alpha.plane.unserve()  # the application stopped: the mirror goes read-only
        assert results[3:] == ["EIO"]


async def test_an_fsync_begun_before_the_resync_s_session_and_fenced_after_it_is_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Campaign finding 3 (i13, seed 77 round 2): the application's fsync began
    while alpha served alone with no session (the resync attempt had ended the
    old one and not yet handed its own to the relay), and reached the write
    fence after beta had become secondary. It was held for a session it never
    had, while the resync's session ran unbroken as the synchronous replication:
    nothing lifts the fence of a protected pair, and the write hung until the
    next fault. A held fsync is asked again of every later session, as a new
    fsync would be: acknowledged once beta made it durable."""
    async with pair(tmp_path) as (alpha, beta):
        since, generation = await wrote_while_away(alpha)  # alone: no fence, no session
        relay = alpha.plane.sending.relay
        assert relay is not None
        tracker = relay.tracker
        tracker_sync = tracker.sync
        in_window, fenced = threading.Event(), threading.Event()

        def sync_in_the_window(op: Any) -> None:
            # the application's fsync, queued for no session: it waits here, in its
            # FUSE thread, until the resync's session replicates and the fence is up
            if op.path == b"record":
                in_window.set()
                fenced.wait(WAIT_TIMEOUT)
            tracker_sync(op)

        monkeypatch.setattr(tracker, "sync", sync_in_the_window)
        results: list[str] = []

        async def application() -> None:
            try:
                await anyio.to_thread.run_sync(
                    write_synced, alpha.root / "record", b"431", abandon_on_cancel=True
                )
                results.append("acknowledged")
            except OSError as exc:
                results.append(errno.errorcode[exc.errno or 0])

        try:
            with anyio.fail_after(WAIT_TIMEOUT):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(application)
                    await anyio.to_thread.run_sync(in_window.wait, WAIT_TIMEOUT)
                    beta.plane.start_resync(
                        fx.StartResync("target", "incremental", since, generation)
                    )
                    alpha.plane.start_resync(
                        fx.StartResync("source", "incremental", since, generation)
                    )
                    assert await next_event(alpha) == ev.PeerResynced(generation)
                    assert await next_event(beta) == ev.ResyncDone(generation)
                    await alpha.plane.start_replication()  # the resync's session goes on
                    alpha.plane.fence_writes(True)  # the core: beta is secondary
                    fenced.set()
        except BaseException:
            fenced.set()
            alpha.plane.fence_writes(False, serving=False)  # lets a held write go (EIO)
            raise
        assert results == ["acknowledged"]
        assert (beta.root / "record").read_bytes() == b"431"
        assert alpha.plane.status()["replicating"] and not alpha.events[1:]


async def test_a_peer_already_at_the_delivered_generation_is_reported_not_retried(
    tmp_path: Path,
) -> None:
    """Issue 8's stuck pair: a resync session broke after the target applied
    its END; the target is secondary at the delivered generation and no longer
    asks for a resync. Retrying forever left the primary alone ("did not ask
    for a resync") and the secondary claiming to be in sync; the source now
    reports it (ResyncFailed) and the table decides (a new generation)."""
    async with pair(tmp_path) as (alpha, beta):
        await alpha.plane.serve()
        delivered = Generation(1, "alpha")  # what beta announces: it got it already
        alpha.plane.start_resync(fx.StartResync("source", "incremental", delivered, delivered))
        with anyio.fail_after(WAIT_TIMEOUT):
            await alpha.event_seen.wait()
        assert len(alpha.events) == 1 and isinstance(alpha.events[0], ev.ResyncFailed)
        assert "already holds generation 1:alpha" in alpha.events[0].reason
        assert beta.plane.target.received == 0


async def test_a_flood_of_connects_while_the_node_remounts_stops_nothing(tmp_path: Path) -> None:
    """Campaign round 99 (seed 2031): connects to the secondary's replication port
    while it takes over and hands back (``serve``/``unserve`` swap its mirrors,
    closing their fds in a worker thread). No connection may meet a closed or
    reused directory fd and end the data plane; the listener keeps accepting, and
    a real session works afterwards."""
    async with pair(tmp_path, timeout=1.0) as (alpha, beta):
        port = beta.plane.settings.local.port  # type: ignore[attr-defined]
        connects = 0

        async def flood() -> None:
            nonlocal connects
            while True:
                with contextlib.suppress(OSError):
                    stream = await anyio.connect_tcp("127.0.0.1", port)
                    connects += 1
                    await stream.aclose()  # the handshake fails at once: slots free up

        async with anyio.create_task_group() as attack:
            attack.start_soon(flood)
            for _ in range(15):
                await beta.plane.serve()
                await beta.plane.unserve()
            attack.cancel_scope.cancel()
        assert connects > 15
        await alpha.plane.serve()
        await alpha.plane.start_replication()
        await receiving(beta)
        await anyio.to_thread.run_sync(write_synced, alpha.root / "after", b"replicated")
        assert (beta.root / "after").read_bytes() == b"replicated"
        assert beta.plane.receiving.handshakes == 0


async def test_a_connection_that_cannot_take_its_descriptors_is_refused_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection that fails to take any of its directory fds (the resync
    target's duplicates included: a flood exhausted the descriptors) is refused
    on its own: its handshake slot is given back, the data plane goes on, and
    the peer's next session replicates."""
    real = receiving_module.ResyncTarget
    exhausted = [UsageError("replicated directory: Too many open files: None")]

    def resync_target(*args: Any, **kwargs: Any) -> Any:
        if exhausted:
            raise exhausted.pop()
        return real(*args, **kwargs)

    monkeypatch.setattr(receiving_module, "ResyncTarget", resync_target)
    async with pair(tmp_path, timeout=1.0) as (alpha, beta):
        port = beta.plane.settings.local.port  # type: ignore[attr-defined]
        stream = await anyio.connect_tcp("127.0.0.1", port)
        with anyio.fail_after(WAIT_TIMEOUT):
            while beta.plane.receiving.handshakes_refused < 1:
                await anyio.sleep(0.01)  # a bounded poll of the other node's task
        await stream.aclose()
        assert not exhausted and beta.plane.receiving.handshakes == 0
        await alpha.plane.serve()
        await alpha.plane.start_replication()
        await receiving(beta)
        await anyio.to_thread.run_sync(write_synced, alpha.root / "after", b"replicated")
        assert (beta.root / "after").read_bytes() == b"replicated"


async def test_a_live_write_as_a_resync_starts_reaches_the_target_after_its_begin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Campaign seed 2029 (the e2e split brain healed while the winner writes): a
    live write made after the source's plan but before its BEGIN was queued first,
    and the target, not yet resyncing, applied it to a file it does not have (the
    loser quarantined it): ApplyError, the resync failed and the next was full.
    BEGIN is queued in the same order-lock hold as the plan: the write reaches
    the target inside the resync, which rebuilds the file."""
    real = resync_attempt.ResyncSource

    class WritesFirst(real):  # type: ignore[misc,valid-type]
        def run(self) -> bool:
            with open(alpha.root / "while-away", "ab") as application:
                application.write(b" and more")  # the application, as the thread starts
            return bool(super().run())

    monkeypatch.setattr(resync_attempt, "ResyncSource", WritesFirst)
    async with pair(tmp_path) as (alpha, beta):
        since, generation = await wrote_while_away(alpha)
        beta.plane.start_resync(fx.StartResync("target", "incremental", since, generation))
        alpha.plane.start_resync(fx.StartResync("source", "incremental", since, generation))
        with anyio.fail_after(WAIT_TIMEOUT):
            await alpha.event_seen.wait()
            await beta.event_seen.wait()
        assert beta.events == [ev.ResyncDone(generation)]
        assert alpha.events == [ev.PeerResynced(generation)]
        assert (beta.root / "while-away").read_bytes() == b"w and more"


def preinstall(node: Node, files: dict[str, bytes]) -> None:
    """``files`` in ``node``'s real directory (under its mirror), as an
    application installed before the cluster left them."""
    mirror = node.plane.directories.mirrors["data"]
    mirror.unmount()
    for name, content in files.items():
        (node.root / name).parent.mkdir(parents=True, exist_ok=True)
        (node.root / name).write_bytes(content)
    mirror.mount()


async def start_full_resync(alpha: Node, beta: Node, *, ready: bool = True) -> Generation:
    """alpha serves generation 2 with ``app.conf`` and starts copying it to beta
    in full, once beta set its data aside and answers (``ready``: as the core's
    retries end up doing) or at once; returns that generation."""
    await alpha.plane.serve()
    await anyio.to_thread.run_sync(write_synced, alpha.root / "app.conf", b"alpha's")
    since, generation = Generation(), Generation(2, "alpha")
    beta.plane.start_resync(fx.StartResync("target", "full", since, generation))
    if ready:
        with anyio.fail_after(WAIT_TIMEOUT):
            while beta.plane.target.wanted is None:
                await anyio.sleep(0.01)  # a bounded poll of the other node's task
    alpha.plane.start_resync(fx.StartResync("source", "full", since, generation))
    return generation


async def full_resync(alpha: Node, beta: Node) -> None:
    """``start_full_resync``, to its end."""
    generation = await start_full_resync(alpha, beta)
    with anyio.fail_after(WAIT_TIMEOUT):
        await alpha.event_seen.wait()
        await beta.event_seen.wait()
    assert beta.events == [ev.ResyncDone(generation)]


async def test_a_full_resync_quarantines_what_the_target_held_before_copying(
    tmp_path: Path,
) -> None:
    # a first start beside an existing application: beta holds its files, alpha
    # (chosen by the operator, or holding data itself) serves and copies in full
    async with pair(tmp_path) as (alpha, beta):
        preinstall(beta, {"app.conf": b"beta's settings", "db/table": b"beta's rows"})
        await full_resync(alpha, beta)
        assert tree(beta.root) == tree(alpha.root) == {"app.conf": b"alpha's"}
        # everything beta held was set aside first, with its manifest
        sets = list_quarantines(tmp_path / "beta" / "quarantine")
        assert [(s.cause, s.generation, s.peer, s.complete) for s in sets] == [
            ("full resync", "1:alpha-full", "alpha", True)
        ]
        kept = sets[0].directory / "data"
        assert (kept / "app.conf").read_bytes() == b"beta's settings"
        assert (kept / "db" / "table").read_bytes() == b"beta's rows"
        manifest = load_manifest(sets[0].directory)
        assert manifest.reason == "full resync from peer alpha over generation 1:alpha-full"
        assert {e.path for e in manifest.roots["data"].entries} == {
            b"app.conf",
            b"db",
            b"db/table",
        }


async def test_a_full_resync_into_an_empty_directory_quarantines_nothing(tmp_path: Path) -> None:
    async with pair(tmp_path) as (alpha, beta):
        await full_resync(alpha, beta)
        assert tree(beta.root) == {"app.conf": b"alpha's"}
        assert list_quarantines(tmp_path / "beta" / "quarantine") == []


def test_a_first_start_looks_for_data_in_the_directories_before_mounting(tmp_path: Path) -> None:
    empty, full, missing = tmp_path / "empty", tmp_path / "full", tmp_path / "missing"
    empty.mkdir()
    full.mkdir()
    (full / ".hidden").write_bytes(b"")  # any entry counts
    assert not directories_hold_data({"a": empty, "b": missing})
    assert directories_hold_data({"a": empty, "b": full})
    # unreadable: counted as data (never served over nor overwritten on a guess)
    (tmp_path / "file").write_bytes(b"not a directory")
    assert directories_hold_data({"a": tmp_path / "file"})


async def test_a_full_resync_whose_quarantine_fails_copies_nothing(tmp_path: Path) -> None:
    async with pair(tmp_path) as (alpha, beta):
        preinstall(beta, {"app.conf": b"beta's settings"})
        (tmp_path / "beta" / "quarantine").write_bytes(b"a file where the directory goes")
        await start_full_resync(alpha, beta, ready=False)
        # the target reports the failed set-aside (the core decides what follows)
        # and answers no source: the source's attempt fails and is reported too
        held = await next_event(beta)
        assert isinstance(held, ev.QuarantineFailed)
        assert "could not quarantine data before a full resync" in held.reason
        failed = await next_event(alpha)
        assert isinstance(failed, ev.ResyncFailed)
        assert "did not ask for a resync" in failed.reason
        assert tree(beta.root) == {"app.conf": b"beta's settings"}
        assert not beta.plane.status()["resync_wanted"]
        # the core's retry of the full resync: held again while the disk is still wrong
        generation = Generation(2, "alpha")
        beta.plane.start_resync(fx.StartResync("target", "full", Generation(), generation))
        assert isinstance(await next_event(beta), ev.QuarantineFailed)
        assert tree(beta.root) == {"app.conf": b"beta's settings"}


async def test_serving_waits_for_a_set_aside_that_is_moving_files(tmp_path: Path) -> None:
    # The set-aside of a full resync runs beside the action queue. Stopped in the
    # middle (stop, then primforce on this node), its moves go on in their thread:
    # the directories must not turn read-write for the application before it ends.
    async with pair(tmp_path) as (_alpha, beta):
        moving = contextlib.AsyncExitStack()
        await moving.enter_async_context(beta.plane.target.settled())
        served = anyio.Event()

        async def serve() -> None:
            await beta.plane.serve()
            served.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            await anyio.wait_all_tasks_blocked()
            assert not served.is_set() and not beta.plane.serving
            await moving.aclose()
        assert beta.plane.serving


async def test_a_stranger_makes_a_waiting_target_digest_nothing(tmp_path: Path) -> None:
    """Issue 10: while this node waits for an incremental resync, connections that
    never authenticate (junk, a HELLO whose MAC is wrong) cause no digest of its
    suspect set, even with every write voiding the cached digests between them:
    that disk work is the core's (``StartResync``), never a stranger's."""
    hello = (await recorded_handshake())[0]
    forged = hello[:-1] + bytes([hello[-1] ^ 1])  # its MAC no longer matches
    async with pair(tmp_path, timeout=1.0) as (_alpha, beta):
        await beta.plane.serve()
        beta.plane.start_tracking("1:alpha")
        await anyio.to_thread.run_sync(write_synced, beta.root / "mine", b"divergent")
        await beta.plane.unserve()
        since, generation = Generation(1, "alpha"), Generation(2, "alpha")
        beta.plane.start_resync(fx.StartResync("target", "incremental", since, generation))
        transport = TcpReplicationTransport()
        port = beta.plane.settings.local.port  # type: ignore[attr-defined]
        for n in range(6):
            with beta.plane.directories.checks.writing():
                pass  # a write here: what was digested no longer holds
            if n % 2:
                stream: Any = await transport.connect(beta.plane.settings.local, WAIT_TIMEOUT)
                await stream.send(forged)
            else:
                stream = await anyio.connect_tcp("127.0.0.1", port)
                await stream.send(os.urandom(700))
            with (
                anyio.fail_after(WAIT_TIMEOUT),
                contextlib.suppress(TransportError, anyio.EndOfStream, anyio.BrokenResourceError),
            ):
                while True:  # until beta closes it
                    await stream.receive()
        assert beta.plane.receiving.handshakes_refused == 6
        passes = beta.plane.directories.checks.passes
        assert passes <= 1, f"{passes} digest passes for strangers"


async def test_a_waiting_targets_request_carries_the_digests_of_its_suspect_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The digests are made when the core starts the wait, not by a connection: the
    source's session still finds them, and sends only what differs."""
    async with pair(tmp_path) as (alpha, beta):
        await beta.plane.serve()
        beta.plane.start_tracking("1:alpha")
        await anyio.to_thread.run_sync(write_synced, beta.root / "mine", b"divergent")
        await beta.plane.unserve()
        await alpha.plane.serve()
        await anyio.to_thread.run_sync(alpha.plane.stop_tracking)
        await anyio.to_thread.run_sync(alpha.plane.start_tracking, "1:alpha")
        await anyio.to_thread.run_sync(write_synced, alpha.root / "new", b"fresh")
        requests: list[ResyncRequest] = []
        asked = beta.plane.target.request

        def recorded(session: Any) -> bytes:
            requests.append(ResyncRequest.decode(asked(session)))
            return asked(session)

        monkeypatch.setattr(beta.plane.target, "request", recorded)
        since, generation = Generation(1, "alpha"), Generation(2, "alpha")
        beta.plane.start_resync(fx.StartResync("target", "incremental", since, generation))
        alpha.plane.start_resync(fx.StartResync("source", "incremental", since, generation))
        assert await next_event(beta) == ev.ResyncDone(generation)
        assert [(r.full, r.checks is not None) for r in requests] == [(False, True)]
        assert tree(alpha.root) == tree(beta.root) == {"new": b"fresh"}


STATUS_KEYS = {  # docs/api.md, "replication": what the control API and the CLI read
    "directories",
    "mode",
    "replicating",
    "channel_problem",
    "writes_fenced",
    "writes_held",
    "ack",
    "sender",
    "sessions_received",
    "handshakes_refused",
    "resync",
    "verified",
    "resync_wanted",
    "resync_failures",
    "resyncs_received",
    "bandwidth",
    "tracked",
}


async def test_the_status_keeps_its_documented_fields(tmp_path: Path) -> None:
    async with pair(tmp_path) as (alpha, beta):
        await alpha.plane.serve()
        await alpha.plane.start_replication()
        await receiving(beta)
        status = alpha.plane.status()
        assert set(status) == STATUS_KEYS
        assert status["mode"] == "read-write" and status["replicating"]
        assert status["directories"] == {"data": str(alpha.root)}
        assert set(status["tracked"]) == {"since", "files", "names", "meta"}
        assert set(status["sender"]) >= {"ops_sent", "bytes_sent", "acked", "quiet"}
        assert beta.plane.status()["sessions_received"] == 1
        assert beta.plane.status()["mode"] == "read-only"


async def test_mirrors_aborted_by_a_fence_are_mounted_again_to_serve(tmp_path: Path) -> None:
    """The watchdog's fence aborts the serving node's mirrors (the daemon stalled);
    when the core then starts the application again (a restart keeps the node
    serving), ``serve`` mounts them again: the application writes through live,
    replicating mirrors, never dead ones."""
    async with pair(tmp_path) as (alpha, beta):
        await alpha.plane.serve()
        await alpha.plane.start_replication()
        await anyio.to_thread.run_sync(write_synced, alpha.root / "before", b"1\n")
        assert abort_connections([str(alpha.root)]) == "aborted 1"
        with pytest.raises(OSError) as dead:
            await anyio.to_thread.run_sync(write_synced, alpha.root / "during", b"no\n")
        assert dead.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
        await alpha.plane.serve()
        await anyio.to_thread.run_sync(write_synced, alpha.root / "after", b"2\n")
        assert (alpha.root / "before").read_bytes() == b"1\n"
        assert (beta.root / "after").read_bytes() == b"2\n"  # replicated again
