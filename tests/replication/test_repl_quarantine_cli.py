"""`failover quarantine list` over a quarantine directory a split brain filled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from failover.cli import main
from failover.replication.quarantine import quarantine
from failover.replication.tracking import ChangeMap


def test_the_list_shows_each_set_and_its_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "db"
    root.mkdir()
    (root / "orders").write_bytes(b"written on the losing side")
    changes = ChangeMap(4096)
    changes.add_bytes(("db", b"orders"), 0, 26)
    where = tmp_path / "quarantine"
    quarantine("db", root, changes.frozen(), where, generation="4:beta", peer="alpha", now=1.8e9)
    assert main(["quarantine", "list", "--dir", str(where)]) == 0
    text = capsys.readouterr().out
    assert "1 quarantine set(s)" in text
    assert "split brain vs peer alpha at generation 4:beta" in text
    assert main(["quarantine", "list", "--dir", str(where), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["peer"], row["generation"], row["complete"]) == ("alpha", "4:beta", True)
    assert row["roots"][0]["files"] == 1


def test_an_empty_directory_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quarantine", "list", "--dir", str(tmp_path / "none")]) == 0
    assert "no quarantined data" in capsys.readouterr().out
