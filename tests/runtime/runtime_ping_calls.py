"""``python runtime_ping_calls.py JSON``: a ping arbitrator's calls, run inside a network namespace.

The tests start it through ``nsenter --net`` so that its probes see the
namespace's routes. JSON gives the arbitrator's options (address, port,
probe_count, probe_timeout, output_dir) and ``calls`` (request, renew,
release); each call's reply is printed as one JSON line, in order.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio

from failover.core.state import Generation
from failover.runtime.arbitrator import Reply
from failover.runtime.ping import PingArbitrator


async def main(options: dict[str, object]) -> None:
    count, timeout = int(str(options["probe_count"])), float(str(options["probe_timeout"]))
    arbitrator = PingArbitrator(
        address=str(options["address"]),
        port=None,
        probe_count=count,
        probe_timeout=timeout,
        call_bound=count * timeout + 0.2,
        output_dir=Path(str(options["output_dir"])),
    )
    generation = Generation(4, "alpha")
    for call in options["calls"]:  # type: ignore[attr-defined]
        reply: Reply
        if call == "request":
            reply = await arbitrator.request(generation, Generation(3, "beta"), False)
        elif call == "renew":
            reply = await arbitrator.renew(generation)
        else:
            reply = await arbitrator.release()
        print(json.dumps({"call": call, "reply": type(reply).__name__, **_fields(reply)}))


def _fields(reply: Reply) -> dict[str, str]:
    if hasattr(reply, "generation"):
        return {"generation": str(reply.generation)}
    if hasattr(reply, "reason"):
        return {"reason": str(reply.reason)}
    return {}


if __name__ == "__main__":
    anyio.run(main, json.loads(sys.argv[1]))
