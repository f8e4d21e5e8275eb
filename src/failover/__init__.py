"""failover: software-only high availability for two Linux servers without shared disk."""

__version__ = "0.1.0"
