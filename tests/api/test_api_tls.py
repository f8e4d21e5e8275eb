"""TLS on the TCP control listener.

Invariants: with ``tls`` the listener speaks nothing but TLS (plain HTTP and
garbage fail the handshake, quietly: no traceback in the log); the handshake
runs under the pending-connection rules (the auth deadline, the strangers'
cap), so silent or dripping clients never deny a token holder; a client
trusts only a server certificate its CA file signed.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc
import h11
import pytest
import structlog
import trustme
from api_fakes import (
    WAIT,
    Answer,
    FakeController,
    connect,
    read_answer,
    read_until_closed,
    serving,
    serving_in_thread,
    write_cluster_file,
    write_token,
)

from failover.api.client import ControlAPIError, ControlClient
from failover.api.control_tls import client_context, server_context
from failover.api.server import ControlEndpoints, ControlLimits, serve_control
from failover.cli import main
from failover.config import load_config
from failover.errors import ConfigError, UsageError

pytestmark = pytest.mark.anyio

TOKEN = "admin-token-for-the-tests"
BEARER = (("authorization", f"Bearer {TOKEN}"),)


@dataclass
class Pki:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    files = Pki(*(tmp_path / f"{name}.pem" for name in ("ca", "cert", "key", "other-ca")))
    ca.cert_pem.write_to_path(str(files.ca))
    leaf.cert_chain_pems[0].write_to_path(str(files.cert))
    leaf.private_key_pem.write_to_path(str(files.key))
    trustme.CA().cert_pem.write_to_path(str(files.other_ca))
    return files


@asynccontextmanager
async def tls_serving(
    controller: FakeController, pki: Pki, **options: object
) -> AsyncIterator[ControlEndpoints]:
    context = server_context(pki.cert, pki.key)
    async with serving(
        controller, tcp=("127.0.0.1", 0), token=TOKEN, tls=context, **options
    ) as ends:
        yield ends


async def tls_connect(ends: ControlEndpoints, ca: Path) -> anyio.abc.ByteStream:
    assert ends.tcp is not None
    return await anyio.connect_tcp(
        *ends.tcp, ssl_context=client_context(ca), tls_standard_compatible=False
    )


async def tls_get(
    ends: ControlEndpoints,
    ca: Path,
    target: str = "/v1/status",
    *,
    method: str = "GET",
    bearer: tuple[tuple[str, str], ...] = BEARER,
) -> Answer:
    stream = await tls_connect(ends, ca)
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        headers = [("host", "x"), ("content-length", "0"), *bearer]
        head = h11.Request(method=method, target=target, headers=headers)
        await stream.send((conn.send(head) or b"") + (conn.send(h11.EndOfMessage()) or b""))
        return await read_answer(stream, conn)  # type: ignore[arg-type]


def _no_traceback(logs: list[dict[str, object]]) -> None:
    assert not [e for e in logs if e.get("exc_info") or e.get("log_level") == "error"], logs


async def test_a_tls_client_that_trusts_the_ca_is_served(
    controller: FakeController, pki: Pki
) -> None:
    async with tls_serving(controller, pki) as ends:
        answer = await tls_get(ends, pki.ca)
    assert answer.status == 200
    assert answer.json()["node"] == "alpha"


@pytest.mark.parametrize(
    "sent",
    [
        b"GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % TOKEN.encode(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc" + b"\xff" * 600,  # a client hello full of garbage
        b"\x16\x03\x01\x00\x05hello",  # a record too short for a client hello
        b"\x00" * 4096,
    ],
    ids=["plain-http-with-the-token", "garbage-client-hello", "short-hello", "zeros"],
)
async def test_what_is_not_tls_fails_the_handshake_quietly(
    controller: FakeController, pki: Pki, sent: bytes
) -> None:
    with structlog.testing.capture_logs() as logs:
        async with tls_serving(controller, pki) as ends:
            stream = await connect(ends)
            async with stream:
                with anyio.fail_after(WAIT):
                    await stream.send(sent)
                    received = await read_until_closed(stream)
            after = await tls_get(ends, pki.ca)  # the server serves on
    assert b"HTTP/1.1" not in received  # no plain answer, the token unread
    assert controller.commands == []
    assert after.status == 200
    _no_traceback(logs)


async def test_a_silent_tls_client_is_cut_at_the_auth_deadline(
    controller: FakeController, pki: Pki
) -> None:
    limits = ControlLimits(auth_timeout=0.3, request_timeout=30.0)
    with structlog.testing.capture_logs() as logs:
        async with tls_serving(controller, pki, limits=limits) as ends:
            for sent in (b"", b"\x16\x03\x01"):  # nothing; the start of a record, then silence
                stream = await connect(ends)
                async with stream:
                    await stream.send(sent) if sent else None
                    assert await read_until_closed(stream) == b""
    _no_traceback(logs)


@pytest.mark.parametrize("sent", [b"", b"\x16\x03\x01\x00"], ids=["idle", "dripping-hello"])
async def test_a_slowloris_on_the_tls_port_does_not_deny_a_token_holder(
    controller: FakeController, pki: Pki, sent: bytes
) -> None:
    # 100 connections (beyond the strangers' cap of 32) that never finish a handshake
    async with tls_serving(controller, pki) as ends, AsyncExitStack() as stack:
        for _ in range(100):
            stream = await stack.enter_async_context(await connect(ends))
            if sent:
                await stream.send(sent)
        answer = await tls_get(ends, pki.ca)
    assert answer.status == 200


def test_the_client_verifies_the_server_against_its_ca_file(
    controller: FakeController, pki: Pki
) -> None:
    with serving_in_thread(
        controller, tcp=("127.0.0.1", 0), token=TOKEN, tls=server_context(pki.cert, pki.key)
    ) as ends:
        assert ends.tcp is not None
        good = ControlClient(tcp=ends.tcp, token=TOKEN, ca_file=str(pki.ca))
        assert good.get_status()["node"] == "alpha"
        assert good.command("stop").accepted
        pinned = ControlClient(tcp=ends.tcp, token=TOKEN, ca_file=str(pki.cert), pinned=True)
        assert pinned.get_status()["node"] == "alpha"
        wrong = ControlClient(tcp=ends.tcp, token=TOKEN, ca_file=str(pki.other_ca))
        with pytest.raises(ControlAPIError, match=f"{pki.other_ca} does not vouch for"):
            wrong.command("stop")
        plain = ControlClient(tcp=ends.tcp, token=TOKEN)
        with pytest.raises(ControlAPIError, match="--ca-file"):
            plain.command("stop")
    assert controller.commands == ["stop"]


def test_a_tls_client_of_a_plain_listener_says_so(controller: FakeController, pki: Pki) -> None:
    with serving_in_thread(controller, tcp=("127.0.0.1", 0), token=TOKEN) as ends:
        assert ends.tcp is not None
        client = ControlClient(tcp=ends.tcp, token=TOKEN, ca_file=str(pki.ca))
        with pytest.raises(ControlAPIError, match="does it listen with TLS"):
            client.get_status()


def test_bad_tls_files_are_named(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(UsageError, match=f"certificate {missing}"):
        server_context(missing, pki.key)
    with pytest.raises(UsageError, match=f"key {missing}"):
        server_context(pki.cert, missing)
    with pytest.raises(UsageError, match=f"{pki.key} holds no PEM certificate"):
        server_context(pki.key, pki.key)
    with pytest.raises(UsageError, match=f"key {pki.cert} is not a usable"):
        server_context(pki.cert, pki.cert)
    other = trustme.CA().issue_cert("127.0.0.1")
    other_key = tmp_path / "other-key.pem"
    other.private_key_pem.write_to_path(str(other_key))
    with pytest.raises(UsageError, match=f"{other_key} is not the key of the certificate"):
        server_context(pki.cert, other_key)
    with pytest.raises(UsageError, match=f"CA file {missing}"):
        client_context(missing)


def _config(tmp_path: Path, pki: Pki, port: int, *, key: Path | None = None, ca: str = "") -> Path:
    token = write_token(tmp_path / "token", TOKEN)
    tls = f"tls: {{cert_file: {pki.cert}, key_file: {key or pki.key}{ca}}}"
    tcp = f"tcp: {{address: 127.0.0.1, port: {port}, token_file: {token}, {tls}}}"
    return write_cluster_file(tmp_path / "cluster.yaml", tcp)


def test_check_config_names_a_bad_tls_file(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "no-key.pem"
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, pki, 7480, key=missing), local_node="alpha")
    (problem,) = caught.value.problems
    assert "nodes.alpha.control.tcp.tls" in problem
    assert str(missing) in problem
    load_config(_config(tmp_path, pki, 7480), local_node="alpha")


def test_the_cli_speaks_tls_from_the_options_and_from_the_config(
    controller: FakeController, pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    context = server_context(pki.cert, pki.key)
    with serving_in_thread(controller, tcp=("127.0.0.1", 0), token=TOKEN, tls=context) as ends:
        assert ends.tcp is not None
        port = ends.tcp[1]
        token = ["--token-file", str(tmp_path / "token")]
        pinned = _config(tmp_path, pki, port)  # no ca_file: the node's own certificate
        assert main(["stop", "-c", str(pinned), "--node", "alpha"]) == 0
        where = ["--tcp", f"127.0.0.1:{port}", *token]
        assert main(["start", *where, "--ca-file", str(pki.ca)]) == 0
        assert main(["swap", *where, "--ca-file", str(pki.other_ca)]) == 2
        wrong = _config(tmp_path, pki, port, ca=f", ca_file: {pki.other_ca}")
        assert main(["swap", "-c", str(wrong), "--node", "alpha"]) == 2
    err = capsys.readouterr().err
    assert err.count("does not vouch for") == 2
    assert "Traceback" not in err
    assert controller.commands == ["stop", "start"]


async def test_a_certificate_the_client_rejects_ends_the_handshake_quietly(
    controller: FakeController, pki: Pki
) -> None:
    with structlog.testing.capture_logs() as logs:
        async with tls_serving(controller, pki) as ends:
            with pytest.raises((ssl.SSLError, anyio.BrokenResourceError)):
                await tls_connect(ends, pki.other_ca)
            assert (await tls_get(ends, pki.ca)).status == 200
    _no_traceback(logs)


async def test_refusals_over_tls_reach_the_client_whole(
    controller: FakeController, pki: Pki
) -> None:
    read = (("authorization", "Bearer read-only-token-for-tests"),)
    with structlog.testing.capture_logs() as logs:
        async with tls_serving(controller, pki, read_token="read-only-token-for-tests") as ends:
            wrong = await tls_get(ends, pki.ca, bearer=(("authorization", "Bearer nope"),))
            forbidden = await tls_get(ends, pki.ca, "/v1/commands/stop", method="POST", bearer=read)
            allowed = await tls_get(ends, pki.ca, bearer=read)
    _no_traceback(logs)
    assert wrong.status == 401
    assert forbidden.status == 403
    assert forbidden.json()["required_role"] == "admin"
    assert allowed.status == 200
    assert controller.commands == []


async def test_tls_without_tcp_is_refused(
    controller: FakeController, pki: Pki, sock_dir: Path
) -> None:
    with pytest.raises(UsageError, match="TLS is for the control API over TCP"):
        await serve_control(
            controller, unix_path=str(sock_dir / "c.sock"), tls=server_context(pki.cert, pki.key)
        )
