"""``failover init``: every answer set gives a file that loads and checks; a bad
answer gives one line naming it and writes nothing; the key is fresh and 0600;
nothing existing is replaced without ``--force``.

The commands run in-process through ``failover.cli.main``; this machine's
addresses (for the interface guess and "which node is this") are a fake table
(``local_addresses``), so the results do not depend on the machine. The real
netlink read is tested in a namespace (test_init_netns.py).
"""

from __future__ import annotations

import io
import ipaddress
import stat
import sys
from pathlib import Path

import pytest

from failover.cli import initcmd, main
from failover.config import load_config

Here = list[tuple[str, initcmd.IpInterface]]


@pytest.fixture(autouse=True)
def machine(monkeypatch: pytest.MonkeyPatch) -> Here:
    """This machine, as init sees it: eth7 on 10.20.0.0/24, holding alpha's address."""
    here: Here = [
        ("lo", ipaddress.ip_interface("127.0.0.1/8")),
        ("eth7", ipaddress.ip_interface("10.20.0.1/24")),
        ("eth8", ipaddress.ip_interface("fd20::1/64")),
    ]
    monkeypatch.setattr(initcmd, "local_addresses", lambda: list(here))
    monkeypatch.setattr(initcmd.socket, "gethostname", lambda: "not-a-node")
    return here


def run(tmp_path: Path, *answers: str) -> tuple[int, Path]:
    config = tmp_path / "etc" / "cluster.yaml"
    code = main(["init", "-o", str(config), "--non-interactive", *answers])
    return code, config


ANSWER_SETS = {
    "one network, nothing optional": ["--cluster", "shop", "--node", "alpha=10.20.0.1",
                                      "--node", "beta=10.20.0.2"],
    "two networks, every answer": [
        "--cluster", "dispatch-2",
        "--node", "alpha=10.20.0.1,192.168.50.1", "--node", "beta=10.20.0.2,192.168.50.2",
        "--vip", "10.20.0.100/24", "--vip-interface", "bond0",
        "--dir", "/srv/db", "--dir", "/srv/Spool Files", "--dir", "/var/db",
        "--start", "/opt/app/bin/start --mode 'a: b'", "--stop", "/opt/app/bin/stop",
    ],
    "IPv6, a foreground command, a guessed interface": [
        "--cluster", "v6", "--node", "alpha=fd20::1", "--node", "beta=fd20::2",
        "--vip", "fd20::100", "--command", "/usr/bin/app --foreground",
    ],
    "a guessed interface and prefix": [
        "--cluster", "shop", "--node", "alpha=10.20.0.1", "--node", "beta=10.20.0.2",
        "--vip", "10.20.0.100", "--start", "/bin/true", "--stop", "/bin/true",
        "--command", "/bin/sleep 1000",
    ],
}  # fmt: skip


