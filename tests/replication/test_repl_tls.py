"""Mutual TLS on the tcp-replication transport: only the cluster CA's certificates."""

from __future__ import annotations

import contextlib
import ssl
from ipaddress import IPv4Address
from pathlib import Path

import anyio
import pytest
import trustme

from failover.errors import TransportError, UsageError
from failover.testing.transport_contract import WAIT_TIMEOUT, free_port
from failover.tls import tls_context
from failover.transport import MessageStream
from failover_transports.tcp import TcpEndpoint
from failover_transports.tcp_replication import TcpReplicationTransport

pytestmark = pytest.mark.anyio


def contexts(tmp_path: Path, ca: trustme.CA, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts of a node whose certificate ``ca`` signed."""
    cert = ca.issue_cert(f"{name}.failover.invalid")
    folder = tmp_path / name
    folder.mkdir()
    files = {
        "ca_file": folder / "ca.pem",
        "cert_file": folder / "cert.pem",
        "key_file": folder / "key.pem",
    }
    ca.cert_pem.write_to_path(str(files["ca_file"]))
    cert.cert_chain_pems[0].write_to_path(str(files["cert_file"]))
    cert.private_key_pem.write_to_path(str(files["key_file"]))
    paths = {k: str(v) for k, v in files.items()}
    return tls_context(server=True, **paths), tls_context(server=False, **paths)


def endpoint() -> TcpEndpoint:
    return TcpEndpoint(address=IPv4Address("127.0.0.1"), port=free_port("tcp"))


async def test_two_nodes_of_one_ca_talk_over_tls(tmp_path: Path) -> None:
    ca = trustme.CA()
    server, _ = contexts(tmp_path, ca, "alpha")
    _, client = contexts(tmp_path, ca, "beta")
    transport, where = TcpReplicationTransport(), endpoint()
    async with transport.listen(where, tls=server) as listener:
        async with anyio.create_task_group() as tg:
            received = []

            async def accept() -> None:
                stream = await listener.accept()
                try:
                    received.append(await stream.receive())  # the TLS handshake first
                finally:
                    await stream.aclose()

            tg.start_soon(accept)
            with anyio.fail_after(WAIT_TIMEOUT):
                out = await transport.connect(where, WAIT_TIMEOUT, tls=client)
                await out.send(b"over tls")
        assert received == [b"over tls"]
        await out.aclose()


async def test_an_idle_tls_client_never_holds_up_accept(tmp_path: Path) -> None:
    """The server's TLS handshake runs on the stream's first use, under its
    user's deadline: a client that connects and says nothing does not stop the
    listener from accepting (and handshaking) the next one."""
    ca = trustme.CA()
    server, _ = contexts(tmp_path, ca, "alpha")
    _, client = contexts(tmp_path, ca, "beta")
    transport, where = TcpReplicationTransport(), endpoint()
    async with transport.listen(where, tls=server) as listener:
        idle = await anyio.connect_tcp("127.0.0.1", where.port)  # no TLS hello, ever
        async with anyio.create_task_group() as tg:
            received = []
            got = anyio.Event()

            async def serve(stream: MessageStream) -> None:
                with contextlib.suppress(TransportError):
                    received.append(await stream.receive())
                    got.set()
                await stream.aclose()

            async def accept() -> None:
                for _ in range(2):
                    tg.start_soon(serve, await listener.accept())

            tg.start_soon(accept)
            with anyio.fail_after(WAIT_TIMEOUT):
                out = await transport.connect(where, WAIT_TIMEOUT, tls=client)
                await out.send(b"through")
                await got.wait()
            assert received == [b"through"]
            await idle.aclose()
        await out.aclose()


@pytest.mark.parametrize("client_kind", ["other CA", "no TLS"])
async def test_a_client_without_a_certificate_of_the_cluster_ca_is_refused(
    tmp_path: Path, client_kind: str
) -> None:
    server, _ = contexts(tmp_path, trustme.CA(), "alpha")
    _, stranger = contexts(tmp_path, trustme.CA(), "mallory")
    transport, where = TcpReplicationTransport(), endpoint()
    async with transport.listen(where, tls=server) as listener:
        async with anyio.create_task_group() as tg:
            refused: list[Exception] = []

            async def accept() -> None:
                stream = await listener.accept()
                try:
                    await stream.receive()
                except TransportError as exc:
                    refused.append(exc)

            tg.start_soon(accept)
            tls = stranger if client_kind == "other CA" else None
            with anyio.fail_after(WAIT_TIMEOUT):
                try:
                    out = await transport.connect(where, WAIT_TIMEOUT, tls=tls)
                    await out.send(b"let me in")
                    await out.receive()  # the server hangs up
                except TransportError:
                    pass
        assert refused and "TLS handshake failed" in str(refused[0])


async def test_a_server_outside_the_cluster_ca_is_refused_by_the_client(tmp_path: Path) -> None:
    server, _ = contexts(tmp_path, trustme.CA(), "impostor")
    _, client = contexts(tmp_path, trustme.CA(), "beta")
    transport, where = TcpReplicationTransport(), endpoint()
    async with transport.listen(where, tls=server) as listener, anyio.create_task_group() as tg:

        async def accept() -> None:
            stream = await listener.accept()
            with pytest.raises(TransportError):
                await stream.receive()

        tg.start_soon(accept)
        with pytest.raises(TransportError, match="TLS handshake failed"):
            await transport.connect(where, WAIT_TIMEOUT, tls=client)


def test_unusable_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate")
    with pytest.raises(UsageError, match=r"ca\.pem"):
        tls_context(
            server=True,
            ca_file=str(tmp_path / "ca.pem"),
            cert_file=str(tmp_path / "c.pem"),
            key_file=str(tmp_path / "k.pem"),
        )
