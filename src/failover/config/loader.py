"""``load_config``: from a file name to a checked ``ClusterConfig``, or every problem found."""

from __future__ import annotations

import contextlib
import difflib
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from failover.config.checks import Sections, check_all
from failover.config.local import check_local
from failover.config.models import (
    ApplicationConfig,
    CheckerConfig,
    ClusterConfig,
    ClusterSection,
    ControlConfig,
    EndpointOptions,
    LinkConfig,
    NodeConfig,
    ReplicatedDirectory,
    ReplicationSection,
    VirtualIpConfig,
)
from failover.config.problems import TOP_LEVEL, Loc, Problem, describe_value, problems_from
from failover.config.yamlsource import ConfigSyntaxError, LocatedDocument, read_document
from failover.errors import ConfigError


def _adapter(field: FieldInfo) -> TypeAdapter[Any]:
    """Validates one value exactly as the model field ``field`` would."""
    annotation: Any = field.annotation
    if field.metadata:
        annotation = Annotated[annotation, *field.metadata]
    return TypeAdapter(annotation)


def _field_adapters(model: type[BaseModel]) -> dict[str, TypeAdapter[Any]]:
    return {name: _adapter(f) for name, f in model.model_fields.items()}


_CLUSTER_FIELDS = _field_adapters(ClusterSection)
_REPLICATION_FIELDS = _field_adapters(ReplicationSection)
_NODE_STATE_DIR = _adapter(NodeConfig.model_fields["state_dir"])
_LINK = TypeAdapter(LinkConfig)
_ENDPOINT: TypeAdapter[dict[str, Any]] = TypeAdapter(EndpointOptions)
_CHECKER = TypeAdapter(CheckerConfig)
_DIRECTORY = TypeAdapter(ReplicatedDirectory)
_CONTROL = TypeAdapter(ControlConfig)
_APPLICATION = TypeAdapter(ApplicationConfig)
_VIRTUAL_IP = TypeAdapter(VirtualIpConfig)

MAX_CONFIG_BYTES = 256 * 1024
"""The largest configuration file read. A real one holds a few kilobytes; the
bound keeps a hostile or mistaken file (a log, a dump) from costing a daemon
seconds of CPU at a SIGHUP."""


def load_config(path: str | Path, *, local_node: str | None = None) -> ClusterConfig:
    """Read, parse and check the configuration file at ``path``.

    Relative paths inside the file are taken relative to the file's
    directory. Reads the file and the key file, and imports the transport
    plugins its links name. Raises ``ConfigError`` whose ``problems`` list
    every problem found, each as ``"<file>:<line>: <dotted.key>: <reason>"``.
    A file over ``MAX_CONFIG_BYTES`` is refused unparsed. With ``local_node``
    the paths that node uses on this machine are checked as well
    (``failover.config.local``).
    """
    path = Path(path)
    shown = str(path)
    try:
        document = read_document(path, shown, max_bytes=MAX_CONFIG_BYTES)
    except ConfigSyntaxError as exc:
        raise ConfigError(exc.messages) from None
    return build_config(document, shown, path, local_node=local_node)


def build_config(
    document: LocatedDocument, shown: str, source_path: Path, *, local_node: str | None = None
) -> ClusterConfig:
    """Validate parsed ``document`` (shown as ``shown`` in messages) as a cluster configuration."""
    data = document.data
    if data is None:
        raise ConfigError(
            [f"{shown}:1: {TOP_LEVEL}: the file is empty (it must hold cluster, links and nodes)"]
        )
    if not isinstance(data, dict):
        raise ConfigError(
            [
                f"{shown}:{document.line_of(())}: {TOP_LEVEL}: must be a mapping with cluster, "
                f"links and nodes, not {describe_value(data)}"
            ]
        )
    context = {"base_dir": source_path.absolute().parent}
    problems: list[Problem] = []
    config: ClusterConfig | None = None
    try:
        config = ClusterConfig.model_validate(data, context=context)
    except ValidationError as exc:
        problems.extend(problems_from(exc, data, suggest=_unknown_key_hint))
    parts = _valid_parts(data, context)
    local = local_node is not None and local_node in (parts.node_names or ())
    found = check_all(parts, local=local)
    if local_node is not None and local:
        check_local(parts, local_node, found)
    problems.extend(found.problems)
    if problems or config is None:
        raise ConfigError(_render(problems, shown, document))
    config.attach(
        source_path,
        tuple(_render(found.warnings, shown, document)),
        found.endpoints,
        found.replication_endpoints,
    )
    return config


