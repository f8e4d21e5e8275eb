"""The model checker's speed on a fixed reference set, with the counts that show
the exploration unchanged.

Each check of the reference set runs in its own Python process on the code of
a source tree (``PYTHONPATH`` set to its ``src``), as ``failover model-check``
runs it (both roots, each forked, the liveness check split across the cores;
``--serial``: one process, the steadier figure on a shared machine). For each
it prints, per root, the distinct states, the transitions, the depth reached
and the liveness counts, then the wall-clock seconds and the CPU seconds
(user + system, the forked workers included).

The reference set:

- ``depth7-witness``: ``failover model-check --depth 7 --arbitrator witness``
- ``depth7-none``: ``failover model-check --depth 7 --arbitrator none``
- ``no-data-depth8-witness``: ``check_model(ClusterConfig(arbitrator=True,
  no_data=True), depth=8)`` (the configuration without replicated directories)
- ``mutant-forget-outrank``: tests/model/test_mutants.py's check of the mutant
  ``forget-outrank`` (protected root, depth 10, no liveness: caught at depth 8)

With ``--baseline REV`` the same checks run, one after the other, on a
temporary git worktree of ``REV`` (removed afterwards), and the script prints
the ratio of the times and whether every count is identical (a speed-up must
not change what is explored). Run it on an idle machine; the load average is
printed before and after, since other jobs on the cores show in the wall time.

    .venv/bin/python bench/model_check_speed.py
    .venv/bin/python bench/model_check_speed.py --baseline eed1560
    .venv/bin/python bench/model_check_speed.py --only depth7-none --serial
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _needs import Need, ensure  # the same directory

REPO = Path(__file__).resolve().parent.parent

# Each check is a Python expression building a ModelReport, run in a fresh
# process; ``PARALLEL`` is substituted. Only names that exist since the
# reference set was fixed are used, so that older revisions run it too.
CHECKS: dict[str, str] = {
    "depth7-witness": "check_model(ClusterConfig(arbitrator=True), depth=7, parallel=PARALLEL)",
    "depth7-none": "check_model(ClusterConfig(arbitrator=False), depth=7, parallel=PARALLEL)",
    "no-data-depth8-witness": (
        "check_model(ClusterConfig(arbitrator=True, no_data=True), depth=8, parallel=PARALLEL)"
    ),
    "mutant-forget-outrank": (
        "check_model(ClusterConfig(arbitrator=False), depth=10, "
        "table=mutant_table('forget-outrank'), roots=('protected',), liveness=False, "
        "parallel=PARALLEL)"
    ),
}

CHILD = """
import json, resource, sys, time
from failover.model.mutants import mutant_table
from failover.model.run import check_model
from failover.model.sim import ClusterConfig
started = time.monotonic()
report = {expression}
wall = time.monotonic() - started
usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
cpu = sum(u.ru_utime + u.ru_stime for u in usage)
roots = []
for r in report.results:
    lv = r.liveness
    roots.append({{
        "root": r.name, "states": r.states, "transitions": r.transitions, "depth": r.depth,
        "exhausted": r.exhausted, "violations": r.violations,
        "liveness": None if lv is None else [lv.checked, lv.protected_goal, lv.serving_goal,
            lv.service_goal, lv.stable_checked, lv.cost_checked, len(lv.failures)],
    }})
print(json.dumps({{"ok": report.ok, "wall": wall, "cpu": cpu, "roots": roots}}))
"""


def run_check(tree: Path, name: str, parallel: bool) -> dict[str, Any]:
    expression = CHECKS[name].replace("PARALLEL", str(parallel))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tree / "src"), str(tree / "transports")])
    done = subprocess.run(
        [sys.executable, "-c", CHILD.format(expression=expression)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{name} on {tree} failed (exit {done.returncode}):\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def counts(result: dict[str, Any]) -> list[object]:
    """Everything the exploration found, times left out."""
    return [result["ok"], result["roots"]]


def describe(name: str, result: dict[str, Any]) -> list[str]:
    lines = [f"{name}: {result['wall']:.1f} s wall, {result['cpu']:.1f} s CPU, ok={result['ok']}"]
    for root in result["roots"]:
        reach = "whole space" if root["exhausted"] else f"depth {root['depth']}"
        lines.append(
            f"  {root['root']}: {root['states']} states, {root['transitions']} transitions, "
            f"{reach}; violations {root['violations'] or 'none'}; liveness {root['liveness']}"
        )
    return lines


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def baseline_tree(rev: str, where: Path) -> Path:
    tree = where / "baseline"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), rev],
        check=True,
        capture_output=True,
    )
    return tree


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", metavar="REV", help="also run on a worktree of REV")
    parser.add_argument("--only", action="append", choices=sorted(CHECKS), help="a check to run")
    parser.add_argument(
        "--serial", action="store_true", help="one process per check (no forked workers)"
    )
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args()
    if args.baseline:  # a worktree of REV
        ensure("model_check_speed.py", [Need("git", command="git")])
    names = args.only or list(CHECKS)
    parallel = not args.serial
    print(f"load average before: {loadavg()}; {os.cpu_count()} CPUs; parallel={parallel}")
    figures: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="model-speed-") as tmp:
        trees = {"current": REPO}
        if args.baseline:
            trees["baseline"] = baseline_tree(args.baseline, Path(tmp))
        try:
            for name in names:
                for label, tree in trees.items():
                    result = run_check(tree, name, parallel)
                    figures.setdefault(name, {})[label] = result
                    for line in describe(f"{name} [{label}]", result):
                        print(line, flush=True)
        finally:
            if "baseline" in trees:
                remove = ["worktree", "remove", "--force", str(trees["baseline"])]
                subprocess.run(["git", "-C", str(REPO), *remove], check=False)
    if args.baseline:
        print(
            f"\n{'check':26s} {'base s':>8s} {'now s':>8s} {'ratio':>6s} "
            f"{'base CPU':>9s} {'now CPU':>8s} {'ratio':>6s}  counts"
        )
        totals = [0.0, 0.0, 0.0, 0.0]
        for name in names:
            base, now = figures[name]["baseline"], figures[name]["current"]
            same = "identical" if counts(base) == counts(now) else "DIFFERENT"
            row = [float(base["wall"]), float(now["wall"]), float(base["cpu"]), float(now["cpu"])]
            totals = [t + r for t, r in zip(totals, row, strict=True)]
            print(
                f"{name:26s} {row[0]:8.1f} {row[1]:8.1f} {row[1] / row[0]:6.2f} "
                f"{row[2]:9.1f} {row[3]:8.1f} {row[3] / row[2]:6.2f}  {same}"
            )
        print(
            f"{'total':26s} {totals[0]:8.1f} {totals[1]:8.1f} {totals[1] / totals[0]:6.2f} "
            f"{totals[2]:9.1f} {totals[3]:8.1f} {totals[3] / totals[2]:6.2f}"
        )
    print(f"load average after: {loadavg()}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"CPU of every check: {usage.ru_utime + usage.ru_stime:.1f} s; at {time.ctime()}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1), encoding="utf-8")
    different = any(
        counts(f["baseline"]) != counts(f["current"]) for f in figures.values() if "baseline" in f
    )
    return 1 if different else 0


if __name__ == "__main__":
    raise SystemExit(main())
