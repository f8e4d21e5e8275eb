"""The console's share of the control API, against a fake controller on loopback TCP:
the page without a token, nothing but its own files, CORS for the peer only, and an
event stream that pushes each change and drops a client that does not read."""

from __future__ import annotations

import socket
from pathlib import Path

import anyio
import pytest
from console_support import (
    PEER_ORIGIN,
    TOKEN,
    Changes,
    Client,
    Controller,
    Events,
    ask,
    serving,
    settings,
    until_the_slot_is_freed,
)

from failover.api.console import console_settings, load_static, node_url
from failover.api.server import ControlLimits
from failover.config import load_config
from failover.errors import ConfigError, UsageError

pytestmark = pytest.mark.anyio


async def test_the_console_is_404_when_off() -> None:
    async with serving(Controller(), settings(static=False)) as address:
        assert (await ask(address, "GET", "/console/")).status == 404
        assert (await ask(address, "GET", "/console/app.js")).status == 404
        # without the token, off means nothing is served anonymously either
        assert (await ask(address, "GET", "/console/", token=False)).status == 401


async def test_the_page_loads_without_a_token_and_the_data_stays_behind_it() -> None:
    async with serving(Controller(), settings()) as address, await anyio.connect_tcp(*address) as s:
        client = Client(s)
        page = await client.ask("GET", "/console/", token=False)
        assert page.status == 200
        assert page.headers["content-type"].startswith("text/html")
        assert b'<script type="module" src="app.js">' in page.body
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and f"connect-src 'self' {PEER_ORIGIN}" in csp
        script = await client.ask("GET", "/console/app.js", token=False)
        assert script.status == 200 and script.headers["content-type"].startswith("text/javascript")
        # the same connection, still unauthenticated: no data without the token
        assert (await client.ask("GET", "/v1/status", token=False)).status == 401
    for path in ("/v1/status", "/v1/nodes", "/v1/events", "/v1/transitions"):
        async with serving(Controller(), settings()) as address:
            assert (await ask(address, "GET", path, token=False)).status == 401, path


@pytest.mark.parametrize(
    "target",
    [
        "/console/../server.py",
        "/console/..%2fserver.py",
        "/console/%2e%2e/console.py",
        "/console/..%2f..%2f..%2fetc%2fpasswd",
        "/console//etc/passwd",
        "/console/./index.html",
        "/console/console/../index.html",
        "/console/.index.html",
        "/console/index.html%00.js",
        "/console/INDEX.HTML",
    ],
)
async def test_nothing_but_the_consoles_own_files_is_served(target: str) -> None:
    async with serving(Controller(), settings()) as address:
        for token in (False, True):
            answer = await ask(address, "GET", target, token=token)
            assert answer.status == 404, (target, answer)
            assert b"import" not in answer.body and b"root:" not in answer.body


async def test_cors_answers_the_peer_origin_only() -> None:
    async with serving(Controller(), settings()) as address:
        preflight = await ask(
            address,
            "OPTIONS",
            "/v1/status",
            ("origin", PEER_ORIGIN),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "authorization"),
            token=False,
        )
        assert preflight.status == 204
        async with await anyio.connect_tcp(*address) as raw:
            await raw.send(
                f"OPTIONS /v1/events HTTP/1.1\r\nhost: a\r\norigin: {PEER_ORIGIN}\r\n\r\n".encode()
            )
            head = b""
            with anyio.fail_after(10):
                while b"\r\n\r\n" not in head:
                    head += await raw.receive()
        assert head.lower().count(b"access-control-allow-origin:") == 1, head  # one value only
        assert preflight.headers["access-control-allow-origin"] == PEER_ORIGIN
        assert "authorization" in preflight.headers["access-control-allow-headers"]
        read = await ask(address, "GET", "/v1/status", ("origin", PEER_ORIGIN))
        assert read.status == 200 and read.headers["access-control-allow-origin"] == PEER_ORIGIN
        # a refusal is readable by the peer's page too (it shows "wrong token")
        refused = await ask(address, "GET", "/v1/status", ("origin", PEER_ORIGIN), token=False)
        assert refused.status == 401
        assert refused.headers["access-control-allow-origin"] == PEER_ORIGIN
        for stranger in ("http://evil.example", "null", PEER_ORIGIN + ".evil", "*"):
            pre = await ask(address, "OPTIONS", "/v1/status", ("origin", stranger), token=False)
            assert pre.status == 403
            answer = await ask(address, "POST", "/v1/commands/swap", ("origin", stranger))
            assert answer.status == 409  # the token holds; a browser would hide it
            for each in (pre, answer):
                assert not any(k.startswith("access-control-") for k in each.headers), each


async def test_nodes_names_both_control_urls() -> None:
    async with serving(Controller(), settings()) as address:
        answer = await ask(address, "GET", "/v1/nodes")
        for method in ("HEAD", "POST"):
            assert (await ask(address, method, "/v1/events")).status == 405
        assert (await ask(address, "GET", "/v1/nodes?x=1")).status == 400
    assert answer.json() == {
        "self": "alpha",
        "nodes": [
            {"name": "alpha", "url": "http://10.9.9.1:7480"},
            {"name": "beta", "url": PEER_ORIGIN},
        ],
    }


