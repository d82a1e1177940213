"""Config section ``[slo]``: service level objectives per operation class, over a rolling window."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from dwray.config_base import Section

__all__ = ["SloConfig", "SloObjective"]


class SloObjective(Section):
    """One objective: ``availability`` (share of requests not answered 5xx) or ``latency`` (share of
    requests answered within ``threshold`` seconds) of one operation class reaching ``target``."""

    kind: Literal["availability", "latency"]
    operations: Literal["read", "write", "list", "delete", "all"] = "all"
    target: float = Field(gt=0, lt=1, description="e.g. 0.999")
    threshold: float | None = Field(None, gt=0, description="seconds, for a latency objective")


class SloConfig(Section):
    window_days: float = Field(30.0, gt=0, description="the error budget's window")
    prometheus_url: str | None = Field(None, description="the Prometheus that scrapes the gateway, for dw slo report")
    objectives: dict[str, SloObjective] = Field(default_factory=dict)
