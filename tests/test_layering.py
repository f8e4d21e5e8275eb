"""The packages are layered: a lower layer never imports a higher one.

- ``failover.core`` (the sans-IO state machine) imports nothing of the layers that
  execute its decisions or feed it: runtime, replication, platform, api, cli, the
  model checker, the test helpers.
- ``failover.replication`` (the data plane's mechanisms) imports nothing of the
  runtime that drives it, nor of the api, cli or test helpers.
- ``failover.platform`` (virtual IP, scripts, checkers) imports nothing of the
  runtime either.
- What ships to operators never imports the test helpers (``failover.testing``):
  the commands (``failover.cli``, the demo among them) and the lab the demo runs on
  (``failover.lab``).

Shared helpers live below all of them (``failover.errors``, ``failover.fsutil``,
``failover.wire``). Every import counts: at module level, inside a function,
under ``TYPE_CHECKING``, relative, or through ``importlib.import_module``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import failover

PACKAGE = Path(failover.__file__).parent

FORBIDDEN: dict[str, frozenset[str]] = {
    "failover.core": frozenset(
        {
            "failover.runtime",
            "failover.replication",
            "failover.platform",
            "failover.api",
            "failover.cli",
            "failover.model",
            "failover.testing",
        }
    ),
    "failover.replication": frozenset(
        {"failover.runtime", "failover.api", "failover.cli", "failover.testing"}
    ),
    "failover.platform": frozenset(
        {"failover.runtime", "failover.api", "failover.cli", "failover.testing"}
    ),
    "failover.cli": frozenset({"failover.testing"}),
    "failover.lab": frozenset({"failover.testing", "failover.cli"}),
}


def imported_modules(source: str, module: str, filename: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, the source of
    ``module`` (a dotted name: relative imports resolve against it)."""
    package = module.rsplit(".", 1)[0] if not filename.endswith("__init__.py") else module
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, package)
            # ``from failover import runtime`` imports failover.runtime: name each one.
            found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Call) and _dynamic_import(node):
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append((node.lineno, arg.value))
    return found


def _resolve(node: ast.ImportFrom, package: str) -> str:
    if node.level == 0:
        return node.module or ""
    parts = package.split(".")
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _dynamic_import(call: ast.Call) -> bool:
    func = call.func
    name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
    return name in ("__import__", "import_module") and bool(call.args)


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(source: str, module: str, filename: str) -> list[str]:
    """Every import in ``source`` (of ``module``) that its layer forbids, as
    "file:line: module imports target"."""
    rules = [banned for layer, banned in FORBIDDEN.items() if _within(module, layer)]
    return [
        f"{filename}:{line}: {module} imports {target}"
        for line, target in imported_modules(source, module, filename)
        for banned in rules
        for forbidden in banned
        if _within(target, forbidden)
    ]


def layer_files() -> list[tuple[Path, str]]:
    """(file, module name) of every Python file of a layer with rules."""
    files = []
    for layer in FORBIDDEN:
        where = PACKAGE.joinpath(*layer.split(".")[1:])
        module_file = where.with_suffix(".py")
        for path in [module_file] if module_file.is_file() else sorted(where.rglob("*.py")):
            parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
            module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            files.append((path, module))
    return files


def test_no_layer_imports_a_layer_above_it() -> None:
    files = layer_files()
    names = {module for _, module in files}
    assert {"failover.core", "failover.core.node", "failover.replication.quarantine"} <= names
    assert {"failover.replication.tracking", "failover.platform.application"} <= names
    assert {"failover.cli.democmd", "failover.lab"} <= names
    found = [
        hit
        for path, module in files
        for hit in violations(path.read_text(encoding="utf-8"), module, str(path))
    ]
    assert found == []


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("failover.replication.tracking", "from failover.runtime.store import write_atomic\n"),
        ("failover.replication.tracking", "import failover.runtime.store\n"),
        ("failover.replication.tracking", "from failover import runtime\n"),
        ("failover.replication.tracking", "from ..runtime import store\n"),
        ("failover.replication.tracking", "def f():\n    import failover.runtime\n"),
        (
            "failover.replication.tracking",
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from failover.runtime.dataplane import DataPlane\n",
        ),
        (
            "failover.replication.tracking",
            "import importlib\nimportlib.import_module('failover.runtime.store')\n",
        ),
        ("failover.core.node", "from failover.replication.ops import Op\n"),
        ("failover.core.node", "from failover.platform import vip\n"),
        ("failover.core.node", "from ..runtime.store import MetadataStore\n"),
        ("failover.core", "from ..model import sim\n"),
        ("failover.platform.application", "from failover.runtime.store import write_atomic\n"),
        ("failover.cli.democmd", "from failover.testing.netns import Lab\n"),
        ("failover.lab", "from failover.testing.processes import children_named\n"),
    ],
)
def test_the_checker_flags_a_forbidden_import(module: str, source: str) -> None:
    filename = "__init__.py" if module == "failover.core" else "bad.py"
    assert violations(source, module, filename) != []


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("failover.replication.tracking", "from failover.fsutil import write_atomic\n"),
        ("failover.replication.tracking", "from .ops import Op\n"),
        ("failover.replication.tracking", "import failover.runtimes_elsewhere\n"),
        ("failover.core.node", "from failover.core import rules\n"),
        ("failover.core.node", "from .state import Generation\n"),
        ("failover.runtime.daemon", "from failover.replication.mirror import Mirror\n"),
        ("failover.cli.democmd", "from failover.lab import Lab\n"),
    ],
)
def test_the_checker_lets_allowed_imports_through(module: str, source: str) -> None:
    assert violations(source, module, "ok.py") == []


def test_the_checker_names_the_file_line_and_import() -> None:
    source = "x = 1\nfrom failover.runtime.store import write_atomic\n"
    assert violations(source, "failover.replication.tracking", "tracking.py") == [
        "tracking.py:2: failover.replication.tracking imports failover.runtime.store.write_atomic"
    ]
