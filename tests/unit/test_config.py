"""Config: TOML file plus DWRAY_* overrides; every error names the field and its source."""
from __future__ import annotations

from pathlib import Path

import pytest

from dwray.config import DwrayConfig, load_config, parse_size
from dwray.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dwray.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    config = load_config(env={})
    assert config == DwrayConfig()
    assert config.data_dir == Path("dwray-data")
    assert config.blob_root == Path("dwray-data/blobs")
    assert config.catalog_path == Path("dwray-data/catalog.db")
    assert config.keyring_path == Path("dwray-data/keys/keyring.json")
    assert config.pipeline.frame_size == 1 << 20
    assert config.catalog.synchronous == "FULL"
    assert config.storage.backend == "local"


def test_file_and_environment_override(tmp_path: Path) -> None:
    path = write(tmp_path, 'data_dir = "/srv/dw"\n[pipeline]\nframe_size = "4MiB"\nzstd_level = 3\n'
                           '[storage]\nbackend = "memory"\nmemory_max_bytes = "1GiB"\n')
    config = load_config(path, env={"DWRAY_PIPELINE__ZSTD_LEVEL": "5", "DWRAY_SWEEPER__GRACE_SECONDS": "60"})
    assert config.data_dir == Path("/srv/dw")
    assert config.pipeline.frame_size == 4 << 20
    assert config.pipeline.zstd_level == 5  # the environment wins over the file
    assert config.sweeper.grace_seconds == 60
    assert config.storage.memory_max_bytes == 1 << 30


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, 'default_tenant = "acme"\n')
    assert load_config(env={"DWRAY_CONFIG": str(path)}).default_tenant == "acme"


def test_unknown_key_in_file_names_field_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[pipeline]\nframe_sise = 4096\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    message = str(caught.value)
    assert "pipeline.frame_sise" in message and "unknown field" in message and str(path) in message


def test_bad_value_names_field_and_file_without_echoing_it(tmp_path: Path) -> None:
    path = write(tmp_path, '[pipeline]\nframe_size = "hunter2-MiB"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    message = str(caught.value)
    assert "pipeline.frame_size" in message and str(path) in message
    assert "hunter2" not in message


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env={"DWRAY_STORAGE__BACKEND": "floppy"})
    assert "storage.backend" in str(caught.value) and "DWRAY_STORAGE__BACKEND" in str(caught.value)
    with pytest.raises(ConfigError, match="unknown field"):
        load_config(env={"DWRAY_NO_SUCH_THING": "1"})
    with pytest.raises(ConfigError, match="frame_size"):
        load_config(env={"DWRAY_PIPELINE__FRAME_SIZE": "8"})  # below the minimum


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "data_dir = [unclosed\n"), env={})


def test_parse_size() -> None:
    assert parse_size("1MiB") == 1 << 20
    assert parse_size("1.5 GiB") == 3 << 29
    assert parse_size("10kb") == 10_000
    assert parse_size(123) == 123
    with pytest.raises(ValueError):
        parse_size("12 parsecs")


def test_config_is_frozen() -> None:
    config = DwrayConfig()
    with pytest.raises(Exception, match="frozen"):
        config.data_dir = Path("/elsewhere")  # type: ignore[misc]


def test_every_toml_example_in_the_readme_is_a_valid_config() -> None:
    import re
    import tomllib
    from pathlib import Path

    from dwray.config import DwrayConfig

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", readme, re.S)
    assert blocks
    for block in blocks:
        DwrayConfig.model_validate(tomllib.loads(block))
