"""The core is sans-IO: nothing under src/failover/core/ imports I/O, clocks,
concurrency or logging handlers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import failover.core

FORBIDDEN = frozenset(
    {
        "anyio",
        "asyncio",
        "trio",
        "socket",
        "os",
        "time",
        "subprocess",
        "threading",
        "logging",  # logging.handlers included: the runtime owns logging
        "select",
        "signal",
    }
)
CORE = Path(failover.core.__file__).parent


def forbidden_imports(source: str, filename: str = "<source>") -> list[str]:
    """Every import of a forbidden module in ``source``, as "file:line: module"."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        elif isinstance(node, ast.Call) and _dynamic_import(node):
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                modules = [arg.value]
        line = getattr(node, "lineno", 0)
        found.extend(
            f"{filename}:{line}: {module}"
            for module in modules
            if module.split(".")[0] in FORBIDDEN
        )
    return found


def _dynamic_import(call: ast.Call) -> bool:
    func = call.func
    name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
    return name in ("__import__", "import_module") and bool(call.args)


def core_files() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def test_the_core_imports_no_io_clock_concurrency_or_logging() -> None:
    files = core_files()
    assert CORE / "node.py" in files and CORE / "table.py" in files
    found = [
        hit
        for path in files
        for hit in forbidden_imports(path.read_text(encoding="utf-8"), str(path.relative_to(CORE)))
    ]
    assert found == []


@pytest.mark.parametrize(
    "source",
    [
        "import os\n",
        "import os.path\n",
        "from os import path\n",
        "import json, time as clock\n",
        "from logging.handlers import SysLogHandler\n",
        "import logging\n",
        "def f():\n    import socket\n",
        "from asyncio import sleep\n",
        "import importlib\nimportlib.import_module('subprocess')\n",
        "__import__('threading')\n",
    ],
)
def test_the_checker_flags_a_forbidden_import(source: str) -> None:
    assert forbidden_imports(source, "bad.py") != []


def test_the_checker_names_the_file_line_and_module() -> None:
    assert forbidden_imports("x = 1\nfrom os import environ\n", "bad.py") == ["bad.py:2: os"]


@pytest.mark.parametrize(
    "source",
    [
        "import ostree\n",
        "from failover.core import time_rules\n",
        "from . import os\n",
        "import dataclasses, enum\n",
        "from pathlib import Path\n",
    ],
)
def test_the_checker_lets_other_imports_through(source: str) -> None:
    assert forbidden_imports(source) == []


def core_imports(source: str) -> set[str]:
    """The core modules ``source`` imports (by short name), at any place in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module == "failover.core":
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("failover.core."):
            found.add((node.module or "").split(".")[2])
        elif isinstance(node, ast.Import):
            found.update(
                alias.name.split(".")[2]
                for alias in node.names
                if alias.name.startswith("failover.core.")
            )
    return found


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` (module -> modules it imports), or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        for imported in sorted(graph.get(module, ())):
            cycle = visit(imported, [*path, module])
            if cycle is not None:
                return cycle
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module, [])
        if cycle is not None:
            return cycle
    return None


def test_no_core_module_imports_one_that_imports_it_back() -> None:
    # node runs the table, rules hold what its rows name: they share decider
    # (the node as the rules see it), and node imports rules, never the reverse
    graph = {path.stem: core_imports(path.read_text()) for path in core_files()}
    assert import_cycle(graph) is None, " -> ".join(import_cycle(graph) or [])
    assert "node" not in graph["rules"]


def test_the_cycle_check_finds_a_cycle() -> None:
    assert import_cycle({"node": {"rules"}, "rules": {"node"}}) == ["node", "rules", "node"]
    assert core_imports(
        "from failover.core import rules\nfrom failover.core.node import Node\n"
    ) == {
        "rules",
        "node",
    }
