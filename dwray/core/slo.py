"""Service level objectives: the SLI queries, burn-rate maths and Prometheus rules for ``[slo]``.

Pure (no HTTP, no Ray): ``dw slo report`` hands :func:`report` a function that
runs one PromQL query; ``dw slo rules`` prints :func:`rules` as YAML.

An objective's *error ratio* over a window is the share of its requests that
were bad: answered 5xx (``availability``) or slower than ``threshold``
(``latency``), from the gateway's ``dwray_s3_requests_total`` and
``dwray_s3_request_duration_seconds`` (summed over replicas). Then, with
``target`` the objective (0.999):

- SLI = 1 - error ratio over the whole window (``window_days``);
- error budget left = 1 - (1 - SLI) / (1 - target): 1 untouched, 0 spent,
  negative overspent;
- burn rate over a window = error ratio / (1 - target): 1 spends the budget in
  exactly the SLO window, 14.4 spends 2 % of a 30-day budget in one hour.

Alerts follow the SRE workbook's multi-window, multi-burn-rate alerts: each
fires when both a long and a short window burn faster than a factor, the
short window (1/12 of the long) making the alert stop soon after the burning
does. The factors are the budget share each pair stands for, scaled to the
configured window (the workbook's 14.4 / 6 / 3 / 1 for 30 days).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from dwray.config_slo import SloConfig, SloObjective
from dwray.errors import InvalidArgument

__all__ = [
    "ALERT_WINDOWS",
    "OPERATION_CLASSES",
    "REPORT_WINDOWS",
    "AlertWindow",
    "ObjectiveReport",
    "burn_rate",
    "budget_left",
    "error_ratio_query",
    "report",
    "rules",
    "window_label",
]

# Operation classes (the config's ``operations``) -> the S3 operations (metrics' ``operation`` label) they hold.
OPERATION_CLASSES: Mapping[str, tuple[str, ...]] = {
    "read": ("GetObject", "HeadObject", "HeadBucket", "GetBucketLocation", "GetBucketVersioning"),
    "write": ("PutObject", "CopyObject", "CreateBucket", "CreateMultipartUpload", "UploadPart", "UploadPartCopy",
              "CompleteMultipartUpload"),
    "list": ("ListBuckets", "ListObjects", "ListObjectsV2", "ListParts", "ListMultipartUploads"),
    "delete": ("DeleteObject", "DeleteObjects", "DeleteBucket", "AbortMultipartUpload"),
}
# The gateway's own endpoints are not S3 requests: "all" leaves them out.
_NOT_S3 = "admin|health|metrics"
# The windows dw slo report shows burn rates for.
REPORT_WINDOWS: tuple[float, ...] = (3600.0, 6 * 3600.0)


@dataclass(frozen=True)
class AlertWindow:
    """One alert of the multi-window set: ``budget_share`` of the budget spent within ``long`` seconds."""

    severity: str
    long: float
    short: float
    budget_share: float

    def factor(self, window_days: float) -> float:
        """The burn rate that spends ``budget_share`` of the budget in ``long`` (14.4 for 2 % in 1 h of 30 d)."""
        return self.budget_share * window_days * 86400.0 / self.long


# SRE workbook, table 5-8: page on 2 % in 1 h or 5 % in 6 h, ticket on 10 % in 1 d or 10 % in 3 d.
ALERT_WINDOWS: tuple[AlertWindow, ...] = (
    AlertWindow("page", 3600.0, 300.0, 0.02),
    AlertWindow("page", 6 * 3600.0, 1800.0, 0.05),
    AlertWindow("ticket", 86400.0, 2 * 3600.0, 0.10),
    AlertWindow("ticket", 3 * 86400.0, 6 * 3600.0, 0.10),
)


def window_label(seconds: float) -> str:
    """A PromQL duration: ``300`` -> ``5m``, ``3600`` -> ``1h``, ``86400`` -> ``1d``."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds <= 0 or seconds % 60:
        raise InvalidArgument(f"a window must be a positive whole number of minutes in seconds, got {seconds!r}")
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    raise AssertionError("unreachable: seconds is a multiple of 60")  # pragma: no cover


def _selector(objective: SloObjective) -> str:
    if objective.operations == "all":
        return f'operation!~"{_NOT_S3}"'
    return f'operation=~"{"|".join(OPERATION_CLASSES[objective.operations])}"'


def _le(threshold: float) -> str:
    """The histogram's ``le`` label for ``threshold`` as prometheus_client writes it (``0.25``, ``1.0``)."""
    return repr(float(threshold))


