"""Config of where blobs go: [storage] kinds, [backends], [pools], [placement], [scrub], and DWRAY_* for each."""
from __future__ import annotations

from pathlib import Path

import pytest

from dwray.config import load_config
from dwray.core.storage_setup import spec_secret_refs, target_spec
from dwray.errors import ConfigError

POOLS = """
data_dir = "{data}"
[backends.disk1]
kind = "local"
root = "{data}/a"
[backends.disk2]
kind = "local"
[backends.cold]
kind = "s3"
bucket = "archive"
endpoint = "http://127.0.0.1:9"
access_key = "AKIDEXAMPLE"
secret_key = "secret://env/COLD_SECRET"
[backends.warm]
kind = "sqlite"
[pools.safe]
kind = "mirror"
members = ["disk1", "disk2"]
write_quorum = 1
[pools.aging]
kind = "tiered"
hot = "warm"
cold = "cold"
after_days = 30
hot_max_bytes = "1GiB"
[placement]
default = "safe"
tenants = {{ acme = "aging" }}
buckets = {{ "acme/logs" = "safe", scratch = "local" }}
"""


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "dwray.toml"
    path.write_text(text.replace("{data}", str(tmp_path / "data")).replace("{{", "{").replace("}}", "}"))
    return load_config(path, env=env or {})


def test_pools_and_placement_resolve(tmp_path: Path) -> None:
    config = _load(tmp_path, POOLS)
    assert config.storage_targets == ["local", "safe", "aging"]
    assert config.placement_target("acme", "logs") == "safe"  # tenant/bucket beats the tenant's rule
    assert config.placement_target("acme", "other") == "aging"
    assert config.placement_target("zeta", "scratch") == "local"  # a bucket name in every tenant
    assert config.placement_target("zeta", "any") == "safe"
    mirror = target_spec(config, "safe")
    assert mirror["kind"] == "mirror" and mirror["write_quorum"] == 1
    assert mirror["members"]["disk1"]["root"] == str((tmp_path / "data" / "a").resolve())
    assert mirror["members"]["disk2"]["root"] == str((tmp_path / "data" / "backends" / "disk2").resolve())
    assert mirror["index"] == str((tmp_path / "data" / "pools" / "safe.db").resolve())
    tiered = target_spec(config, "aging")
    assert tiered["after_seconds"] == 30 * 86400 and tiered["hot_max_bytes"] == 1 << 30
    assert tiered["hot"]["path"].endswith("backends/warm.sqlite")
    # Specs carry references only: they may be an actor's arguments.
    assert spec_secret_refs(tiered) == ["secret://env/COLD_SECRET"]
    assert "AKIDEXAMPLE" in str(tiered) and "secret://env/COLD_SECRET" in str(tiered)


def test_storage_alone_keeps_its_meaning(tmp_path: Path) -> None:
    config = _load(tmp_path, f'data_dir = "{tmp_path}"\n[storage]\nbackend = "sqlite"\n')
    assert config.storage_targets == ["sqlite"] and config.default_target == "sqlite"
    assert target_spec(config, "sqlite") == {"kind": "sqlite", "path": str((tmp_path / "blobs.sqlite").resolve())}


def test_storage_fields_through_the_environment(tmp_path: Path) -> None:
    env = {"DWRAY_STORAGE__BACKEND": "s3", "DWRAY_STORAGE__BUCKET": "blobs", "DWRAY_STORAGE__ENDPOINT":
           "http://127.0.0.1:8333", "DWRAY_STORAGE__PREFIX": "wh1/", "DWRAY_STORAGE__REGION": "eu-west-1",
           "DWRAY_STORAGE__ACCESS_KEY": "secret://env/AK", "DWRAY_STORAGE__SECRET_KEY": "secret://env/SK",
           "DWRAY_STORAGE__ADDRESSING_STYLE": "path"}
    config = load_config(None, env=env)
    spec = target_spec(config, "s3")
    assert (spec["bucket"], spec["endpoint"], spec["prefix"], spec["region"], spec["addressing_style"]) == (
        "blobs", "http://127.0.0.1:8333", "wh1/", "eu-west-1", "path")
    assert spec_secret_refs(spec) == ["secret://env/SK", "secret://env/AK"]
    pg = load_config(None, env={"DWRAY_STORAGE__BACKEND": "postgres", "DWRAY_STORAGE__DSN": "secret://env/PG"})
    assert target_spec(pg, "postgres")["dsn"] == "secret://env/PG"


@pytest.mark.parametrize(("text", "message"), [
    ('[storage]\nbackend = "s3"\n', "needs 'bucket'"),
    ('[storage]\nbackend = "postgres"\n', "needs 'dsn'"),
    ('[storage]\nbackend = "local"\ndsn = "secret://env/X"\n', "'dsn' applies to backend kind postgres"),
    ('[storage]\nbackend = "s3"\nbucket = "abc"\naccess_key = "AK"\n', "both 'access_key' and 'secret_key'"),
    ('[backends.a]\nkind = "local"\n[pools.p]\nkind = "mirror"\nmembers = ["a"]\n', "at least 2 members"),
    ('[backends.a]\nkind = "local"\n[pools.p]\nkind = "mirror"\nmembers = ["a", "b"]\n', "'b' is not a backend"),
    ('[backends.a]\nkind = "local"\n[backends.b]\nkind = "local"\n[pools.p]\nkind = "mirror"\n'
     'members = ["a", "b"]\nwrite_quorum = 3\n', "more than the 2 members"),
    ('[backends.a]\nkind = "local"\n[backends.b]\nkind = "local"\n[pools.p]\nkind = "tiered"\nhot = "a"\n'
     'cold = "b"\n', "'after_days', 'hot_max_bytes' or both"),
    ('[backends.a]\nkind = "local"\n[backends.b]\nkind = "local"\n[pools.p]\nkind = "mirror"\n'
     'members = ["a", "b"]\nhot = "a"\n', "hot do not apply to a mirror pool"),
    ('[backends.a]\nkind = "local"\n[backends.b]\nkind = "local"\n[pools.p]\nkind = "mirror"\n'
     'members = ["a", "b"]\n[placement]\ndefault = "a"\n', "member of pool 'p'"),
    ('[placement]\ndefault = "nowhere"\n', "'nowhere' is not a pool or backend"),
    ('[backends.local]\nkind = "memory"\n', "the name is taken"),
    ('[backends.Disk]\nkind = "memory"\n', "a name is 1-32 of a-z"),
])
def test_bad_storage_config_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        _load(tmp_path, text)
    assert "dwray.toml" in str(caught.value)


def test_secret_values_are_refused_where_references_belong(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, '[storage]\nbackend = "s3"\nbucket = "abc"\naccess_key = "AK"\nsecret_key = "hunter2xyz"\n')
    assert "hunter2xyz" not in str(caught.value) and "storage.secret_key" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, '[storage]\nbackend = "postgres"\ndsn = "postgresql://dw:pw123456@db/x"\n')
    assert "pw123456" not in str(caught.value)
