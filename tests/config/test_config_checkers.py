"""The checker types in the configuration file: defaults per type, and the errors
an operator gets for a checker that cannot work."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_support import BASE, Bad, WriteConfig, assert_reported, bad, replace_once

from failover.config import load_config
from failover.config.models import (
    CommandChecker,
    InterfaceChecker,
    PingChecker,
    ProcessChecker,
    TcpChecker,
)
from failover.core.state import CheckerPolicy

OLD_CHECKER = "  - name: db\n    command: /bin/true\n    interval: 5\n    timeout: 3\n"


def with_checkers(entries: str) -> str:
    return replace_once(BASE, OLD_CHECKER, entries)


def test_a_checker_written_before_the_types_is_still_a_command_checker(
    write_config: WriteConfig,
) -> None:
    (checker,) = load_config(write_config()).checkers
    assert isinstance(checker, CommandChecker)
    assert (checker.name, checker.command, checker.interval, checker.timeout) == (
        "db",
        "/bin/true",
        5.0,
        3.0,
    )
    # one failure is down, as before the types existed; a command checks the application
    assert (checker.failures, checker.when, checker.action) == (1, "serving", "restart")


def test_each_type_has_the_defaults_an_operator_expects(write_config: WriteConfig) -> None:
    text = with_checkers(
        "  - {name: web, type: tcp, host: 10.0.0.100, port: 80}\n"
        "  - {name: gw, type: ping, address: 'fe80::1%eth0'}\n"
        "  - {name: lan, type: interface, interface: eth0}\n"
        "  - {name: app, type: process, pidfile: /run/app.pid}\n"
        "  - {name: main, type: process}\n"
        "  - {name: script, type: command, command: /bin/true}\n"
    )
    # the main process a process checker without a pidfile watches
    text = replace_once(
        text, "  stop: /bin/true\n", "  stop: /bin/true\n  command: /bin/sleep 3600\n"
    )
    config = load_config(write_config(text))
    web, gw, lan, app, main, script = config.checkers
    assert isinstance(web, TcpChecker) and (web.host, web.port) == ("10.0.0.100", 80)
    assert isinstance(gw, PingChecker) and gw.address == "fe80::1%eth0"
    assert isinstance(lan, InterfaceChecker) and lan.interface == "eth0"
    assert isinstance(app, ProcessChecker) and app.pidfile == Path("/run/app.pid")
    assert isinstance(main, ProcessChecker) and main.pidfile is None
    assert isinstance(script, CommandChecker)
    defaults = {c.name: (c.when, c.action, c.failures, c.grace) for c in config.checkers}
    assert defaults == {
        "web": ("serving", "restart", 3, 5.0),
        "gw": ("serving", "restart", 3, 5.0),
        "lan": ("both", "failover", 1, 0.0),
        "app": ("serving", "restart", 1, 0.0),
        "main": ("serving", "restart", 1, 0.0),
        "script": ("serving", "restart", 1, 5.0),
    }
    assert config.core_settings("alpha").checkers[2] == CheckerPolicy("lan", "both", "failover")


def test_every_setting_of_a_checker_can_be_given(write_config: WriteConfig) -> None:
    text = with_checkers(
        "  - name: web\n    type: tcp\n    host: db.example\n    port: 5432\n"
        "    interval: 2\n    timeout: 1.5\n    failures: 4\n    grace: 0\n"
        "    when: both\n    action: stop\n"
    )
    (web,) = load_config(write_config(text)).checkers
    assert isinstance(web, TcpChecker)
    assert (web.interval, web.timeout, web.failures, web.grace, web.when, web.action) == (
        2.0,
        1.5,
        4,
        0.0,
        "both",
        "stop",
    )


def test_the_fingerprint_tells_checker_types_apart(write_config: WriteConfig) -> None:
    tcp = with_checkers("  - {name: db, type: tcp, host: h, port: 5432}\n")
    other_port = with_checkers("  - {name: db, type: tcp, host: h, port: 5433}\n")
    first = load_config(write_config(tcp, "a.yaml")).fingerprint()
    assert first != load_config(write_config(other_port, "b.yaml")).fingerprint()
    assert first == load_config(write_config(tcp, "c.yaml")).fingerprint()


def one(entry: str, key: str, at: str, *gist: str) -> Bad:
    return bad(OLD_CHECKER, entry, key, at, *gist)


BAD_CHECKERS = {
    "unknown type": one(
        "  - {name: web, type: http, host: h, port: 80}\n",
        "checkers[0]",
        "name: web",
        "type must be one of command, tcp, ping, interface, process",
    ),
    "tcp without a port": one(
        "  - {name: web, type: tcp, host: h}\n",
        "checkers[0].port",
        "name: web",
        "required key is missing",
    ),
    "tcp port 0": one(
        "  - name: web\n    type: tcp\n    host: h\n    port: 0\n",
        "checkers[0].port",
        "port: 0",
        "greater than or equal to 1",
    ),
    "tcp host with a port": one(
        "  - name: web\n    type: tcp\n    host: h:80\n    port: 80\n",
        "checkers[0].host",
        "host: h:80",
        "not a host name or IP address",
    ),
    "ping without an address": one(
        "  - {name: gw, type: ping}\n", "checkers[0].address", "name: gw", "required key"
    ),
    "ping address that looks like an option": one(
        "  - name: gw\n    type: ping\n    address: -f\n",
        "checkers[0].address",
        "address: -f",
        "not a host name or IP address",
    ),
    "interface name with a slash": one(
        "  - name: lan\n    type: interface\n    interface: eth0/1\n",
        "checkers[0].interface",
        "interface: eth0/1",
        "not a network interface name",
    ),
    "interface name too long": one(
        "  - name: lan\n    type: interface\n    interface: averyveryverylongname\n",
        "checkers[0].interface",
        "interface: averyvery",
        "not a network interface name",
    ),
    "relative pidfile": one(
        "  - name: app\n    type: process\n    pidfile: run/app.pid\n",
        "checkers[0].pidfile",
        "pidfile: run/app.pid",
        "not an absolute path",
    ),
    "a process checker with neither a pidfile nor a foreground command": one(
        "  - {name: app, type: process}\n",
        "checkers[0]",
        "name: app",
        "checker app watches the application's main process",
        "give the checker a pidfile",
    ),
    "a key of another type": one(
        "  - name: app\n    type: process\n    port: 80\n",
        "checkers[0].port",
        "port: 80",
        "unknown key",
    ),
    "a misspelt key": one(
        "  - name: web\n    type: tcp\n    host: h\n    prot: 80\n",
        "checkers[0].prot",
        "prot: 80",
        "did you mean 'port'?",
    ),
    "zero failures": one(
        "  - name: db\n    command: /bin/true\n    failures: 0\n",
        "checkers[0].failures",
        "failures: 0",
        "greater than or equal to 1",
    ),
    "negative grace": one(
        "  - name: db\n    command: /bin/true\n    grace: -1\n",
        "checkers[0].grace",
        "grace: -1",
        "greater than or equal to 0",
    ),
    "unknown class": one(
        "  - name: db\n    command: /bin/true\n    when: prim\n",
        "checkers[0].when",
        "when: prim",
        "'serving', 'standby' or 'both'",
    ),
    "a command checker's command line that cannot be split": one(
        '  - name: db\n    command: "/bin/check \'db"\n',
        "checkers[0].command",
        "command:",
        "cannot split",
    ),
    "a standby checker of the virtual IP": one(
        "  - name: web\n    type: tcp\n    host: 10.0.0.100\n    port: 80\n    when: both\n",
        "checkers[0].when",
        "when: both",
        "checker web probes the virtual IP 10.0.0.100",
        "use when: serving",
    ),
    "a ping of the virtual IP on the standby node": one(
        "  - name: vip\n    type: ping\n    address: 10.0.0.100\n    when: standby\n",
        "checkers[0].when",
        "when: standby",
        "would report down on the other node and block its takeover",
    ),
}


@pytest.mark.parametrize("case", BAD_CHECKERS.values(), ids=BAD_CHECKERS.keys())
def test_a_checker_that_cannot_work_is_reported_at_its_key(
    write_config: WriteConfig, case: Bad
) -> None:
    assert_reported(write_config, case)
