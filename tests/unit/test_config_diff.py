"""The pure half of a hot reload: diffs by dotted path, redaction, what may change live, the children's plan."""
from __future__ import annotations

import json

import pytest

from dwray.config import DwrayConfig
from dwray.core.config_diff import (
    REDACTED,
    ChildPlan,
    diff_configs,
    frozen_changes,
    plan_children,
    redact,
    summarize,
)
from dwray.core.supervision import ChildSpec


def _dump(**sections: object) -> dict:
    return DwrayConfig.model_validate(sections).model_dump(mode="json")


def test_diff_names_each_changed_leaf_by_dotted_path() -> None:
    old = _dump()
    new = _dump(gateway={"rate_limit": {"tenant_rate": 5, "tenants": {"acme": {"rate": 1, "burst": 2}}}},
                logging={"level": "DEBUG"})
    changes = {change.path: change for change in diff_configs(old, new)}
    assert set(changes) == {"gateway.rate_limit.tenant_rate", "gateway.rate_limit.tenants.acme.rate",
                            "gateway.rate_limit.tenants.acme.burst", "logging.level"}
    assert (changes["gateway.rate_limit.tenant_rate"].old, changes["gateway.rate_limit.tenant_rate"].new) == \
        (1000.0, 5.0)
    assert changes["gateway.rate_limit.tenants.acme.rate"].added
    assert changes["logging.level"].describe() == "logging.level: 'INFO' -> 'DEBUG'"
    assert diff_configs(old, old) == []
    removed = diff_configs(new, old)
    assert {c.path for c in removed if c.removed} == {"gateway.rate_limit.tenants.acme.rate",
                                                      "gateway.rate_limit.tenants.acme.burst"}


def test_secret_refs_show_as_refs_and_secret_values_never() -> None:
    old = _dump(kms={"token": "secret://env/OLD_TOKEN"},
                plugins={"catalog": {"env_vars": {"PGPASSWORD": "hunter2-old"}}},
                tracing={"headers": {"x-api-key": "secret://env/API_KEY"}},
                backends={"pg": {"kind": "postgres", "dsn": "secret://env/PG_DSN"}})
    new = _dump(kms={"token": "secret://env/NEW_TOKEN"},
                plugins={"catalog": {"env_vars": {"PGPASSWORD": "hunter2-new"}}},
                tracing={"headers": {"x-api-key": "secret://env/OTHER_KEY"}},
                backends={"pg": {"kind": "postgres", "dsn": "secret://env/PG_DSN2"}})
    changes = {change.path: change for change in diff_configs(old, new)}
    assert (changes["kms.token"].old, changes["kms.token"].new) == ("secret://env/OLD_TOKEN",
                                                                   "secret://env/NEW_TOKEN")
    assert changes["tracing.headers.x-api-key"].new == "secret://env/OTHER_KEY"
    env = changes["plugins.catalog.env_vars.PGPASSWORD"]
    assert (env.old, env.new) == (REDACTED, REDACTED)
    text = json.dumps([c.as_dict() for c in changes.values()]) + summarize(list(changes.values()))
    assert "hunter2" not in text


def test_redact_hides_url_passwords_and_values_in_secret_places() -> None:
    assert redact("postgresql://user:pw@db:5432/x") == "postgresql://***@db:5432/x"
    assert redact("plain", secret=True) == REDACTED
    assert redact("secret://vault/kv/db#password", secret=True) == "secret://vault/kv/db#password"
    assert redact(None, secret=True) is None
    assert redact(12) == 12


def test_frozen_changes_name_what_a_running_warehouse_cannot_take() -> None:
    old = _dump()
    new = _dump(data_dir="/elsewhere", runtime={"namespace": "other"}, gateway={"port": 9000, "rate_limit": {
        "key_rate": 3}}, storage={"root": "/blobs2"}, scrub={"interval": 60}, logging={"level": "ERROR"})
    changes = diff_configs(old, new)
    assert frozen_changes(changes) == ["data_dir", "gateway.port", "runtime.namespace", "storage.root"]
    live_only = [c for c in changes if c.path in {"gateway.rate_limit.key_rate", "scrub.interval", "logging.level"}]
    assert frozen_changes(live_only) == []


def _spec(child_id: str, **fields: object) -> ChildSpec:
    return ChildSpec(id=child_id, plugin=f"service.{child_id}", **fields)


def test_plan_sorts_children_into_same_live_and_restart() -> None:
    running = [_spec("settings", config={"a": 1}), _spec("catalog", config={"busy": 1}),
               _spec("identity"), _spec("audit"), _spec("kms:local")]
    new = [_spec("settings", config={"a": 2}), _spec("catalog", config={"busy": 1}, call_timeout=5.0),
           _spec("identity"), _spec("audit", logging={"level": "DEBUG"}), _spec("kms:local")]
    plan = plan_children(running, new)
    assert plan == ChildPlan(same=("identity", "kms:local"), live=("catalog", "audit"), restart=("settings",),
                             telemetry=("audit",))
    assert plan.changed == ("catalog", "audit", "settings")


def test_plan_refuses_plugins_added_or_removed() -> None:
    running = [_spec("settings"), _spec("scrubber")]
    with pytest.raises(ValueError, match="would add housekeeper; would remove scrubber"):
        plan_children(running, [_spec("settings"), _spec("housekeeper")])


def test_summary_is_bounded() -> None:
    old = _dump()
    new = _dump(plugins={f"p{n}": {"call_timeout": 1 + n} for n in range(200)})
    changes = diff_configs(old, new)
    text = summarize(changes, limit=300)
    assert len(text) <= 300 and text.endswith(f"({len(changes)} changes)")
    assert summarize([]) == "no change"
