"""``failover audit``: exit 0 / 1 (one line per violation) / 2 (file:line, no traceback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from audit_support import Journal, acks, ids, paired

from failover.audit import MAX_LINE, AuditInputError, audit
from failover.cli import main


def journals(tmp_path: Path) -> tuple[Path, Path]:
    alpha, beta = Journal("alpha"), Journal("beta")
    t = paired(alpha, beta)
    beta.restart(t + 5, "0")  # an S5 violation
    return alpha.write(tmp_path / "state"), beta.write(tmp_path / "state")


def test_exit_0_when_every_invariant_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alpha, beta = Journal("alpha"), Journal("beta")
    paired(alpha, beta)
    paths = [str(alpha.write(tmp_path)), str(beta.write(tmp_path))]
    assert main(["audit", *paths]) == 0
    out = capsys.readouterr().out
    assert out.startswith("audit: ok; checked S1, S2, S4, S5; nodes alpha, beta;")


def test_exit_1_with_one_line_per_violation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alpha, beta = journals(tmp_path)
    assert main(["audit", str(alpha), str(beta)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"S5 t=15.300 beta: generation went from 1:alpha to 0 [{beta}:10]"
    assert lines[1].startswith("audit: 1 violation(s);")


def test_a_state_directory_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journals(tmp_path)
    assert main(["audit", str(tmp_path / "state"), "--json"]) == 1
    shown = json.loads(capsys.readouterr().out)
    assert shown["ok"] is False
    assert [v["invariant"] for v in shown["violations"]] == ["S5"]
    assert shown["figures"]["records"] == {"alpha": 12, "beta": 10}


def test_acked_and_found_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    alpha, beta = Journal("alpha"), Journal("beta")
    paired(alpha, beta)
    acked = acks(tmp_path / "acked.jsonl", (1, 5.0), (2, 5.5))  # before alpha served
    found = ids(tmp_path / "alpha.ids", 1)
    paths = [str(alpha.write(tmp_path)), str(beta.write(tmp_path))]
    assert main(["audit", *paths, "--acked", str(acked), "--found", f"alpha={found}"]) == 1
    out = capsys.readouterr().out
    assert "S3 t=10.100 alpha: alpha started serving without 1 acknowledged record(s): 2" in out


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


GOOD = json.dumps(
    {"v": 1, "kind": "link", "node": "alpha", "boot": 1, "seq": 1, "mono": 1.0, "link": "lan",
     "up": True}
)  # fmt: skip


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("this is not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (GOOD.replace('"v": 1', '"v": 7'), "unknown format version 7"),
        (GOOD.replace('"link", "node"', '"weird", "node"'), "unknown record kind 'weird'"),
        # a kind or version of the wrong JSON type: an input error, not a TypeError (exit 1)
        (GOOD.replace('"link", "node"', '["link"], "node"'), "unknown record kind ['link']"),
        (GOOD.replace('"link", "node"', '{"a": 1}, "node"'), "unknown record kind {'a': 1}"),
        (GOOD.replace('"v": 1', '"v": true'), "unknown format version True"),
        (GOOD.replace('"v": 1', '"v": 1.0'), "unknown format version 1.0"),
        # what the file holds is shown cut short, not echoed whole
        (
            GOOD.replace('"link", "node"', f'"{"w" * 5000}", "node"'),
            f"unknown record kind '{'w' * 59}...\n",
        ),
        (GOOD.replace('"mono": 1.0', '"mono": "soon"'), "'mono' must be a number"),
        (GOOD.replace('"seq": 1', '"seq": 1.5'), "'seq' must be an integer"),
        (GOOD.replace('"up": true', '"up": "yes"'), "a link record needs 'up'"),
        (
            GOOD.replace('"link", "node"', '"meta", "node"').replace(
                '"link": "lan"', '"generation": "x:y", "synced": "0", "consistent": true'
            ),
            "'generation' is not a generation: 'x:y'",
        ),
        # what json or int() refuse with an exception other than a decode error
        (GOOD.replace('"up": true', '"up": ' + "1" * 5000), "not JSON: ValueError"),
        (GOOD.replace('"up": true', '"up": ' + "[" * 100_000), "not JSON"),
        (GOOD.replace('"mono": 1.0', '"mono": 1' + "0" * 400), "'mono' must be a number"),
        (
            GOOD.replace('"link", "node"', '"meta", "node"').replace(
                '"link": "lan"', f'"generation": "{"9" * 5000}", "synced": "0", "consistent": true'
            ),
            "'generation' is not a generation",
        ),
        (
            GOOD.replace('"link", "node"', '"start", "node"').replace(
                '"link": "lan"', '"generation": "0", "links": 5'
            ),
            "'links' must be a list of link names",
        ),
        (
            GOOD.replace('"link", "node"', '"resource", "node"').replace(
                '"link": "lan"', '"action": "stop", "phase": "end", "watchdog": "yes"'
            ),
            "'watchdog' must be true or false",
        ),
        (
            GOOD.replace('"link", "node"', '"resource", "node"').replace(
                '"link": "lan"', '"action": "stop", "phase": "end", "fenced_at": "then"'
            ),
            "'fenced_at' must be a number",
        ),
        (
            GOOD.replace('"link", "node"', '"start", "node"').replace(
                '"link": "lan"', '"generation": "0", "arbitrator": true'
            ),
            "'arbitrator' must be a string",
        ),
    ],
)
def test_garbage_exits_2_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, why: str
) -> None:
    path = write_lines(tmp_path / "audit.jsonl", GOOD.replace('"seq": 1', '"seq": 0'), line)
    assert main(["audit", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"failover audit: {path}:2: {why}")
    assert "Traceback" not in captured.err


def test_other_unreadable_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(GOOD.encode() + b"\n\xff\xfe\n")
    cases = {
        str(tmp_path / "missing"): "cannot read: No such file or directory",
        str(binary): f"{binary}:2: not UTF-8 text",
        str(tmp_path): "no audit.jsonl under this directory",
    }
    for given, why in cases.items():
        assert main(["audit", given]) == 2
        assert why in capsys.readouterr().err
    good = write_lines(tmp_path / "good.jsonl", GOOD)
    assert main(["audit", str(good), str(good)]) == 2
    assert "also at" in capsys.readouterr().err  # one journal given twice
    ack = write_lines(tmp_path / "ack", '{"id": 1, "mono": 1.0}')
    bad_ack = write_lines(tmp_path / "acked", '{"id": 1, "mono": 1.0}', '{"id": -3, "mono": 2}')
    assert main(["audit", str(good), "--acked", str(bad_ack), "--found", "alpha=x"]) == 2
    assert f"{bad_ack}:2: 'id' must be a non-negative integer" in capsys.readouterr().err
    huge = write_lines(tmp_path / "huge", '{"id": 1, "mono": 1' + "0" * 400 + "}")
    assert main(["audit", str(good), "--acked", str(huge), "--found", "alpha=x"]) == 2
    assert f"{huge}:1: 'mono' must be a number" in capsys.readouterr().err
    assert main(["audit", str(good), "--acked", str(ack), "--found", f"alhpa={ack}"]) == 2
    assert "found set(s) for alhpa: no records of such a node" in capsys.readouterr().err
    assert main(["audit", str(good), "--found", "alpha"]) == 2
    assert "--found 'alpha': expected NODE=FILE" in capsys.readouterr().err


def test_a_line_longer_than_the_bound_is_refused_without_reading_it_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Valid JSON, and an ack the audit would otherwise take: only its length refuses it.
    good = write_lines(tmp_path / "good.jsonl", GOOD)
    padded = '{"id": 1, "mono": 1.0, "pad": "' + "x" * MAX_LINE + '"}'
    long = write_lines(tmp_path / "acked", '{"id": 2, "mono": 1.0}', padded)
    found = write_lines(tmp_path / "found", '{"id": 1}', '{"id": 2}')
    assert main(["audit", str(good), "--acked", str(long), "--found", f"alpha={found}"]) == 2
    assert f"{long}:2: longer than {MAX_LINE} bytes" in capsys.readouterr().err


def test_a_torn_last_line_is_counted_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text(GOOD + "\n" + GOOD[:30])  # the daemon was killed mid-write
    report = audit([path])
    assert report.ok and report.figures["torn_tails"] == 1
    path.write_text(GOOD[:30] + "\n" + GOOD + "\n")  # torn in the middle: not a tail
    with pytest.raises(AuditInputError, match=r"audit.jsonl:1: not JSON"):
        audit([path])


def test_time_going_backwards_is_an_input_error(tmp_path: Path) -> None:
    later = GOOD.replace('"seq": 1', '"seq": 2').replace('"mono": 1.0', '"mono": 0.5')
    path = write_lines(tmp_path / "audit.jsonl", GOOD, later)
    with pytest.raises(AuditInputError, match=r"audit.jsonl:2: time goes backwards"):
        audit([path])


def test_power_off_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alpha, beta = Journal("alpha"), Journal("beta")
    t = paired(alpha, beta, arbitrator="witness")
    beta.next_step().link(t + 10.1, False).next_step().meta(t + 10.2, "2:beta", "1:alpha")
    beta.transition(t + 10.2, "secondary", "alone", "2:beta", event="peer_lost", synced="1:alpha")
    paths = [str(alpha.write(tmp_path)), str(beta.write(tmp_path))]
    assert main(["audit", *paths]) == 1  # alpha's journal just ends: it may still serve
    capsys.readouterr()
    assert main(["audit", *paths, "--power-off", f"alpha={t}"]) == 0
    assert "audit: ok" in capsys.readouterr().out
    for bad in ("alpha", "alpha=", "=1", "alpha=soon", "alpha=inf"):
        assert main(["audit", *paths, "--power-off", bad]) == 2
        err = capsys.readouterr().err
        assert f"--power-off {bad!r}: expected NODE=T" in err, err
        assert "Traceback" not in err
