"""Virtual addresses in the file: ``virtual_ip`` (one) or ``virtual_ips`` (a list),
how they are announced, and the mistakes ``check-config`` names at their key."""

from __future__ import annotations

import pytest
from config_support import BASE, Bad, WriteConfig, assert_reported, bad, replace_once

from failover.config import load_config

ONE = "virtual_ip:\n  address: 10.0.0.100/24\n  interface: eth0\n"
TWO = (
    "virtual_ips:\n"
    "  - address: 10.0.0.100/24\n"
    "    interface: eth0\n"
    "  - address: fd00:10::100/64\n"
    "    interface: eth1\n"
    "    announce_count: 3\n"
    "    announce_interval: 1.5\n"
)
LIST = replace_once(BASE, ONE, TWO)


def test_a_list_of_addresses_loads_in_order_with_their_announcements(
    write_config: WriteConfig,
) -> None:
    config = load_config(write_config(LIST))
    assert [(str(v.address), v.interface) for v in config.addresses] == [
        ("10.0.0.100/24", "eth0"),
        ("fd00:10::100/64", "eth1"),
    ]
    first, second = config.addresses
    assert (first.announce_count, first.announce_interval) == (5, 0.25)  # the defaults
    assert (second.announce_count, second.announce_interval) == (3, 1.5)


def test_the_single_form_is_the_same_cluster_as_a_list_of_one(write_config: WriteConfig) -> None:
    single = load_config(write_config(BASE, "single.yaml"))
    listed = load_config(
        write_config(
            replace_once(
                BASE, ONE, "virtual_ips:\n  - {address: 10.0.0.100/24, interface: eth0}\n"
            ),
            "listed.yaml",
        )
    )
    assert single.addresses == listed.addresses
    assert single.fingerprint() == listed.fingerprint()


def test_the_fingerprint_ignores_the_order_of_addresses_but_not_their_settings(
    write_config: WriteConfig,
) -> None:
    swapped = (
        "virtual_ips:\n"
        "  - {address: fd00:10::100/64, interface: eth1, announce_count: 3,"
        " announce_interval: 1.5}\n"
        "  - {address: 10.0.0.100/24, interface: eth0}\n"
    )
    listed = load_config(write_config(LIST, "a.yaml")).fingerprint()
    assert load_config(write_config(replace_once(BASE, ONE, swapped), "b.yaml")).fingerprint() == (
        listed
    )
    slower = replace_once(LIST, "announce_interval: 1.5", "announce_interval: 2")
    assert load_config(write_config(slower, "c.yaml")).fingerprint() != listed


CASES: dict[str, Bad] = {
    "both forms": bad(
        ONE,
        ONE + "virtual_ips:\n  - {address: 10.0.0.101/24, interface: eth0}\n",
        "virtual_ips",
        "virtual_ips:",
        "give either virtual_ip (one address) or virtual_ips (a list), not both",
    ),
    "the same address twice": bad(
        ONE,
        TWO + "  - {address: 10.0.0.100/16, interface: eth2}\n",
        "virtual_ips[2].address",
        "address: 10.0.0.100/16",
        "10.0.0.100 is listed twice (also virtual_ips[0])",
    ),
    "the same IPv6 address written twice differently": bad(
        ONE,
        TWO + "  - {address: 'fd00:10:0:0::100/64', interface: eth0}\n",
        "virtual_ips[2].address",
        "fd00:10:0:0::100",
        "fd00:10::100 is listed twice (also virtual_ips[1])",
    ),
    "a bad entry among good ones": bad(
        ONE, TWO + "  - {address: 10.0.0.1/24}\n", "virtual_ips[2].interface", "10.0.0.1/24"
    ),
    "an address that is not one": bad(
        ONE,
        TWO + "  - {address: fd00::zz/64, interface: eth0}\n",
        "virtual_ips[2].address",
        "fd00::zz",
        "not a valid IPv4 or IPv6 interface",
    ),
    "a multicast address": bad(
        ONE,
        TWO + "  - {address: ff02::1/64, interface: eth0}\n",
        "virtual_ips[2].address",
        "ff02::1",
        "is a multicast address",
    ),
    "the unspecified address": bad(
        "10.0.0.100/24", "0.0.0.0/0", "virtual_ip.address", "0.0.0.0", "is the unspecified address"
    ),
    "a loopback address": bad(
        "10.0.0.100/24", "::1/128", "virtual_ip.address", "::1", "is a loopback address"
    ),
    "the network address of its prefix": bad(
        "10.0.0.100/24", "10.0.0.0/24", "virtual_ip.address", "10.0.0.0", "network address"
    ),
    "the broadcast address of its prefix": bad(
        "10.0.0.100/24", "10.0.0.255/24", "virtual_ip.address", "10.0.0.255", "broadcast address"
    ),
    "no announcement at all": bad(
        "  interface: eth0\n",
        "  interface: eth0\n  announce_count: 0\n",
        "virtual_ip.announce_count",
        "announce_count: 0",
        "greater than or equal to 1",
    ),
    "an announcement interval of zero": bad(
        "  interface: eth0\n",
        "  interface: eth0\n  announce_interval: 0\n",
        "virtual_ip.announce_interval",
        "announce_interval: 0",
        "greater than 0",
    ),
    "a checker of a listed address on the standby node": bad(
        "  - name: db\n    command: /bin/true\n",
        "  - name: web\n    type: tcp\n    host: 'fd00:10:0::100'\n    port: 80\n    when: both\n",
        "checkers[0].when",
        "when: both",
        "checker web probes the virtual IP fd00:10:0::100",
        "use when: serving",
        base=LIST,
    ),
    "virtual_ips not a list": bad(
        ONE,
        "virtual_ips: {address: 10.0.0.100/24, interface: eth0}\n",
        "virtual_ips",
        "virtual_ips:",
        "must be a list",
    ),
    "a loopback entry in the list": bad(
        ONE,
        TWO + "  - {address: 127.0.0.1/8, interface: lo}\n",
        "virtual_ips[2].address",
        "127.0.0.1/8",
        "is a loopback address",
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_each_mistake_is_named_at_its_key(write_config: WriteConfig, case: Bad) -> None:
    assert_reported(write_config, case)


def test_a_list_entry_that_is_a_nodes_own_address_is_refused(write_config: WriteConfig) -> None:
    text = replace_once(
        LIST, "lan: {address: 127.0.0.1, port: 7401}", "lan: {address: fd00:10::100, port: 7401}"
    )
    case = Bad(
        (),
        "virtual_ips[1].address",
        ("address: fd00:10::100/64", 1),
        ("is also nodes.alpha.links.lan's address",),
        base=text,
    )
    assert_reported(write_config, case)
