"""Config sections ``[tracing]`` and ``[logging]``: where spans go and how log lines look."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from dwray.config_base import Section
from dwray.secret_ref import SecretRefField

__all__ = ["LoggingConfig", "TracingConfig"]


class TracingConfig(Section):
    """OpenTelemetry spans: exported by every process of the warehouse (gateway, supervisor, plugin hosts)."""

    exporter: Literal["none", "console", "otlp-http", "otlp-grpc"] = "none"
    endpoint: str | None = Field(None, description="collector URL; default: the exporter's own default")
    # Header values are secret references (an API key for a hosted collector): resolved in each process.
    headers: dict[str, SecretRefField] = Field(default_factory=dict)
    sampler: Literal["always_on", "always_off", "traceidratio", "parentbased_traceidratio"] = \
        "parentbased_traceidratio"
    ratio: float = Field(1.0, ge=0, le=1, description="fraction of traces kept by the ratio samplers")
    service_name: str = "dwray"
    timeout: float = Field(10.0, gt=0, description="seconds an export may take")
    schedule_delay: float = Field(1.0, gt=0, le=60,
                                  description="seconds a finished span waits in its process before its batch is sent")


class LoggingConfig(Section):
    """Log lines: plain text or one JSON object per line; levels per logger, changed live by a reload."""

    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    levels: dict[str, Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]] = Field(
        default_factory=dict, description="per logger, e.g. {\"dwray.gateway\" = \"DEBUG\"}")