# --- the valid parts of an invalid file -------------------------------------------------
# The cross-field rules run on every part that is valid by itself, so that a
# typo in one place does not hide a timing or endpoint problem elsewhere.

T = TypeVar("T")


def _valid_parts(data: dict[str, Any], context: dict[str, Any]) -> Sections:
    parts = Sections()
    parts.cluster, parts.cluster_ok = _partial_section(
        ClusterSection, _CLUSTER_FIELDS, data.get("cluster"), context
    )
    raw_links = data.get("links")
    parts.links = _valid_items(_LINK, raw_links, context)
    parts.links_complete = isinstance(raw_links, list) and len(parts.links) == len(raw_links)
    parts.checkers = _valid_items(_CHECKER, data.get("checkers"), context)
    parts.application = _valid_or_none(_APPLICATION, data.get("application"), context)
    parts.application_given = data.get("application") is not None
    parts.virtual_ip = _valid_or_none(_VIRTUAL_IP, data.get("virtual_ip"), context)
    parts.virtual_ips = _valid_items(_VIRTUAL_IP, data.get("virtual_ips"), context)
    parts.virtual_ips_given = data.get("virtual_ips") is not None
    raw_replication = data.get("replication")
    parts.replication_given = raw_replication is not None
    parts.replication, parts.replication_ok = _partial_section(
        ReplicationSection, _REPLICATION_FIELDS, raw_replication, context
    )
    if isinstance(raw_replication, dict):
        parts.directories = _valid_items(_DIRECTORY, raw_replication.get("directories"), context)
    raw_nodes = data.get("nodes")
    if isinstance(raw_nodes, dict):
        parts.node_names = tuple(str(name) for name in raw_nodes)
        for name, raw in raw_nodes.items():
            if isinstance(raw, dict):
                _node_parts(parts, str(name), raw, context)
    return parts


def _node_parts(parts: Sections, node: str, raw: dict[str, Any], context: dict[str, Any]) -> None:
    """What the rules need from the mapping ``raw`` of node ``node``."""
    raw_endpoints = raw.get("links")
    if isinstance(raw_endpoints, dict):
        parts.endpoints[node] = {
            str(link): _valid_or_none(_ENDPOINT, options, context)
            for link, options in raw_endpoints.items()
        }
    control = _valid_or_none(_CONTROL, raw.get("control"), context)
    if control is not None:
        parts.controls[node] = control
    raw_replication = raw.get("replication")
    if raw_replication is None:
        parts.nodes_without_replication.append(node)
    else:
        parts.replication_options[node] = _valid_or_none(_ENDPOINT, raw_replication, context)
    if raw.get("state_dir") is not None:
        state_dir = _valid_or_none(_NODE_STATE_DIR, raw["state_dir"], context)
        if state_dir is not None:
            parts.state_dirs[node] = (("nodes", node, "state_dir"), state_dir)
    elif parts.cluster is not None and "state_dir" in parts.cluster_ok:
        parts.state_dirs[node] = (("cluster", "state_dir"), parts.cluster.state_dir)


def _valid_or_none(adapter: TypeAdapter[T], raw: object, context: dict[str, Any]) -> T | None:
    try:
        return adapter.validate_python(raw, context=context)
    except ValidationError:
        return None


M = TypeVar("M", bound=BaseModel)


def _partial_section(
    model: type[M], adapters: dict[str, TypeAdapter[Any]], raw: object, context: dict[str, Any]
) -> tuple[M | None, frozenset[str]]:
    """The section ``model`` built from the valid fields of ``raw`` only, and their names.

    ``adapters`` validate each field of ``model`` on its own (``_field_adapters``).
    """
    if not isinstance(raw, dict):
        return None, frozenset()
    values: dict[str, Any] = {}
    for name, adapter in adapters.items():
        field = model.model_fields[name]
        if name in raw:
            with contextlib.suppress(ValidationError):
                values[name] = adapter.validate_python(raw[name], context=context)
        elif not field.is_required():
            values[name] = field.get_default(call_default_factory=True)
    return model.model_construct(**values), frozenset(values)


