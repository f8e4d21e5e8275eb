"""Shared fixtures for the transport tests."""

from __future__ import annotations

# The out-of-tree plugin's own tests run in a subprocess where it is installed.
collect_ignore = ["plugin_pkg"]
