"""The shipped scenarios hold, and `failover simulate` reports failures and bad files."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from failover.cli import main
from failover.model.mutants import mutant_table
from failover.model.scenario import load_scenario, run_scenario

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "spec" / "scenarios"
FILES = sorted(p.name for p in SCENARIOS.glob("*.yaml"))

# Scenarios written to the behaviour DESIGN.md section 2 asks for, which the
# core does not show yet. Each must fail (strict): when the core is fixed, the
# mark goes.
# Scenarios that show a known core bug (strict xfail: fixing the bug turns them red).
CORE_BUGS: dict[str, str] = {}


def _params() -> list[object]:
    return [
        pytest.param(
            name,
            marks=pytest.mark.xfail(strict=True, reason=CORE_BUGS[name])
            if name in CORE_BUGS
            else (),
        )
        for name in FILES
    ]


@pytest.mark.parametrize("name", _params())
def test_shipped_scenario_holds(name: str) -> None:
    scenario = load_scenario(SCENARIOS / name, f"spec/scenarios/{name}")
    lines: list[str] = []
    outcome = run_scenario(scenario, lines.append)
    assert outcome.passed, "\n".join([*lines, str(outcome.failure)])
    assert outcome.checked >= 3


@pytest.mark.parametrize(
    ("mutant", "name", "failure"),
    [
        ("no-stale-guard", "stale-node-waits.yaml", "beta: expected wait, actual alone"),
        ("resync-may-serve", "primforce.yaml", "beta: expected wait, actual alone"),
        ("no-split-brain-detection", "partition-no-arbitrator.yaml", "expected {w1}, actual"),
        ("takeover-without-grant", "partition-witness.yaml", "beta: expected wait, actual alone"),
    ],
)
def test_a_broken_table_fails_the_scenario_that_covers_it(
    mutant: str, name: str, failure: str
) -> None:
    scenario = load_scenario(SCENARIOS / name)
    outcome = run_scenario(scenario, table=mutant_table(mutant))
    assert outcome.failure is not None
    assert failure in outcome.failure


def test_at_least_ten_scenarios_are_shipped() -> None:
    assert len(set(FILES) - set(CORE_BUGS)) >= 10


def test_every_shipped_scenario_is_listed_in_the_docs() -> None:
    docs = (ROOT / "docs" / "scenarios.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"`([a-z0-9-]+\.yaml)`", docs))
    assert listed == set(FILES)


# --- the command ---------------------------------------------------------------------------


def _write(tmp_path: Path, text: str, name: str = "case.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


PROTECTED = """\
name: a case
given: {start: protected}
steps:
"""


def _case(tmp_path: Path, steps: str) -> Path:
    return _write(
        tmp_path, PROTECTED + textwrap.indent(textwrap.dedent(steps).strip(), "  ") + "\n"
    )


def test_a_passing_file_exits_0_and_prints_the_timeline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _case(
        tmp_path,
        """
        - crash: alpha
        - run: 3
        - expect: {alpha: down, beta: alone}
        """,
    )
    assert main(["simulate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "t=3  crash alpha" in out
    assert "t=6  beta: secondary -> alone: alpha lost on every link: taking over" in out
    assert "[start_tracking, start_app]" in out
    assert "✓ expect alpha=down, beta=alone" in out
    assert f"PASS {path}" in out


def test_a_wrong_expectation_exits_1_with_expected_and_actual(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _case(
        tmp_path,
        """
        - run: 1
        - expect: {alpha: primary, beta: alone}
        - crash: alpha
        """,
    )
    assert main(["simulate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "✗ expect alpha=primary, beta=alone" in out
    assert f"{path}:5: steps[1].expect: beta: expected alone, actual secondary" in out
    assert "crash alpha" not in out  # the scenario stops at its first failed expectation
    assert f"FAIL {path}" in out


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ("- expect_reason: {alpha: 'taking over'}", "expected a reason containing 'taking over'"),
        ("- command: {swap: alpha}\n- expect_refused: {alpha: x}", "no refusal (the command"),
        (
            "- command: {stop: beta}\n- expect_record: {node: beta, to: wait}",
            "actual records of beta: stop: secondary -> stop: stopped by the operator",
        ),
        (
            "- expect_resync: {beta: incremental}",
            "beta: expected resync mode incremental, actual full",
        ),
        ("- expect_resync: {alpha: full}", "alpha: expected resync mode full, actual: it never"),
        (
            "- command: {stop: beta}\n- run: 1\n- write: alpha\n- expect_acked_on: [beta]",
            "w1 missing (beta holds nothing)",
        ),
        ("- write: alpha\n- expect_not_acked: [w1]", "expected w1 not acknowledged"),
        ("- write: alpha\n- expect_quarantine: {alpha: [w1]}", "expected {w1}, actual {nothing}"),
        ("- write: alpha\n- expect_data: {alpha: []}", "expected {nothing}, actual {w1}"),
        (
            "- partition: [lan, serial]\n- run: 3\n- expect_never_both_serving: true",
            "actual both served at t=6",
        ),
        ("- expect_links: {alpha: {lan: down}}", "alpha's link lan: expected down, actual up"),
        ("- write: beta", "`write beta` cannot happen now: the application does not run on beta"),
        ("- restart: alpha", "`restart alpha` cannot happen now: alpha is up"),
        ("- heal: lan", "link lan is not partitioned"),
        ("- arb_cut: alpha", "no arbitrator is configured"),
    ],
)
def test_each_kind_of_expectation_can_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], steps: str, message: str
) -> None:
    path = _case(tmp_path, steps)
    assert main(["simulate", str(path)]) == 1
    assert message in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            "name: x\nsteps:\n  - expect: {gamma: primary}\n",
            ":3: steps[0].expect.gamma: unknown node",
        ),
        ("name: x\nsteps:\n  - run: 2\n  - explode: alpha\n", ":4: steps[1].explode: unknown step"),
        ("name: x\nsteps:\n  - run: soon\n", ":3: steps[0].run: must be a number of ticks"),
        ("name: x\nsteps:\n  - expect: {alpha: serving}\n", ":3: steps[0].expect.alpha: must be"),
        ("name: x\ngiven: {arbitator: witness}\nsteps: [run: 1]\n", ":2: given.arbitator: unknown"),
        ("name: x\ngiven: {start: later}\nsteps: [run: 1]\n", ":2: given.start: must be one of"),
        ("name: x\n", ":1: steps: missing"),
        ("steps: [run: 1]\n", ":1: name: missing"),
        ("name: x\nsteps:\n  - expect_acked: [w1]\n", ":3: steps[0].expect_acked[0]: w1 is not"),
        ("name: x\nsteps:\n  - partition: wifi\n", ":3: steps[0].partition: unknown link 'wifi'"),
        ("name: x\nsteps:\n  - command: {reboot: alpha}\n", ":3: steps[0].command.reboot: unknown"),
        (
            "name: x\nsteps:\n  - {run: 1, crash: alpha}\n",
            ":3: steps[0]: a step has exactly one key",
        ),
        ("name: x\nsteps:\n  - drop: lan\n", ":3: steps[0].drop: must be '<link> <sender>'"),
        ("name: x\nsteps: [run: 1\n", ":3: invalid YAML"),
        ("name: x\nname: y\nsteps: [run: 1]\n", ":2: name: duplicate key"),
        (
            "name: x\ngiven: {failback: preferred}\nsteps: [run: 1]\n",
            ":2: given: failback 'preferred' needs preferred set",
        ),
    ],
)
def test_a_malformed_file_exits_2_with_one_line_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, where: str
) -> None:
    path = _write(tmp_path, text)
    assert main(["simulate", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith(f"failover simulate: {path}{where}"), captured.err
    assert "Traceback" not in captured.err


def test_a_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "absent.yaml"
    assert main(["simulate", str(path)]) == 2
    assert f"failover simulate: {path}: cannot read the file" in capsys.readouterr().err


def test_several_files_run_in_turn_with_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(SCENARIOS / "first-start.yaml"), str(SCENARIOS / "swap.yaml")]
    assert main(["simulate", *files]) == 0
    out = capsys.readouterr().out
    assert out.count("PASS ") == 2
    assert "2 scenarios: 2 passed, 0 failed" in out


def test_a_malformed_file_among_several_runs_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _write(tmp_path, "name: x\nsteps: []\n")
    assert main(["simulate", str(SCENARIOS / "swap.yaml"), str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{bad}:2: steps: must be a non-empty list" in captured.err


def test_one_failing_file_among_several_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    failing = _case(tmp_path, "- expect: {alpha: stop}")
    assert main(["simulate", "--quiet", str(failing), str(SCENARIOS / "swap.yaml")]) == 1
    out = capsys.readouterr().out
    assert "2 scenarios: 1 passed, 1 failed" in out


def test_quiet_prints_only_the_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--quiet", str(SCENARIOS / "primary-crash.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"PASS {SCENARIOS / 'primary-crash.yaml'}: primary crash")
    assert out.count("\n") == 1