def _valid_items(
    adapter: TypeAdapter[T], raw: object, context: dict[str, Any]
) -> list[tuple[int, T]]:
    """The items of list ``raw`` that are valid, with their index."""
    if not isinstance(raw, list):
        return []
    valid: list[tuple[int, T]] = []
    for i, item in enumerate(raw):
        value = _valid_or_none(adapter, item, context)
        if value is not None:
            valid.append((i, value))
    return valid


def _render(problems: list[Problem], shown: str, document: LocatedDocument) -> list[str]:
    ordered = sorted(problems, key=lambda p: p.line or document.line_of(p.loc))
    # dict.fromkeys: drop repeats, keep the order.
    return list(dict.fromkeys(problem.render(shown, document.lines) for problem in ordered))


# --- hints for unknown keys ------------------------------------------------------------


def _strip(annotation: object) -> object:
    """Remove Annotated and Optional wrappers around a field's type."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _as_model(annotation: object) -> type[BaseModel] | None:
    stripped = _strip(annotation)
    if isinstance(stripped, type) and issubclass(stripped, BaseModel):
        return stripped
    return None


def _models(annotation: object) -> list[type[BaseModel]]:
    """The models ``annotation`` holds: one, or each member of a union of models
    (the checker types)."""
    stripped = _strip(annotation)
    members = get_args(stripped) if get_origin(stripped) in (Union, types.UnionType) else ()
    found = [_as_model(member) for member in members] or [_as_model(stripped)]
    return [model for model in found if model is not None]


def _children(annotation: object) -> Iterator[tuple[str, object]]:
    """(path suffix, item type) for what a field holds: a model, a list or a mapping of them."""
    stripped = _strip(annotation)
    origin = get_origin(stripped)
    if origin in (tuple, list):
        yield "[i]", get_args(stripped)[0]
    elif origin is dict:
        yield ".<name>", get_args(stripped)[1]
    else:
        yield "", stripped


def _catalogue() -> dict[str, list[str]]:
    """Every key of the schema -> the sections (shown as paths) where it is allowed."""
    where: dict[str, list[str]] = {}

    def visit(model: type[BaseModel], path: str) -> None:
        for name, field in model.model_fields.items():
            home = path or "the top level"
            homes = where.setdefault(name, [])
            if home not in homes:  # once, not once per checker type
                homes.append(home)
            for suffix, item in _children(field.annotation):
                for sub in _models(item):
                    visit(sub, f"{path}.{name}{suffix}" if path else f"{name}{suffix}")

    visit(ClusterConfig, "")
    return where


_WHERE = _catalogue()


def _section_keys(loc: Loc) -> list[str] | None:
    """The keys the section at ``loc`` (a mapping in the file) may hold, if the
    schema has that section (of a union of models: the keys of any member)."""
    current: object = ClusterConfig
    for part in loc:
        stripped = _strip(current)
        model = _as_model(stripped)
        if model is not None and isinstance(part, str) and part in model.model_fields:
            current = model.model_fields[part].annotation
        elif get_origin(stripped) in (tuple, list) and isinstance(part, int):
            current = get_args(stripped)[0]
        elif get_origin(stripped) is dict:
            current = get_args(stripped)[1]
        else:
            return None
    models = _models(current)
    return list(dict.fromkeys(key for model in models for key in model.model_fields)) or None


def _unknown_key_hint(loc: Loc) -> str | None:
    """A hint for the unknown key at ``loc``: a close spelling, or where the key belongs."""
    key = loc[-1]
    keys = _section_keys(loc[:-1])
    if not isinstance(key, str) or keys is None:
        return None
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.75)
    if close:
        return f"did you mean {close[0]!r}?"
    if loc[0] == "links":
        # Under links the likely mistake is a transport option (address, port,
        # device...), which is per node.
        return "a link's endpoint options go under nodes.<name>.links.<link>"
    if loc[:1] == ("replication",) and len(loc) == 2:
        return "a node's replication endpoint options go under nodes.<name>.replication"
    homes = _WHERE.get(key)
    if homes:
        return f"{key} belongs under {' or '.join(homes)}"
    return None
