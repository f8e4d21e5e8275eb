"""End-to-end tests: real daemons in network namespaces (root only).

Every test module here sets ``pytestmark = NETNS`` (from ``e2e_support``):
marked ``netns`` and skipped, with the reason, when namespaces cannot be built
(not root, no ``ip``/``nsenter``, a container that forbids them).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from failover.testing.netns import Lab, list_namespaces


@pytest.fixture
def lab() -> Iterator[Lab]:
    """Networks "lan" (10.77.1.0/24) and "crossover" (10.77.2.0/24), plus a client on lan."""
    with Lab(networks=("lan", "crossover"), client=True) as built:
        yield built
    left = [name for name in list_namespaces() if name.startswith(built.name)]
    assert not left, f"namespaces left behind: {left}"
