"""Helpers shipped with failover for testing it and its plugins.

- ``failover.testing.transport_contract``: the conformance suite every
  heartbeat transport's tests reuse (built-ins and third-party plugins alike).
"""
