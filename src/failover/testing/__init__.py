"""Helpers shipped with failover for testing it and its plugins (never imported by
the daemon, the commands or the demo: tests/test_layering.py checks it).

- ``failover.testing.transport_contract``: the conformance suite every
  heartbeat transport's tests reuse (built-ins and third-party plugins alike).
- ``disks``, ``processes``, ``proxy``, ``postgres``, ``etcd``, ``witness``: small
  disks to fill, child processes by name and a writer whose acknowledgements are
  read as it prints them, a TCP proxy whose connections can be cut, PostgreSQL
  clusters, a one-member etcd and a witness for the tests and benchmarks.

The network lab the demo, the e2e tests and the benchmarks build is not a test
helper: it is ``failover.lab``.
"""
