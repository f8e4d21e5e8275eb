"""The generated state diagram (spec/ and docs/) matches the transition table."""

from __future__ import annotations

from pathlib import Path

import pytest

from failover.core import TABLE
from failover.core.diagram import COMMAND, edges, main, outputs, render, write
from failover.core.state import State

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("relative", sorted(outputs(TABLE)), ids=str)
def test_generated_file_is_up_to_date(relative: Path) -> None:
    path = ROOT / relative
    current = path.read_text(encoding="utf-8") if path.exists() else None
    assert current == outputs(TABLE)[relative], (
        f"{relative} is stale: the transition table changed. "
        f"Refresh it with `{COMMAND}` from the repository root."
    )


def test_each_state_change_is_one_edge_labelled_with_its_events() -> None:
    expected = {
        (row.state, row.target, row.event)
        for row in TABLE.all_rows()
        if row.target is not None and row.target is not row.state
    }
    drawn = [(source, target, event) for source, target, events in edges(TABLE) for event in events]
    assert len(drawn) == len(set(drawn))
    assert set(drawn) == expected
    pairs = [(source, target) for source, target, _events in edges(TABLE)]
    assert len(pairs) == len(set(pairs))
    text = render(TABLE)
    for source, target, events in edges(TABLE):
        assert f"    {source.value} --> {target.value}: {', '.join(events)}\n" in text


def test_ignores_refusals_and_stays_are_not_drawn() -> None:
    drawn = {(source, event) for source, _target, events in edges(TABLE) for event in events}
    assert (State.STOP, "heartbeat") not in drawn  # an ignore
    assert (State.STOP, "swap") not in drawn  # a refusal
    assert (State.ALONE, "peer_resynced") not in drawn  # rows that stay in alone


def test_the_diagram_starts_in_stop_and_shows_every_state() -> None:
    text = render(TABLE)
    assert text.startswith("stateDiagram-v2\n")
    assert "    [*] --> stop\n" in text
    shown = {state for source, target, _events in edges(TABLE) for state in (source, target)}
    assert shown == set(State)


def test_rendering_is_deterministic() -> None:
    assert render(TABLE) == render(TABLE)
    assert outputs(TABLE)[Path("docs", "state-machine-diagram.md")].endswith(
        f"```mermaid\n{render(TABLE)}```\n"
    )


def test_write_refreshes_only_stale_files(tmp_path: Path) -> None:
    (tmp_path / "spec").mkdir()
    (tmp_path / "docs").mkdir()
    assert sorted(write(tmp_path, TABLE)) == sorted(tmp_path / p for p in outputs(TABLE))
    assert write(tmp_path, TABLE) == []
    stale = tmp_path / "spec" / "diagram.mmd"
    stale.write_text("stateDiagram-v2\n", encoding="utf-8")
    assert write(tmp_path, TABLE) == [stale]
    assert stale.read_text(encoding="utf-8") == render(TABLE)


def test_the_command_refuses_a_directory_without_the_spec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path)]) == 2
    assert "not the repository root" in capsys.readouterr().out
    assert not (tmp_path / "spec").exists()
