"""The ``watchdog`` section: on by default, a device only where the operator
names one, its mistakes named at their key; local to each machine."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_support import BASE, Bad, WriteConfig, assert_reported, bad

from failover.config import load_config

WITH = BASE + "watchdog:\n  enabled: true\n  device: /dev/watchdog\n  device_interval: 2\n"


def test_the_watchdog_is_on_by_default_without_a_device(write_config: WriteConfig) -> None:
    section = load_config(write_config(BASE)).watchdog
    assert (section.enabled, section.device, section.device_interval) == (True, None, 1.0)


def test_a_device_is_read_and_leaves_the_fingerprint_alone(write_config: WriteConfig) -> None:
    plain = load_config(write_config(BASE, "plain.yaml"))
    config = load_config(write_config(WITH, "with.yaml"))
    assert config.watchdog.device == Path("/dev/watchdog")
    assert config.watchdog.device_interval == 2.0
    # one machine's device, not a cluster-wide setting: the nodes still pair
    assert config.fingerprint() == plain.fingerprint()


CASES: dict[str, Bad] = {
    "a relative device": bad(
        "device: /dev/watchdog",
        "device: dev/watchdog",
        "watchdog.device",
        "device:",
        "absolute path",
        base=WITH,
    ),
    "a device with the watchdog off": bad(
        "enabled: true",
        "enabled: false",
        "watchdog",
        "watchdog:",
        "only the watchdog process feeds the device",
        base=WITH,
    ),
    "enabled not a boolean": bad(
        "enabled: true", "enabled: yes please", "watchdog.enabled", "enabled:", base=WITH
    ),
    "a device interval of zero": bad(
        "device_interval: 2",
        "device_interval: 0",
        "watchdog.device_interval",
        "device_interval:",
        base=WITH,
    ),
    "an unknown key": bad(
        "device_interval: 2", "interval: 2", "watchdog.interval", ("  interval: 2", 1), base=WITH
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_a_bad_watchdog_section_is_named_at_its_key(write_config: WriteConfig, case: Bad) -> None:
    assert_reported(write_config, case)
