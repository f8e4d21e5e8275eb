"""Scraping a daemon's control listener, and the metrics docs/metrics.md lists."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import anyio
from api_fakes import Answer, request
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from failover.api.server import ControlEndpoints

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
WAIT = 10.0


async def get(
    target: str,
    *,
    unix: str | None = None,
    tcp: tuple[str, int] | None = None,
    token: str = "",
    method: str = "GET",
) -> Answer:
    """One request on a fresh connection, with the control API tests' client."""
    headers = (("authorization", f"Bearer {token}"),) if token else ()
    with anyio.fail_after(WAIT):
        return await request(ControlEndpoints(unix, tcp), method, target, headers=headers)


@dataclass
class Scrape:
    """A parsed exposition: each family's type and samples, by the name users query."""

    types: dict[str, str]
    samples: list[Sample]

    def value(self, name: str, **labels: str) -> float:
        found = [s.value for s in self.samples if s.name == name and _has(s, labels)]
        assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
        return found[0]

    def total(self, name: str, **labels: str) -> float:
        return sum(s.value for s in self.samples if s.name == name and _has(s, labels))


def _has(sample: Sample, labels: dict[str, str]) -> bool:
    return all(sample.labels.get(k) == v for k, v in labels.items())


def parse(body: bytes) -> Scrape:
    types: dict[str, str] = {}
    samples: list[Sample] = []
    for family in text_string_to_metric_families(body.decode("utf-8")):
        # the parser names a counter's family without its "_total"
        name = f"{family.name}_total" if family.type == "counter" else family.name
        types[name] = family.type
        samples.extend(family.samples)
    return Scrape(types, samples)


ROW = re.compile(r"^\| `(failover_[a-z_]+)` \| (\w+) \|", re.MULTILINE)


def documented() -> dict[str, str]:
    """Name -> type of every metric in docs/metrics.md's table."""
    return dict(ROW.findall(DOCS.read_text()))
