"""The four timings a cluster runs with, the shipped profiles, and how overrides apply."""

from __future__ import annotations

from typing import Annotated, Literal

from annotated_types import Gt
from pydantic import AllowInfNan, BaseModel, ConfigDict, Strict

Seconds = Annotated[float, Strict(), AllowInfNan(False), Gt(0)]
"""A duration in seconds, written as a number greater than zero."""

ProfileName = Literal["default", "fast"]

TIMING_KEYS = ("heartbeat_interval", "link_timeout", "dead_timeout", "startup_timeout")


class TimingOverrides(BaseModel):
    """``cluster.timing``: each key given replaces the profile's value."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    heartbeat_interval: Seconds | None = None
    link_timeout: Seconds | None = None
    dead_timeout: Seconds | None = None
    startup_timeout: Seconds | None = None

    def given(self) -> dict[str, float]:
        """The overrides actually written, by key."""
        return {key: value for key in TIMING_KEYS if (value := getattr(self, key)) is not None}


class Timing(BaseModel):
    """The resolved timings in seconds (see docs/configuration.md for their meaning)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    heartbeat_interval: Seconds
    link_timeout: Seconds
    dead_timeout: Seconds
    startup_timeout: Seconds


PROFILES: dict[str, Timing] = {
    "default": Timing(
        heartbeat_interval=0.2, link_timeout=1.0, dead_timeout=2.0, startup_timeout=2.0
    ),
    "fast": Timing(
        heartbeat_interval=0.05, link_timeout=0.1, dead_timeout=0.2, startup_timeout=0.5
    ),
}


def resolve_timing(profile: str, overrides: TimingOverrides) -> Timing:
    """The profile's timings with every given override applied."""
    return PROFILES[profile].model_copy(update=overrides.given())
