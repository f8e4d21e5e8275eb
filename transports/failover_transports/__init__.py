"""The transports shipped with failover: udp, tcp and serial.

Each is registered in the ``failover.transports`` entry-point group exactly like a
third-party plugin, and loaded by ``failover.plugins.load_transport``.
"""
