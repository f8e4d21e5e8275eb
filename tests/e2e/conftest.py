"""End-to-end tests: real daemons in network namespaces (root only).

Every test module here sets ``pytestmark = NETNS`` (from ``e2e_support``):
marked ``netns`` and skipped, with the reason, when namespaces cannot be built
(not root, no ``ip``/``nsenter``, a container that forbids them).

Every test ends by auditing the journals of each cluster it built
(``failover audit``, docs/audit.md): a violation of S1-S5 fails the test, with
the violations printed; the audit's summary is attached to the report.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest
from e2e_support import CLUSTERS

from failover.audit import AuditInputError
from failover.lab import Lab, list_namespaces


@pytest.fixture
def lab() -> Iterator[Lab]:
    """Networks "lan" (10.77.1.0/24) and "crossover" (10.77.2.0/24), plus a client on lan."""
    with Lab(networks=("lan", "crossover"), client=True) as built:
        yield built
    left = [name for name in list_namespaces() if name.startswith(built.name)]
    assert not left, f"namespaces left behind: {left}"


def _audit_clusters(item: pytest.Item) -> list[str]:
    """Audit every cluster the test built; the violations found, one line each."""
    violations: list[str] = []
    for cluster in CLUSTERS:
        try:
            report = cluster.audit()
        except AuditInputError as exc:
            violations.append(f"unreadable journal: {exc}")
            continue
        if report is None:
            if cluster.procs:
                violations.append(
                    f"{cluster.tmp_path}: daemons ran but their journals are gone: the "
                    "test must call cluster.audit_now() before removing the state directory"
                )
            continue
        figures = report.figures
        item.add_report_section(
            "call",
            "audit",
            f"{cluster.tmp_path}: checked {', '.join(report.checked)}; "
            f"{len(report.violations)} violation(s); overlaps {figures['overlaps']}; "
            f"blind {figures['blind_overlaps']}, forced {figures['forced_overlaps']}; "
            f"starts of service {figures['entries']}; records {figures['records']}",
        )
        expected = cluster.expected_violations
        if expected and (
            not report.violations or not {v.invariant for v in report.violations} <= expected
        ):
            violations.append(
                f"expected violations of {', '.join(sorted(expected))} only, found: "
                + ("; ".join(str(v) for v in report.violations) or "none")
            )
        elif not expected:
            violations.extend(str(v) for v in report.violations)
    return violations


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """After the test's body: audit its clusters; any violation fails the test."""
    CLUSTERS.clear()
    try:
        result = yield
    except BaseException:
        violations = _audit_clusters(item)
        if violations:
            item.add_report_section("call", "audit violations", "\n".join(violations))
        raise
    violations = _audit_clusters(item)
    CLUSTERS.clear()
    if violations:
        pytest.fail("the audit of this run found violations:\n" + "\n".join(violations))
    return result
