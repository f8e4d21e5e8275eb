"""``python -m failover``: the same command line as the ``failover`` script."""

from __future__ import annotations

from failover.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