@pytest.mark.parametrize("answers", ANSWER_SETS.values(), ids=ANSWER_SETS.keys())
def test_every_answer_set_writes_a_file_that_loads_and_checks(
    tmp_path: Path, answers: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, path = run(tmp_path, *answers)
    out = capsys.readouterr()
    assert code == 0, out.err
    config = load_config(path)
    assert config.read_key() is not None
    assert main(["check-config", str(path)]) == 0
    assert f"{path}: ok" in capsys.readouterr().out
    given = dict(zip(answers[::2], answers[1::2], strict=True))
    assert config.cluster.name == given["--cluster"]
    nodes = [value for flag, value in zip(answers[::2], answers[1::2], strict=True)
             if flag == "--node"]  # fmt: skip
    for spec in nodes:
        name, _, addresses = spec.partition("=")
        lan, _, backup = addresses.partition(",")
        assert str(config.endpoint(name, "lan").address) == lan  # type: ignore[attr-defined]
        assert str(config.endpoint(name, "backup").address) == (backup or lan)  # type: ignore[attr-defined]
    dirs = [value for flag, value in zip(answers[::2], answers[1::2], strict=True)
            if flag == "--dir"]  # fmt: skip
    if dirs:
        assert config.replication is not None
        assert [str(d.path) for d in config.replication.directories] == dirs
    else:
        assert config.replication is None
    app = config.application
    for flag, key in (("--start", "start"), ("--stop", "stop"), ("--command", "command")):
        assert (getattr(app, key) if app else None) == given.get(flag)
    # what to copy, where
    assert "scp -p" in out.out and f"check-config {path} --node" in out.out


def test_the_interface_and_prefix_are_guessed_from_this_machine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, path = run(tmp_path, *ANSWER_SETS["a guessed interface and prefix"])
    out = capsys.readouterr().out
    assert code == 0
    vip = load_config(path).virtual_ip
    assert vip is not None
    assert (str(vip.address), vip.interface) == ("10.20.0.100/24", "eth7")
    assert "guessed: virtual IP 10.20.0.100/24 on interface eth7" in out


def test_an_interface_that_cannot_be_guessed_is_asked_for_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, path = run(tmp_path, "--cluster", "shop", "--node", "alpha=10.30.0.1",
                     "--node", "beta=10.30.0.2", "--vip", "10.30.0.100/24")  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("failover init: --vip-interface: cannot guess")
    assert not path.parent.exists()


def test_each_section_says_what_it_is_and_points_to_the_docs(tmp_path: Path) -> None:
    code, path = run(tmp_path, *ANSWER_SETS["two networks, every answer"])
    assert code == 0
    lines = path.read_text().splitlines()
    sections = [i for i, line in enumerate(lines) if line and line[0].isalpha()]
    assert [lines[i].split(":")[0] for i in sections] == [
        "cluster", "links", "nodes", "replication", "application", "virtual_ip"
    ]  # fmt: skip
    for i in sections:
        block = []
        j = i - 1
        while j >= 0 and lines[j].startswith("#"):
            block.insert(0, lines[j])
            j -= 1
        text = " ".join(block)
        assert text.startswith(f"# {lines[i].split(':')[0]}:"), lines[i]
        assert "docs/configuration.md" in text, lines[i]


BAD_ANSWERS = {
    "a bad address": (["--node", "alpha=10.20.0.300", "--node", "beta=10.20.0.2"],
                      "--node alpha=10.20.0.300: '10.20.0.300' is not an IP address"),
    "the same node names": (["--node", "alpha=10.20.0.1", "--node", "alpha=10.20.0.2"],
                            "--node alpha: both nodes are named 'alpha'"),
    "the same address": (["--node", "alpha=10.20.0.1", "--node", "beta=10.20.0.1"],
                         "--node beta: 10.20.0.1 is also alpha's address on link lan"),
    "a directory that is not absolute": (
        ["--node", "alpha=10.20.0.1", "--node", "beta=10.20.0.2", "--dir", "srv/db"],
        "--dir: 'srv/db' is not an absolute path"),
    "nested directories (found by the loader)": (
        ["--node", "alpha=10.20.0.1", "--node", "beta=10.20.0.2",
         "--dir", "/srv/db", "--dir", "/srv/db/logs"],
        "--dir /srv/db/logs: '/srv/db/logs' is inside"),
    "a virtual IP that is a node's (found by the loader)": (
        ["--node", "alpha=10.20.0.1", "--node", "beta=10.20.0.2", "--vip", "10.20.0.2/24"],
        "--vip: 10.20.0.2 is also nodes.beta.links.lan's address"),
    "a bad cluster name": (["--cluster", "Shop", "--node", "alpha=10.20.0.1",
                            "--node", "beta=10.20.0.2"], "--cluster: 'Shop' is not a valid name"),
    "one node": (["--node", "alpha=10.20.0.1"], "--node: given 1 times"),
    "an interface without a virtual IP": (
        ["--node", "alpha=10.20.0.1", "--node", "beta=10.20.0.2", "--vip-interface", "eth0"],
        "--vip-interface: given without a virtual IP"),
    "a start script that cannot be split": (
        ["--node", "alpha=10.20.0.1", "--node", "beta=10.20.0.2", "--start", "/bin/a 'b"],
        "--start: cannot split this command line"),
}  # fmt: skip


@pytest.mark.parametrize(("answers", "expected"), BAD_ANSWERS.values(), ids=BAD_ANSWERS.keys())
def test_a_bad_answer_is_one_line_naming_it_and_nothing_is_written(
    tmp_path: Path, answers: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if "--cluster" not in answers:
        answers = ["--cluster", "shop", *answers]
    code, path = run(tmp_path, *answers)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert err.startswith(f"failover init: {expected}"), err
    assert not path.parent.exists()


def test_the_key_is_fresh_and_readable_by_its_owner_only(tmp_path: Path) -> None:
    keys = []
    for name in ("a", "b"):
        code, path = run(tmp_path / name, *ANSWER_SETS["one network, nothing optional"])
        assert code == 0
        key = path.with_name("cluster.key")
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        keys.append(key.read_bytes())
    assert len(keys[0]) == 32 and keys[0] != keys[1]


@pytest.mark.parametrize("existing", ["cluster.yaml", "cluster.key"])
def test_an_existing_file_or_key_is_replaced_only_with_force(
    tmp_path: Path, existing: str, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "etc" / existing
    old.parent.mkdir()
    old.write_bytes(b"the operator's own\n")
    old.chmod(0o644)
    answers = ANSWER_SETS["one network, nothing optional"]
    code, path = run(tmp_path, *answers)
    err = capsys.readouterr().err
    assert code == 2
    what = "the key" if existing.endswith(".key") else "the configuration"
    assert err == (
        f"failover init: {old} exists ({what}): not overwritten; give --force to replace it\n"
    )
    assert old.read_bytes() == b"the operator's own\n"
    assert sorted(p.name for p in old.parent.iterdir()) == [existing]
    code, path = run(tmp_path, "--force", *answers)
    assert code == 0
    load_config(path)
    key = path.with_name("cluster.key")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_missing_answers_are_asked_for_and_a_wrong_one_asked_again(
    tmp_path: Path,
    machine: Here,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    del machine[2]  # one address left besides loopback: the first node's, guessed
    db = tmp_path / "db"
    db.mkdir()
    typed = [
        "shop",  # cluster
        "alpha", "", "",  # first node; its addresses: this machine's, then the same
        "alpha", "beta",  # the first node's name again: asked again
        "10.20.0.1", "10.20.0.300", "10.20.0.2",  # alpha's address, a typo: asked again
        "192.168.9.2",  # beta's second address
        "10.20.0.100", "",  # virtual IP, its guessed interface
        "srv/db", str(db), "",  # a relative directory, asked again; then no more
        "/bin/true", "/bin/false",  # start, stop
    ]  # fmt: skip
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(typed) + "\n"))
    code = main(["init", "-o", str(tmp_path / "cluster.yaml")])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "'10.20.0.300' is not an IP address" in out.err
    assert "'alpha' is the other node's name: give another" in out.err
    assert "10.20.0.1 is the other node's address" in out.err
    assert "alpha's address on the first network (link lan) [10.20.0.1]:" in out.err
    assert "'srv/db' is not an absolute path" in out.err
    config = load_config(tmp_path / "cluster.yaml", local_node="alpha")
    assert str(config.endpoint("beta", "backup").address) == "192.168.9.2"  # type: ignore[attr-defined]
    assert str(config.endpoint("alpha", "backup").address) == "10.20.0.1"  # type: ignore[attr-defined]
    assert config.virtual_ip is not None and config.virtual_ip.interface == "eth7"
    assert config.application is not None and config.application.stop == "/bin/false"


def test_input_that_ends_early_names_the_answer_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("shop\n"))
    code = main(["init", "-o", str(tmp_path / "cluster.yaml")])
    assert code == 2
    assert capsys.readouterr().err.endswith(
        "failover init: --node: no answer (the input ended); give it as a flag\n"
    )
    assert not (tmp_path / "cluster.yaml").exists()


def test_what_this_machine_lacks_is_listed_to_do_not_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "not-made-yet"
    code, _ = run(tmp_path, *ANSWER_SETS["one network, nothing optional"], "--dir", str(missing))
    out = capsys.readouterr().out
    assert code == 0
    assert "to do on this machine before alpha starts:" in out
    assert f"{missing} does not exist on this machine (node alpha)" in out
    assert "On beta," in out and "root@10.20.0.2" in out


def test_a_file_that_cannot_be_written_leaves_no_key_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the configuration's directory should be\n")
    code = main(["init", "--non-interactive", "-o", str(blocked / "cluster.yaml"),
                 "--key-file", str(keys / "cluster.key"),
                 *ANSWER_SETS["one network, nothing optional"]])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"failover init: cannot write {blocked}"), err
    assert err.count("\n") == 1
    assert list(keys.iterdir()) == []