def error_ratio_query(objective: SloObjective, window: str) -> str:
    """PromQL for the share of the objective's requests that were bad over ``window`` (``5m``, ``30d``)."""
    sel = _selector(objective)
    if objective.kind == "availability":
        # "or vector(0)": with no 5xx series at all the sum is empty, not 0, and so would the ratio be.
        bad = f'(sum(rate(dwray_s3_requests_total{{{sel},status=~"5.."}}[{window}])) or vector(0))'
        return f"{bad} / sum(rate(dwray_s3_requests_total{{{sel}}}[{window}]))"
    assert objective.threshold is not None  # the config refuses a latency objective without one
    good = f'sum(rate(dwray_s3_request_duration_seconds_bucket{{{sel},le="{_le(objective.threshold)}"}}[{window}]))'
    return f"1 - {good} / sum(rate(dwray_s3_request_duration_seconds_count{{{sel}}}[{window}]))"


def burn_rate(error_ratio: float | None, target: float) -> float | None:
    """How fast the budget burns: ``error_ratio / (1 - target)``; ``None`` when there was no traffic."""
    if not 0 < target < 1:
        raise InvalidArgument(f"an SLO target must be between 0 and 1, got {target!r}")
    if error_ratio is None or math.isnan(error_ratio):
        return None
    if error_ratio < 0 or error_ratio > 1:
        raise InvalidArgument(f"an error ratio must be between 0 and 1, got {error_ratio!r}")
    return error_ratio / (1 - target)


def budget_left(error_ratio: float | None, target: float) -> float | None:
    """Share of the error budget left over the SLO window: 1 untouched, 0 spent, below 0 overspent."""
    rate = burn_rate(error_ratio, target)
    return None if rate is None else 1.0 - rate


@dataclass(frozen=True)
class ObjectiveReport:
    """One objective's state: SLI and budget over the SLO window, burn rates per report window."""

    name: str
    kind: str
    operations: str
    target: float
    threshold: float | None
    window_days: float
    sli: float | None
    budget_left: float | None
    burn_rates: dict[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def report(config: SloConfig, query: Callable[[str], float | None]) -> list[ObjectiveReport]:
    """Each configured objective's report; ``query`` runs one PromQL expression (``None`` = no data)."""
    window = window_label(round(config.window_days * 1440) * 60)
    reports = []
    for name in sorted(config.objectives):
        objective = config.objectives[name]
        ratio = query(error_ratio_query(objective, window))
        burns = {window_label(seconds): burn_rate(query(error_ratio_query(objective, window_label(seconds))),
                                                  objective.target)
                 for seconds in REPORT_WINDOWS}
        reports.append(ObjectiveReport(
            name=name, kind=objective.kind, operations=objective.operations, target=objective.target,
            threshold=objective.threshold, window_days=config.window_days,
            sli=None if ratio is None or math.isnan(ratio) else 1.0 - ratio,
            budget_left=budget_left(ratio, objective.target), burn_rates=burns))
    return reports


def _record_name(window: str) -> str:
    return f"dwray:slo_error_ratio:rate{window}"


def rules(config: SloConfig) -> dict[str, Any]:
    """Prometheus rule groups (``rules:`` file content) for the configured objectives.

    Recording rules ``dwray:slo_error_ratio:rate<W>{slo=NAME}`` for every
    window the alerts use, and one alert per objective and alert window pair:
    ``DwraySloBurnRate`` with labels ``slo``, ``severity``, ``long_window``.
    """
    windows = sorted({w.long for w in ALERT_WINDOWS} | {w.short for w in ALERT_WINDOWS})
    recording: list[dict[str, Any]] = []
    alerting: list[dict[str, Any]] = []
    for name in sorted(config.objectives):
        objective = config.objectives[name]
        labels = {"slo": name, "kind": objective.kind, "operations": objective.operations}
        for seconds in windows:
            recording.append({"record": _record_name(window_label(seconds)),
                              "expr": error_ratio_query(objective, window_label(seconds)), "labels": dict(labels)})
        budget = 1 - objective.target
        for alert in ALERT_WINDOWS:
            factor = alert.factor(config.window_days)
            long, short = window_label(alert.long), window_label(alert.short)
            threshold = f"{factor * budget:.6g}"
            expr = (f'{_record_name(long)}{{slo="{name}"}} > {threshold} '
                    f'and {_record_name(short)}{{slo="{name}"}} > {threshold}')
            alerting.append({
                "alert": "DwraySloBurnRate", "expr": expr,
                "labels": {"slo": name, "severity": alert.severity, "long_window": long},
                "annotations": {
                    "summary": f"SLO {name} burns its error budget {factor:.3g}x too fast",
                    "description": (f"{objective.kind} of {objective.operations} requests (target "
                                    f"{objective.target}): over {long} and {short} the error ratio is above "
                                    f"{threshold}, {alert.budget_share:.0%} of the {config.window_days:g}-day "
                                    "budget gone within " + long + " at this rate."),
                },
            })
    groups: list[dict[str, Any]] = []
    if recording:
        groups.append({"name": "dwray-slo-recording", "rules": recording})
        groups.append({"name": "dwray-slo-alerts", "rules": alerting})
    return {"groups": groups}
