"""The cluster configuration: one YAML file, identical on both nodes.

``load_config(path)`` returns a checked ``ClusterConfig`` or raises
``failover.errors.ConfigError`` listing every problem as
``"<file>:<line>: <dotted.key>: <reason>"``. docs/configuration.md describes
every key.
"""

from failover.config.loader import load_config
from failover.config.models import (
    ApplicationConfig,
    ArbitratorConfig,
    CheckerConfig,
    ClusterConfig,
    ClusterSection,
    ControlConfig,
    ControlTcp,
    LinkConfig,
    NodeConfig,
    ReplicatedDirectory,
    ReplicationSection,
    VirtualIpConfig,
)
from failover.config.timing import PROFILES, Timing, TimingOverrides

__all__ = [
    "PROFILES",
    "ApplicationConfig",
    "ArbitratorConfig",
    "CheckerConfig",
    "ClusterConfig",
    "ClusterSection",
    "ControlConfig",
    "ControlTcp",
    "LinkConfig",
    "NodeConfig",
    "ReplicatedDirectory",
    "ReplicationSection",
    "Timing",
    "TimingOverrides",
    "VirtualIpConfig",
    "load_config",
]