async def test_the_event_stream_pushes_each_change() -> None:
    controller, changes = Controller(), Changes()
    # poll and refresh far off: only the change signal can bring an event here
    console = settings(changes=changes, poll=60.0, refresh=60.0, keepalive=60.0)
    async with serving(controller, console) as address, await anyio.connect_tcp(*address) as s:
        events = Events(s)
        response = await events.open(("origin", PEER_ORIGIN))
        headers = dict(response.headers)
        assert response.status_code == 200
        assert headers[b"content-type"] == b"text/event-stream"
        assert headers[b"access-control-allow-origin"] == PEER_ORIGIN.encode()
        assert (await events.status())["state"] == "primary"
        controller.uptime += 5  # ages alone: no event
        changes.notify()
        controller.state, controller.reason = "alone", "peer beta lost"
        changes.notify()
        shown = await events.status()
        assert (shown["state"], shown["reason"]) == ("alone", "peer beta lost")
        assert shown["uptime"] == controller.uptime


async def test_the_event_stream_keeps_alive_and_refreshes() -> None:
    controller = Controller()
    console = settings(poll=0.05, refresh=0.2, keepalive=0.05)
    async with serving(controller, console) as address, await anyio.connect_tcp(*address) as s:
        events = Events(s)
        await events.open()
        first = await events.status()
        comments = 0
        controller.uptime = 9.0
        while (block := await events.block()) == b": keep-alive":
            comments += 1
        assert comments >= 1 and block.startswith(b"event: status\n")
        assert b'"uptime":9.0' in block and first["uptime"] == 1.0


async def test_a_client_that_does_not_read_its_events_is_dropped() -> None:
    """It holds one of the connection slots (max 1 here) until the server drops it for
    not taking an event within the send timeout; then the slot serves another."""
    controller, changes = Controller(), Changes()
    limits = ControlLimits(max_connections=1, send_timeout=0.5)
    async with serving(controller, settings(changes=changes, poll=0.01), limits) as address:
        sleeper = socket.socket()
        sleeper.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sleeper.connect(address)
        sleeper.sendall(
            f"GET /v1/events HTTP/1.1\r\nhost: a\r\nauthorization: Bearer {TOKEN}\r\n\r\n".encode()
        )

        async def nodes() -> int:
            return (await ask(address, "GET", "/v1/nodes")).status

        try:
            await until_the_slot_is_freed(controller, changes, nodes)
        finally:
            sleeper.close()


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_settings_from_the_cluster_file(tmp_path: Path, tls: bool) -> None:
    """With ``control.tcp.tls`` the console's URLs and CORS origins are https ones."""
    key = tmp_path / "cluster.key"
    key.write_bytes(b"k" * 40)
    key.chmod(0o600)
    token = tmp_path / "token"
    token.write_text("t" * 32)
    token.chmod(0o600)
    (tmp_path / "cert.pem").write_text("x")  # read only when a daemon listens
    tls_key = ", tls: {cert_file: cert.pem, key_file: cert.pem}" if tls else ""
    scheme = "https" if tls else "http"
    path = tmp_path / "cluster.yaml"
    path.write_text(
        "cluster: {name: c, key_file: cluster.key}\n"
        "links: [{name: lan, transport: udp}]\n"
        "nodes:\n"
        "  alpha:\n"
        "    links: {lan: {address: 127.0.0.1, port: 7401}}\n"
        "    control: {tcp: {address: 10.0.9.1, port: 7480, token_file: token, console: true"
        f"{tls_key}}}}}\n"
        "  beta:\n"
        "    links: {lan: {address: 127.0.0.1, port: 7402}}\n"
        f"    control: {{tcp: {{address: 'fd00::2', port: 7480, token_file: token{tls_key}}}}}\n"
    )
    config = load_config(path)
    alpha = console_settings(config, "alpha")
    beta = console_settings(config, "beta")
    assert alpha is not None and beta is not None
    assert alpha.static and not beta.static and "/console/" in alpha.files and not beta.files
    assert [each.url for each in alpha.nodes] == [
        f"{scheme}://10.0.9.1:7480",
        f"{scheme}://[fd00::2]:7480",
    ]
    assert alpha.origins == {f"{scheme}://[fd00::2]:7480"}
    assert beta.origins == {f"{scheme}://10.0.9.1:7480"}
    assert node_url("example.net", 443, tls=True) == "https://example.net:443"
    bad = path.read_text().replace("console: true", "console: 'yes'")
    path.write_text(bad)
    with pytest.raises(ConfigError, match=r"nodes\.alpha\.control\.tcp\.console"):
        load_config(path)


def test_a_console_without_its_files_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot be read from"):
        load_static(tmp_path / "nowhere")
    (tmp_path / "app.js").write_text("")
    with pytest.raises(UsageError, match=r"index\.html is missing"):
        load_static(tmp_path)
