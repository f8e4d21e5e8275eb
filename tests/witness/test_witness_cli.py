"""``failover witness run|status``: clear errors for bad files, the records as saved."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from failover.cli import main
from failover.core.state import Generation

from .witness_support import acquire, make_witness, session


def write_config(tmp_path: Path, body: str) -> Path:
    (tmp_path / "prod.key").write_bytes(b"k" * 32)
    path = tmp_path / "witness.yaml"
    path.write_text(body)
    return path


GOOD = (
    "listen: 127.0.0.1:7420\nstate_dir: state\nclusters:\n  - name: prod\n    key_file: prod.key\n"
)


def test_status_shows_the_holder_and_generation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, GOOD)
    # no state directory (a mistyped path, a witness never run): not "held by nobody"
    assert main(["witness", "status", "-c", str(path)]) == 2
    out = capsys.readouterr()
    assert not out.out and f"state_dir {tmp_path / 'state'} is not a directory" in out.err
    (tmp_path / "state").mkdir()
    assert main(["witness", "status", "-c", str(path)]) == 0
    assert capsys.readouterr().out == "prod: held by nobody; generation 0\n"
    witness = make_witness(tmp_path / "state")
    acquire(witness, session("alpha"), 0.0, wanted=Generation(1, "alpha"))
    assert main(["witness", "status", "-c", str(path)]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("prod: held by alpha, expires in ") and "generation 1:alpha" in last
    assert main(["witness", "status", "-c", str(path), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["holder"] == "alpha" and row["generation"] == "1:alpha" and row["ttl"] == 6.0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("listen: nowhere\nstate_dir: s\nclusters: []\n", "listen: 'nowhere' must be host:port"),
        ("listen: 7421\nstate_dir: s\nclusters: []\n", "listen: 7421 must be host:port as text"),
        ("listen: h:70000\nstate_dir: s\nclusters: []\n", "port 1-65535"),
        ("state_dir: s\nclusters: []\n", "clusters: "),
        (GOOD.replace("state_dir: state\n", ""), "state_dir: required"),
        (GOOD + "  - name: prod\n    key_file: prod.key\n", "'prod' twice"),
        (GOOD.replace("key_file", "keyfile"), "keyfile"),
        (
            GOOD.replace("name: prod", "name: Prod!"),
            "clusters[0].name: 'Prod!' is not a valid name",
        ),
        ("- a\n", "must be a mapping"),
    ],
)
def test_bad_files_are_one_line_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, message: str
) -> None:
    path = write_config(tmp_path, body)
    for action in ("status", "run"):
        assert main(["witness", action, "-c", str(path)]) == 2
        err = capsys.readouterr().err
        assert message in err, err
        assert "Traceback" not in err and str(path) in err


def test_run_refuses_a_short_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, GOOD)
    (tmp_path / "prod.key").write_bytes(b"short")
    assert main(["witness", "run", "-c", str(path)]) == 2
    assert "holds 5 bytes, at least 32" in capsys.readouterr().err


def test_status_names_a_corrupt_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, GOOD)
    record = tmp_path / "state" / "clusters" / "prod.json"
    record.parent.mkdir(parents=True)
    record.write_text("{")
    assert main(["witness", "status", "-c", str(path)]) == 2
    assert "prod.json: not a valid witness record" in capsys.readouterr().err


def test_run_names_an_address_it_cannot_listen_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        in_use = f"127.0.0.1:{taken.getsockname()[1]}"
        for listen in ("192.0.2.1:7420", in_use):  # not this machine's; already bound
            path = write_config(tmp_path, GOOD.replace("127.0.0.1:7420", listen))
            argv = ["witness", "run", "-c", str(path), "--log-file", str(tmp_path / "log")]
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"failover witness: cannot listen on {listen}: "), err
            assert "Traceback" not in err
