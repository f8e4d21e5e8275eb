"""The shipped transition hooks (examples/hooks): a webhook and a mail, each run as the
daemon runs the ``transition`` hook (old state, new state, reason as the last three
arguments; FAILOVER_* in the environment) against a server or MTA the test provides."""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from email import policy
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest
from runtime_support import write_cluster
from systemd_support import BOUND

from failover.config import load_config
from failover.runtime.daemon import run_node

HOOKS = Path(__file__).parents[2] / "examples" / "hooks"
WEBHOOK, MAIL = HOOKS / "webhook", HOOKS / "mail"
REASON = "peer dead: no heartbeat on lan, backup for 3.0 s"
DAEMON_ENV = {"FAILOVER_CLUSTER": "prod", "FAILOVER_NODE": "alpha", "FAILOVER_PEER": "beta"}

Posted = tuple[str, dict[str, str], bytes]


class Webhook:
    """An HTTP server on loopback that keeps what is POSTed to it."""

    def __init__(self) -> None:
        self.posted: queue.Queue[Posted] = queue.Queue()
        posted = self.posted

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                posted.put((self.path, dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/failover"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def next(self) -> tuple[str, dict[str, str], dict[str, Any]]:
        try:
            path, headers, body = self.posted.get(timeout=BOUND)
        except queue.Empty:
            pytest.fail(f"nothing POSTed within {BOUND} s")
        return path, headers, json.loads(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    server = Webhook()
    yield server
    server.close()


def run_hook(hook: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(hook), *args],
        env={**os.environ, **DAEMON_ENV, **env},
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )


def test_webhook_posts_the_transition_as_json(webhook: Webhook) -> None:
    env = {"FAILOVER_WEBHOOK_URL": webhook.url, "FAILOVER_WEBHOOK_TOKEN": "s3cret"}
    done = run_hook(WEBHOOK, env, "secondary", "alone", REASON)
    assert done.returncode == 0, done.stderr
    path, headers, body = webhook.next()
    assert path == "/hooks/failover"
    assert headers["Content-Type"] == "application/json"
    assert headers["Authorization"] == "Bearer s3cret"
    assert body["node"] == "alpha" and body["cluster"] == "prod" and body["peer"] == "beta"
    assert (body["old_state"], body["new_state"], body["reason"]) == ("secondary", "alone", REASON)
    assert body["time"].endswith("+00:00")


def test_webhook_gives_up_at_its_timeout_and_says_why() -> None:
    silent = socket.socket()  # accepts connections (the kernel's backlog), never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
    try:
        done = run_hook(WEBHOOK, {"FAILOVER_WEBHOOK_URL": url, "FAILOVER_WEBHOOK_TIMEOUT": "0.5"})
    finally:
        silent.close()
    assert done.returncode == 1 and "timed out" in done.stderr, done.stderr
    missing = run_hook(WEBHOOK, {"FAILOVER_WEBHOOK_URL": ""}, "a", "b", "c")
    assert missing.returncode == 2 and "FAILOVER_WEBHOOK_URL" in missing.stderr


@pytest.mark.anyio
async def test_the_daemon_runs_the_webhook_at_a_transition(
    tmp_path: Path, webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook as configured: the daemon's own transition (autostart leaves ``stop``)."""
    monkeypatch.setenv("FAILOVER_WEBHOOK_URL", webhook.url)
    extra = {"application": {"transition": str(WEBHOOK), "timeout": 10}}
    config = load_config(write_cluster(tmp_path, extra=extra))
    async with anyio.create_task_group() as tg:
        await tg.start(partial(run_node, config, "alpha", handle_signals=False))
        _, _, body = await anyio.to_thread.run_sync(webhook.next)
        tg.cancel_scope.cancel()
    assert body["node"] == "alpha" and body["cluster"] == "test"
    assert body["old_state"] == "stop" and body["new_state"] and body["reason"]


def test_mail_hands_a_well_formed_message_to_sendmail(tmp_path: Path) -> None:
    sendmail = tmp_path / "sendmail"
    sendmail.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/argv\ncat > {tmp_path}/message\n')
    sendmail.chmod(0o755)
    env = {
        "FAILOVER_MAIL_TO": "ops@example.com, oncall@example.com",
        "FAILOVER_MAIL_FROM": "failover@alpha.example.com",
        "FAILOVER_SENDMAIL": str(sendmail),
    }
    done = run_hook(MAIL, env, "secondary", "alone", REASON)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "argv").read_text().split() == ["-t", "-oi"]
    mail = BytesParser(policy=policy.strict).parsebytes((tmp_path / "message").read_bytes())
    assert [a.addr_spec for a in mail["To"].addresses] == ["ops@example.com", "oncall@example.com"]
    assert mail["From"].addresses[0].addr_spec == "failover@alpha.example.com"
    assert mail["Subject"] == "[failover] prod/alpha: secondary -> alone"
    assert parsedate_to_datetime(mail["Date"]).tzinfo is not None
    assert mail["Message-ID"].startswith("<") and mail["Message-ID"].endswith(">")
    assert mail.get_content_type() == "text/plain"
    text = mail.get_content()
    assert f"Reason:    {REASON}" in text and "Peer:      beta" in text


def test_mail_reports_a_failing_sendmail(tmp_path: Path) -> None:
    sendmail = tmp_path / "sendmail"
    sendmail.write_text("#!/bin/sh\ncat >/dev/null\necho 'queue full' >&2\nexit 75\n")
    sendmail.chmod(0o755)
    env = {"FAILOVER_MAIL_TO": "ops@example.com", "FAILOVER_SENDMAIL": str(sendmail)}
    done = run_hook(MAIL, env, "alone", "primary", "peer in sync")
    assert done.returncode == 1 and "exited with 75: queue full" in done.stderr
    absent = run_hook(MAIL, {"FAILOVER_MAIL_TO": "a@b.c", "FAILOVER_SENDMAIL": "/nonexistent"})
    assert absent.returncode == 1 and "/nonexistent" in absent.stderr
    assert run_hook(MAIL, {"FAILOVER_MAIL_TO": ""}).returncode == 2


def test_hooks_run_with_the_system_python() -> None:
    """They are shipped as scripts for ``/usr/bin/env python3``: standard library only."""
    for hook in (WEBHOOK, MAIL):
        assert os.access(hook, os.X_OK), hook
        assert hook.read_text().startswith("#!/usr/bin/env python3\n")
        imports = [
            line.split()[1]
            for line in hook.read_text().splitlines()
            if line.startswith(("import ", "from "))
        ]
        assert all(name.split(".")[0] in sys.stdlib_module_names for name in imports), imports
