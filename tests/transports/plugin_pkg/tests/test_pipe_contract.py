"""The failover transport conformance suite, run against this plugin."""

from __future__ import annotations

from pathlib import Path

import pytest

from failover.testing.transport_contract import EndpointOptions, TransportContract


class TestPipeTransport(TransportContract):
    transport_name = "pipe"
    ordered = True
    after_peer_close = "raises"
    bad_options = [{"path": "relative.sock"}, {"path": ""}, {}]

    @pytest.fixture
    def endpoint_options(self, tmp_path: Path) -> EndpointOptions:
        return {"path": str(tmp_path / "a.sock")}, {"path": str(tmp_path / "b.sock")}
