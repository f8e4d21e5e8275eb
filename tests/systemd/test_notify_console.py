"""READY=1 with every part of the control listener on: TCP, TLS, two tokens, the
console and the metrics; then what the console reads, loaded over TLS by a plain
HTTP client that trusts the CA (the page, both nodes' https URLs, the first status
event, the metrics with the read token, a command refused to it).

Invariant: READY=1 is sent once the control listener answers, whatever it carries.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme
import yaml
from runtime_support import ADDRESSES, write_cluster
from systemd_support import BOUND, NotifySocket

from failover.api.control_tls import client_context
from failover.config import load_config
from failover.runtime.daemon import run_node

pytestmark = pytest.mark.anyio

ADMIN, READ = "admin-token-of-the-notify-test", "read-token-of-the-notify-test"


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


def _free_tcp_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        port: int = probe.getsockname()[1]
        return port


def _secret(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


def _with_control(tmp_path: Path) -> tuple[Path, Path, str]:
    """The test pair's file, each node with a TLS control listener, alpha's with the
    console and a read token; returns (file, CA file, alpha's base URL)."""
    path = write_cluster(tmp_path)
    ca = trustme.CA()
    leaf = ca.issue_cert(*ADDRESSES.values())
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    ports = {}
    for node, address in ADDRESSES.items():
        ports[node] = _free_tcp_port(address)
        tcp: dict[str, Any] = {
            "address": address,
            "port": ports[node],
            "token_file": _secret(tmp_path / f"{node}.token", ADMIN),
            "tls": {"cert_file": "cert.pem", "key_file": "key.pem"},
        }
        if node == "alpha":
            tcp.update(read_token_file=_secret(tmp_path / "read.token", READ), console=True)
        document["nodes"][node]["control"] = {"tcp": tcp}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path, tmp_path / "ca.pem", f"https://{ADDRESSES['alpha']}:{ports['alpha']}"


def _get(url: str, context: ssl.SSLContext, token: str | None, method: str = "GET") -> Any:
    """(status, content type, body) of one request; the first status event for a stream."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    request = urllib.request.Request(url, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, context=context, timeout=BOUND) as answer:
            kind = answer.headers["content-type"]
            if kind == "text/event-stream":
                while not (line := answer.readline()).startswith(b"data: "):
                    assert line, "the event stream ended"
                return answer.status, kind, line.removeprefix(b"data: ")
            return answer.status, kind, answer.read()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.headers["content-type"], refused.read()


async def test_ready_with_tls_two_tokens_and_the_console_then_its_data_over_tls(
    tmp_path: Path, notify: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, ca, url = _with_control(tmp_path)
    config = load_config(path)
    context = client_context(ca)
    monkeypatch.setenv("NOTIFY_SOCKET", notify.name)
    async with anyio.create_task_group() as tg:
        await tg.start(
            lambda task_status: run_node(
                config, "alpha", task_status=task_status, handle_signals=False
            )
        )
        ready = await anyio.to_thread.run_sync(
            notify.wait_for, "READY=1", lambda m: m.get("READY") == "1"
        )
        assert ready["MAINPID"] == str(os.getpid())

        def load(target: str, token: str | None, method: str = "GET") -> Any:
            return _get(url + target, context, token, method)

        status, kind, page = await anyio.to_thread.run_sync(load, "/console/", None)
        assert (status, kind) == (200, "text/html; charset=utf-8") and b"<html" in page
        assert (await anyio.to_thread.run_sync(load, "/console/app.js", None))[0] == 200
        status, _, nodes = await anyio.to_thread.run_sync(load, "/v1/nodes", READ)
        assert status == 200
        beta = config.control_of("beta").tcp
        assert beta is not None
        assert [node["url"] for node in json.loads(nodes)["nodes"]] == [
            url,
            f"https://{beta.address}:{beta.port}",
        ]
        status, _, event = await anyio.to_thread.run_sync(load, "/v1/events", READ)
        assert status == 200 and json.loads(event)["node"] == "alpha"
        status, kind, _ = await anyio.to_thread.run_sync(load, "/metrics", READ)
        assert status == 200 and kind.startswith("text/plain")
        status, _, refused = await anyio.to_thread.run_sync(load, "/v1/commands/stop", READ, "POST")
        assert status == 403 and json.loads(refused)["required_role"] == "admin"
        tg.cancel_scope.cancel()
