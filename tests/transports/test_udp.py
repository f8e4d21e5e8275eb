"""The udp transport: the conformance suite, unicast and multicast, plus its own rules."""

from __future__ import annotations

from typing import Any

import pytest

from failover.testing.transport_contract import EndpointOptions, TransportContract, free_port

BAD_UDP_OPTIONS: list[dict[str, Any]] = [
    {"address": "not-an-ip", "port": 7400},
    {"address": "127.0.0.1", "port": 0},
    {"address": "127.0.0.1", "port": 70000},
    {"address": "127.0.0.1"},
    {"port": 7400},
    {"address": "127.0.0.1", "port": 7400, "group": "10.0.0.1"},  # not multicast
    {"address": "239.1.2.3", "port": 7400},  # multicast belongs in group
    {"address": "127.0.0.1", "port": 7400, "interface": "lo"},  # interface without group
    {"address": "::1", "port": 7400, "group": "239.1.2.3"},  # mixed IP versions
]


class TestUdpUnicast(TransportContract):
    transport_name = "udp"
    ordered = False
    after_peer_close = "drops"
    bad_options = BAD_UDP_OPTIONS
    frame_count = 50

    @pytest.fixture
    def endpoint_options(self) -> EndpointOptions:
        return (
            {"address": "127.0.0.1", "port": free_port("udp")},
            {"address": "127.0.0.1", "port": free_port("udp")},
        )


class TestUdpMulticast(TestUdpUnicast):
    """Multicast on the loopback interface; distinct ports keep each node's own frames out."""

    @pytest.fixture
    def endpoint_options(self) -> EndpointOptions:
        group = {"group": "239.255.77.1", "interface": "lo", "address": "127.0.0.1"}
        return (
            {**group, "port": free_port("udp")},
            {**group, "port": free_port("udp")},
        )
