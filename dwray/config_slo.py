"""Config section ``[slo]``: service level objectives per operation class, over a rolling window.

Each ``[slo.objectives.NAME]`` is measured from the gateway's request metrics
(``dwray_s3_requests_total``, ``dwray_s3_request_duration_seconds``) by
Prometheus: ``dw slo report`` asks ``prometheus_url`` for each objective's SLI
and burn rates, and ``dw slo rules`` prints the recording and alerting rules
that watch the same objectives (:mod:`dwray.core.slo` does the maths).

A latency objective's ``threshold`` must be one of the latency histogram's
bucket bounds (0.001 ... 60 s), since the SLI counts the requests in the
buckets at or under it: any other value could only be approximated.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from dwray.config_base import Section

__all__ = ["LATENCY_THRESHOLDS", "SloConfig", "SloObjective"]

# The gateway's request latency buckets (serve_apps.metrics.DURATION_BUCKETS; a test keeps them equal).
LATENCY_THRESHOLDS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)


class SloObjective(Section):
    """One objective: ``availability`` (share of requests not answered 5xx) or ``latency`` (share of
    requests answered within ``threshold`` seconds) of one operation class reaching ``target``."""

    kind: Literal["availability", "latency"]
    operations: Literal["read", "write", "list", "delete", "all"] = "all"
    target: float = Field(gt=0, lt=1, description="e.g. 0.999")
    threshold: float | None = Field(None, gt=0, description="seconds, for a latency objective")

    @model_validator(mode="after")
    def _threshold_fits_kind(self) -> SloObjective:
        if self.kind == "latency":
            if self.threshold is None:
                raise ValueError("a latency objective needs threshold (seconds), one of "
                                 f"{list(LATENCY_THRESHOLDS)}")
            if float(self.threshold) not in LATENCY_THRESHOLDS:
                raise ValueError(f"threshold {self.threshold} is not a latency bucket bound; use one of "
                                 f"{list(LATENCY_THRESHOLDS)}")
        elif self.threshold is not None:
            raise ValueError("threshold applies to latency objectives only")
        return self


class SloConfig(Section):
    window_days: float = Field(30.0, gt=0, le=365, description="the error budget's window")
    prometheus_url: str | None = Field(None, description="the Prometheus that scrapes the gateway, for dw slo report")
    objectives: dict[str, SloObjective] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _names_are_labels(self) -> SloConfig:
        for name in self.objectives:
            if not name or not all(c.isalnum() or c in "_-" for c in name) or not name.isascii():
                raise ValueError(f"objective name {name!r} must be letters, digits, '_' or '-' "
                                 "(it becomes a Prometheus label value)")
        if self.prometheus_url is not None and not self.prometheus_url.startswith(("http://", "https://")):
            raise ValueError(f"prometheus_url must start with http:// or https://, got {self.prometheus_url!r}")
        return self
