"""The example alert rules (docs/alerts) are valid Prometheus rules and do what
their unit tests say: ``promtool check rules`` and ``promtool test rules``.
Every metric a rule names is one docs/metrics.md lists (and so one a scrape has)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml
from metrics_support import DOCS, documented

PROMTOOL = shutil.which("promtool")
RULES = DOCS.parent / "alerts" / "failover.rules.yml"
RULE_TESTS = DOCS.parent / "alerts" / "failover.rules.test.yml"
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="no promtool (Debian package prometheus: scripts/system-deps.sh)"
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], check=False, capture_output=True, text=True, timeout=60, cwd=RULES.parent
    )


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@needs_promtool
def test_promtool_runs_the_rules_unit_tests() -> None:
    done = promtool("test", "rules", RULE_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_metric_a_rule_names_is_documented() -> None:
    names = documented()
    series = {name for name, kind in names.items() if kind != "histogram"}
    series |= {
        f"{name}{suffix}"
        for name, kind in names.items()
        if kind == "histogram"
        for suffix in ("_bucket", "_sum", "_count")
    }
    used = set()
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            used |= set(re.findall(r"\bfailover_[a-z_]+", rule["expr"]))
    assert used, "no rule names a metric"
    assert used <= series, f"rules name undocumented metrics: {sorted(used - series)}"
