"""The witness's configuration file (``failover witness run --config witness.yaml``).

    listen: 0.0.0.0:7420          # host:port, UDP
    state_dir: /var/lib/failover-witness
    clusters:
      - name: prod                # the cluster's cluster.name
        key_file: /etc/failover/prod.key   # the same key file as its nodes

Relative paths are taken from the file's directory. Every problem is reported
as ``<file>:<line>: <key>: <reason>`` (``ConfigError``), like the cluster file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from annotated_types import Len
from pydantic import ValidationError

from failover.config.models import MIN_KEY_BYTES, ConfigPath, HostPort, Name, Section
from failover.config.problems import Problem, problems_from
from failover.config.yamlsource import ConfigSyntaxError, read_document
from failover.errors import ConfigError

MAX_WITNESS_CONFIG_BYTES = 256 * 1024
DEFAULT_PORT = 7420


class WitnessCluster(Section):
    name: Name
    key_file: ConfigPath


class WitnessConfig(Section):
    listen: HostPort = f"0.0.0.0:{DEFAULT_PORT}"
    state_dir: ConfigPath
    clusters: Annotated[list[WitnessCluster], Len(1, 64)]

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


def load_witness_config(path: str | Path) -> WitnessConfig:
    """Read and check ``path``; ``ConfigError`` listing every problem found."""
    path = Path(path)
    shown = str(path)
    try:
        document = read_document(path, shown, max_bytes=MAX_WITNESS_CONFIG_BYTES)
    except ConfigSyntaxError as exc:
        raise ConfigError(exc.messages) from None
    data = document.data
    if not isinstance(data, dict):
        raise ConfigError([f"{shown}:1: must be a mapping with listen, state_dir and clusters"])
    problems: list[Problem] = []
    config: WitnessConfig | None = None
    try:
        config = WitnessConfig.model_validate(data, context={"base_dir": path.absolute().parent})
    except ValidationError as exc:
        problems.extend(problems_from(exc, data))
    if config is not None:
        seen: set[str] = set()
        for i, cluster in enumerate(config.clusters):
            if cluster.name in seen:
                problems.append(Problem(("clusters", i, "name"), f"{cluster.name!r} twice"))
            seen.add(cluster.name)
    if problems or config is None:
        raise ConfigError([p.render(shown, document.lines) for p in problems])
    return config


def read_keys(config: WitnessConfig) -> dict[str, bytes]:
    """Each cluster's key; ``ConfigError`` naming every key file that cannot serve."""
    keys: dict[str, bytes] = {}
    problems: list[str] = []
    for cluster in config.clusters:
        where = f"clusters[{cluster.name}].key_file"
        try:
            key = cluster.key_file.read_bytes()
        except OSError as exc:
            problems.append(f"{where}: cannot read {cluster.key_file}: {exc.strerror}")
            continue
        if len(key) < MIN_KEY_BYTES:
            problems.append(
                f"{where}: {cluster.key_file} holds {len(key)} bytes, at least "
                f"{MIN_KEY_BYTES} are needed"
            )
            continue
        keys[cluster.name] = key
    if problems:
        raise ConfigError(problems)
    return keys
