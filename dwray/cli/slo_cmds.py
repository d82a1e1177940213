"""``dw slo``: service level objectives: each objective's SLI, error budget and burn rates.

``dw slo report`` asks a Prometheus that scrapes the gateway (``--prometheus``,
else ``[slo] prometheus_url``) for each ``[slo.objectives.NAME]``: its SLI and
error budget left over ``[slo] window_days``, and its burn rates over 1 h and
6 h (:mod:`dwray.core.slo`). ``dw slo rules`` prints the Prometheus recording
and alerting rules (multi-window burn rates) for the same objectives, so the
alerts and the report always measure the same thing.
"""
from __future__ import annotations

import math
from typing import Any

import click
import yaml
from rich.table import Table

from dwray.cli.app import cli
from dwray.cli.output import emit, print_table, stdout
from dwray.cli.state import State, command, command_config
from dwray.core.slo import ObjectiveReport, report, rules
from dwray.errors import InvalidArgument

__all__ = ["prometheus_query", "slo_group"]

_QUERY_TIMEOUT = 30.0


@cli.group("slo")
def slo_group() -> None:
    """Service level objectives: each objective's SLI, error budget and burn rates."""


def prometheus_query(url: str, expression: str, timeout: float = _QUERY_TIMEOUT) -> float | None:
    """The value of an instant PromQL query at ``url`` (a scalar or one-series vector); ``None`` if empty."""
    import requests

    try:
        response = requests.get(f"{url.rstrip('/')}/api/v1/query", params={"query": expression}, timeout=timeout)
    except requests.RequestException as exc:
        raise InvalidArgument(f"Prometheus at {url} cannot be reached: {type(exc).__name__}") from None
    try:
        body = response.json()
    except ValueError:
        raise InvalidArgument(f"Prometheus at {url} answered HTTP {response.status_code}, not JSON") from None
    if response.status_code != 200 or body.get("status") != "success":
        raise InvalidArgument(f"Prometheus at {url} refused the query: {body.get('error', response.status_code)}")
    data = body.get("data") or {}
    result = data.get("result")
    if data.get("resultType") == "scalar":
        return float(result[1])
    if not result:
        return None
    if len(result) != 1:
        raise InvalidArgument(f"Prometheus at {url} answered {len(result)} series for a query that sums to one")
    value = float(result[0]["value"][1])
    return None if math.isnan(value) else value


def _percent(value: float | None, digits: int = 3) -> str:
    return "no data" if value is None else f"{value * 100:.{digits}f} %"


def _rate(value: float | None) -> str:
    return "no data" if value is None else f"{value:.2f}x"


def _print(reports: list[ObjectiveReport], url: str) -> None:
    if not reports:
        stdout.print("no objectives: add [slo.objectives.NAME] sections to the config", highlight=False)
        return
    table = Table(title=f"SLOs (from {url})")
    for column in ("objective", "kind", "operations", "target", "SLI", "budget left", "burn 1h", "burn 6h"):
        table.add_column(column, justify="left" if column in ("objective", "kind", "operations") else "right")
    for item in reports:
        kind = item.kind if item.threshold is None else f"latency <= {item.threshold:g} s"
        table.add_row(item.name, kind, item.operations, _percent(item.target), _percent(item.sli),
                      _percent(item.budget_left, 1), _rate(item.burn_rates.get("1h")),
                      _rate(item.burn_rates.get("6h")))
    print_table(table)


@command(slo_group, "report")
@click.option("--prometheus", "url", default=None, metavar="URL",
              help="the Prometheus that scrapes the gateway (default: [slo] prometheus_url)")
def report_command(state: State, as_json: bool, url: str | None) -> None:
    """Each objective's SLI and error budget left over the window, and its burn rates over 1 h and 6 h."""
    config = command_config(state)
    url = url or config.slo.prometheus_url
    if not url:
        raise InvalidArgument("no Prometheus to ask: pass --prometheus URL or set [slo] prometheus_url")
    if not url.startswith(("http://", "https://")):
        raise InvalidArgument(f"--prometheus must be an http:// or https:// URL, got {url!r}")
    reports = report(config.slo, lambda expression: prometheus_query(url, expression))
    emit(as_json, {"prometheus": url, "window_days": config.slo.window_days,
                   "objectives": [item.to_dict() for item in reports]}, lambda: _print(reports, url))


@command(slo_group, "rules")
def rules_command(state: State, as_json: bool) -> None:
    """Print the Prometheus recording and burn-rate alerting rules for the configured objectives (YAML)."""
    config = command_config(state)
    if not config.slo.objectives:
        raise InvalidArgument("no objectives to make rules for: add [slo.objectives.NAME] sections to the config")
    content: dict[str, Any] = rules(config.slo)
    if as_json:
        emit(True, content, lambda: None)
    else:
        click.echo(rules_yaml(content), nl=False)


def rules_yaml(content: dict[str, Any]) -> str:
    """``content`` as the rule file's YAML (a header saying where it comes from)."""
    header = ("# dwray SLO rules, printed by `dw slo rules` from the config's [slo] section:\n"
              "# print them again whenever the objectives change.\n")
    return header + yaml.safe_dump(content, sort_keys=False, width=4096)
