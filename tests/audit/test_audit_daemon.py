"""Two real daemons (the real core, UDP on loopback) in one process: what they
journal is what ``failover audit`` reads, and the run keeps every invariant."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from failover.audit import audit
from failover.config import load_config
from failover.runtime.control import NodeController
from failover.runtime.daemon import run_node

pytestmark = pytest.mark.anyio
NODES = {"alpha": "127.0.0.1", "beta": "127.0.0.2"}


def cluster_file(tmp_path: Path) -> Path:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    key = tmp_path / "cluster.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    stop = tmp_path / "stop"
    stop.write_text("#!/bin/sh\nexit 0\n")
    stop.chmod(0o755)
    document: dict[str, Any] = {
        "cluster": {
            "name": "journal", "key_file": str(key), "state_dir": str(tmp_path / "state"),
            "profile": "fast", "autostart": True,
        },
        "links": [{"name": "lan", "transport": "udp"}, {"name": "backup", "transport": "udp"}],
        "nodes": {
            node: {
                "links": {
                    "lan": {"address": address, "port": ports[0]},
                    "backup": {"address": address, "port": ports[1]},
                },
                "control": {"socket": str(tmp_path / f"{node}.sock")},
            }
            for node, address in NODES.items()
        },
        "application": {"start": str(stop), "stop": str(stop), "timeout": 5},
    }  # fmt: skip
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


async def test_a_real_pairing_is_journaled_and_keeps_the_invariants(
    tmp_path: Path,
) -> None:
    config = load_config(cluster_file(tmp_path))
    controllers: dict[str, NodeController] = {}
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for node in NODES:
                controllers[node] = await tg.start(
                    lambda task_status, node=node: run_node(
                        config, node, handle_signals=False, task_status=task_status
                    )
                )

            def states() -> list[str]:
                return sorted(
                    c.status()["state"] for c in controllers.values()
                    if c.status()["substatus"] == "ready"
                )  # fmt: skip

            while states() != ["primary", "secondary"]:
                await anyio.sleep(0.01)  # a bounded poll of the daemons' state
            tg.cancel_scope.cancel()
    journals = sorted((tmp_path / "state").glob("*/audit.jsonl"))
    assert [p.parent.name for p in journals] == ["alpha", "beta"]
    records = [json.loads(line) for path in journals for line in path.open()]
    kinds = {r["kind"] for r in records}
    assert {"start", "peer", "meta", "link", "transition", "resource", "exit"} <= kinds
    assert all(list(r)[:6] == ["v", "kind", "node", "boot", "seq", "mono"] for r in records)
    transitions = [r for r in records if r["kind"] == "transition"]
    assert all({"from", "to", "generation", "forced", "synced", "consistent"} <= set(r)
               for r in transitions)  # fmt: skip
    starts = [r for r in records if r["kind"] == "start"]
    assert [r["arbitrator"] for r in starts] == ["none", "none"]  # the audit's S1 needs it
    report = audit(journals)
    assert report.ok, report
    assert report.figures["entries"] == 1 and report.figures["overlaps"]["count"] == 0
    assert report.figures["arbitrators"] == {"alpha": ["none"], "beta": ["none"]}
