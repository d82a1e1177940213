"""``dw up`` / ``dw down`` and the commands that call the running gateway's admin API.

``dw up`` runs in the foreground until Ctrl-C or SIGTERM, then drains and
stops. ``dw tenant``, ``dw key``, ``dw admin-token`` and ``dw plugin`` find the
gateway started from the same data dir (``gateway.json`` in ``DATA_DIR/gateway``
and the 0600 token file ``GatewayFiles.admin_token``, outside the data dir), or take ``--endpoint`` and
``--admin-token-file`` (or ``DWRAY_ADMIN_TOKEN``): never a token on the command line.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from dwray.cli.app import cli
from dwray.cli.output import emit, print_table, stderr, stdout
from dwray.cli.state import State, command, command_config
from dwray.errors import ConfigError, DataDirInUse, InvalidArgument, NotReady

__all__ = ["down", "up"]


def _pid_alive(state: dict[str, Any]) -> bool:
    """Whether the gateway recorded in ``state`` (gateway.json) still runs.

    A pid alone is not enough: if 'dw up' died without cleaning up, the pid may
    since have gone to an unrelated process. So the process must also have the
    start time recorded next to the pid ("process_started", psutil's
    create_time); a file without it counts as not running. A zombie (exited,
    not yet reaped) does not run either.
    """
    import psutil

    try:
        pid, started = int(state["pid"]), float(state["process_started"])
    except (KeyError, TypeError, ValueError):
        return False
    try:
        process = psutil.Process(pid)
        # create_time is rounded differently by different reads; 10 ms tells two processes apart.
        return process.status() != psutil.STATUS_ZOMBIE and abs(process.create_time() - started) <= 0.01
    except (psutil.NoSuchProcess, ValueError):
        return False
    except psutil.AccessDenied:
        # 'dw up' runs as this user; a process this user may not inspect is not it.
        return False


@command(cli, "up")
@click.option("--host", default=None, help="address to listen on (default 127.0.0.1; env DWRAY_GATEWAY__HOST)")
@click.option("--port", type=int, default=None, help="port to listen on (default 8000; env DWRAY_GATEWAY__PORT)")
@click.option("--data-dir", "up_data_dir", type=click.Path(path_type=Path), default=None,
              help="warehouse data folder (default ./dwray-data; env DWRAY_DATA_DIR)")
@click.option("--replicas", type=int, default=None, help="gateway replicas (env DWRAY_GATEWAY__REPLICAS)")
@click.option("--address", default=None,
              help="Ray cluster to run on (default: the one on this machine, else a new local one)")
@click.option("--tls-cert", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="PEM certificate chain: serve HTTPS (env DWRAY_GATEWAY__TLS_CERT)")
@click.option("--tls-key", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="PEM private key of --tls-cert, mode 0600 (env DWRAY_GATEWAY__TLS_KEY)")
@click.option("--watch-config", is_flag=True,
              help="reload the config file whenever it changes (SIGHUP reloads it too)")
@click.option("--no-dashboard", is_flag=True,
              help="start Ray without its dashboard (else on 127.0.0.1; [runtime] dashboard = false)")
def up(state: State, as_json: bool, host: str | None, port: int | None, up_data_dir: Path | None,
       replicas: int | None, address: str | None, tls_cert: Path | None, tls_key: Path | None,
       watch_config: bool, no_dashboard: bool) -> None:
    """Start Ray, the warehouse and the S3 gateway; serve until Ctrl-C or SIGTERM, then drain and stop.

    SIGHUP (or 'dw config reload') reloads the config file; --watch-config reloads it on every change."""
    from dwray.core.datadir_lock import DataDirLock
    from dwray.core.gateway_files import GatewayFiles
    from serve_apps.launch import start_gateway, stop_gateway

    if up_data_dir is not None:
        state.data_dir = up_data_dir
    config = command_config(state, host=host, port=port, replicas=replicas, tls_cert=tls_cert, tls_key=tls_key)
    runtime_update: dict[str, Any] = {}
    if no_dashboard:
        runtime_update["dashboard"] = False
    if "defer_optional" not in config.runtime.model_fields_set:
        runtime_update["defer_optional"] = True  # a gateway ready sooner: see [runtime] defer_optional
    config = config.model_copy(update={"runtime": config.runtime.model_copy(update=runtime_update)})
    from dwray.core.telemetry import configure_telemetry

    configure_telemetry(config.tracing, config.logging, "dw-up", config=config, degrade=True)
    files = GatewayFiles(config.data_dir.resolve() / "gateway")
    running_state = files.read_state()
    # A stale gateway.json (its 'dw up' was killed) is simply overwritten by this start.
    if running_state is not None and _pid_alive(running_state):
        raise NotReady(f"a gateway already runs for {config.data_dir} (pid {running_state['pid']}, "
                       f"{running_state.get('endpoint')}); stop it with 'dw down'")
    # Said now rather than after Ray has started. A Ray warehouse holding the data dir
    # is left to start_gateway: in this Ray namespace it is the one the gateway serves.
    holder = DataDirLock(config.data_dir).holder()
    if holder is not None and holder.ray is None:
        raise DataDirInUse(str(config.data_dir), holder.describe())
    if watch_config and state.config is None:
        raise ConfigError("--watch-config needs a config file (--config or DWRAY_CONFIG)", "dw up")
    stop = threading.Event()
    with stderr.status("starting Ray, the warehouse and the gateway ..."):
        running = start_gateway(config, address=address)
    from actors.config_reload import UpReloader

    reloader = UpReloader(running.config, running.supervisor, state.config, watch=watch_config)
    # After Ray's start, which installs handlers of its own.
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    # SIGHUP only asks for a reload: dw up's loop below runs it (a handler must not make Ray calls).
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, reloader.on_sighup)
    try:
        first = running.first_start
        info: dict[str, Any] = {"endpoint": running.endpoint, "data_dir": str(running.config.data_dir),
                                "pid": os.getpid(), "admin_token_file": str(running.files.admin_token),
                                "dashboard": running.extra.get("dashboard"),
                                "dashboard_sign_in": running.extra.get("dashboard_sign_in"),
                                "startup_seconds": running.extra.get("startup", {})}
        if first is not None:
            info["first_start"] = {"tenant": first.tenant, "access_key_id": first.access_key.access_key_id,
                                   "secret_access_key": first.access_key.secret_access_key,
                                   "admin_token": first.admin_token}
        emit(as_json, info, lambda: _print_up(info))
        while not stop.wait(0.5):
            reloader.poll()
        stderr.print("draining ...", highlight=False)
        report = stop_gateway(running)
        emit(as_json, {"stopped": True, "drained": report.get("drained", False)},
             lambda: stdout.print(f"stopped ({'drained' if report.get('drained') else 'drain timed out'})",
                                  highlight=False))
    finally:
        reloader.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _print_up(info: dict[str, Any]) -> None:
    stdout.print(f"dwray gateway on {info['endpoint']}  (data: {info['data_dir']}, pid {info['pid']})",
                 highlight=False)
    startup = info.get("startup_seconds") or {}
    if startup:
        steps = ", ".join(f"{step} {seconds:.1f}" for step, seconds in startup.items())
        stdout.print(f"ready in {sum(startup.values()):.1f} s ({steps})", highlight=False)
    if info.get("dashboard"):
        sign_in = f"; sign in with {info['dashboard_sign_in']}" if info.get("dashboard_sign_in") else ""
        stdout.print(f"Ray dashboard      {info['dashboard']}  (loopback only{sign_in})", highlight=False)
    first = info.get("first_start")
    if first is not None:
        stdout.print("first start: these credentials are shown once, keep them", highlight=False)
        stdout.print(f"  tenant             {first['tenant']}", highlight=False)
        stdout.print(f"  access key id      {first['access_key_id']}", highlight=False)
        stdout.print(f"  secret access key  {first['secret_access_key']}", highlight=False)
        stdout.print(f"  admin token        {first['admin_token']}  (in {info['admin_token_file']}, 0600; "
                     "replaced on every start: make lasting ones with 'dw admin-token create')", highlight=False)
    stdout.print("Ctrl-C or 'dw down' stops it", highlight=False)


@command(cli, "down")
@click.option("--timeout", type=float, default=180.0, show_default=True, help="seconds to wait for it to stop")
def down(state: State, as_json: bool, timeout: float) -> None:
    """Stop the gateway started by 'dw up' for this data dir (it drains first)."""
    from dwray.core.gateway_files import GatewayFiles

    config = command_config(state)
    files = GatewayFiles(config.data_dir.resolve() / "gateway")
    running = files.read_state()
    if running is None:
        raise NotReady(f"no gateway runs for {config.data_dir}")
    if not _pid_alive(running):
        # Its 'dw up' was killed without cleaning up: never signal the pid, which may
        # belong to another process by now; just drop the stale file.
        files.state.unlink(missing_ok=True)
        raise NotReady(f"no gateway runs for {config.data_dir} "
                       f"(the recorded one, pid {running.get('pid')}, has exited)")
    pid = int(running["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(running) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _pid_alive(running):
        raise NotReady(f"the gateway (pid {pid}) did not stop within {timeout:.0f} s")
    emit(as_json, {"stopped": pid}, lambda: stdout.print(f"stopped the gateway (pid {pid})", highlight=False))


def admin_options(func: Any) -> Any:
    """``--endpoint`` and ``--admin-token-file``: the command gets ``endpoint`` and ``admin_token_file``."""
    func = click.option("--endpoint", default=None, help="gateway URL (default: the one 'dw up' started here; "
                                                          "env DWRAY_ENDPOINT)")(func)
    return click.option("--admin-token-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
                        envvar="DWRAY_ADMIN_TOKEN_FILE",
                        help="file holding the admin token, mode 0600 (env DWRAY_ADMIN_TOKEN_FILE; else env "
                             "DWRAY_ADMIN_TOKEN; else the token file dw up left)")(func)


def _admin(state: State, endpoint: str | None, admin_token_file: Path | None) -> Any:
    from dwray.cli.admin_client import discover

    return discover(command_config(state), endpoint=endpoint, token_file=admin_token_file)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    table = Table(box=None)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row.get(column, "")) for column in columns))
    print_table(table)


@cli.group("tenant")
def tenant_group() -> None:
    """Tenants (through the running gateway's admin API)."""


@command(tenant_group, "create")
@click.argument("name")
@click.option("--description", default="")
@admin_options
def tenant_create(state: State, as_json: bool, name: str, description: str, endpoint: str | None,
                  admin_token_file: Path | None) -> None:
    """Create a tenant."""
    tenant = _admin(state, endpoint, admin_token_file).post("/tenants", {"name": name, "description": description})
    emit(as_json, tenant, lambda: stdout.print(f"created tenant {tenant['name']}", highlight=False))


@command(tenant_group, "list")
@admin_options
def tenant_list(state: State, as_json: bool, endpoint: str | None, admin_token_file: Path | None) -> None:
    """List tenants."""
    tenants = _admin(state, endpoint, admin_token_file).get("/tenants")
    emit(as_json, tenants, lambda: _table(tenants, ["name", "created", "description"]))


@command(tenant_group, "rm")
@click.argument("name")
@click.option("--shred", is_flag=True,
              help="crypto-shred: remove the tenant with all its access keys and destroy every version of its "
                   "key, so that none of its data can ever be decrypted; its name cannot be used again")
@click.option("--force", is_flag=True, help="with --shred: also delete the tenant's buckets and all in them")
@admin_options
def tenant_remove(state: State, as_json: bool, name: str, shred: bool, force: bool, endpoint: str | None,
                  admin_token_file: Path | None) -> None:
    """Delete a tenant (refused for the default tenant, and while it owns buckets or active access keys),
    or crypto-shred it with --shred."""
    if force and not shred:
        raise InvalidArgument("--force goes with --shred: a plain 'dw tenant rm' never deletes data")
    if not shred:
        _admin(state, endpoint, admin_token_file).delete(f"/tenants/{name}")
        emit(as_json, {"deleted": name}, lambda: stdout.print(f"deleted tenant {name}", highlight=False))
        return
    report = _admin(state, endpoint, admin_token_file).post(f"/tenants/{name}/shred", force=str(force).lower())
    emit(as_json, report, lambda: _print_shred(report))


def _print_shred(report: dict[str, Any]) -> None:
    versions = ", ".join(str(version) for version in report["kek_versions_destroyed"]) or "none left"
    stdout.print(f"shredded tenant {report['tenant']}: key {report['kek_id']} destroyed (versions: {versions}); "
                 f"{report['access_keys_removed']} access key(s), {len(report['buckets_removed'])} bucket(s), "
                 f"{report['object_versions_removed']} object version(s) and {report['blobs_deleted']} blob(s) "
                 "removed; what is left of its data, anywhere, cannot be decrypted", highlight=False)


@command(tenant_group, "rotate")
@click.argument("name")
@click.option("--rewrap", is_flag=True, help="also rewrap every data key under the new version now")
@admin_options
def tenant_rotate(state: State, as_json: bool, name: str, rewrap: bool, endpoint: str | None,
                  admin_token_file: Path | None) -> None:
    """Rotate a tenant's key-encryption key."""
    result = _admin(state, endpoint, admin_token_file).post(f"/tenants/{name}/rotate", rewrap=str(rewrap).lower())
    emit(as_json, result, lambda: stdout.print(
        f"tenant {name}: KEK version {result['kek_version']}, {result['rewrapped']} data keys rewrapped",
        highlight=False))


@cli.group("key")
def key_group() -> None:
    """S3 access keys (through the running gateway's admin API)."""


@command(key_group, "create")
@click.option("--tenant", "key_tenant", required=True, help="tenant the key acts for")
@click.option("--description", default="")
@click.option("--policy", "policy_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="IAM policy JSON file limiting what the key may do ('-': standard input)")
@click.option("--read-only", is_flag=True, help="reads and listings only (with --bucket: of that bucket only)")
@click.option("--bucket", default=None, help="only this bucket and its objects")
@admin_options
def key_create(state: State, as_json: bool, key_tenant: str, description: str, policy_file: Path | None,
               read_only: bool, bucket: str | None, endpoint: str | None, admin_token_file: Path | None) -> None:
    """Create an access key; its secret is printed once. Without --policy, --read-only or --bucket
    the key has its tenant's full rights."""
    policy = _key_policy(policy_file, read_only, bucket)
    body: dict[str, Any] = {"tenant": key_tenant, "description": description}
    if policy is not None:
        body["policy"] = policy.document()
    new = _admin(state, endpoint, admin_token_file).post("/keys", body)
    emit(as_json, {"access_key_id": new["access_key_id"], "secret_access_key": new["secret_access_key"],
                   "scope": new.get("scope", "full")},
         lambda: stdout.print(f"access key id      {new['access_key_id']}\n"
                              f"secret access key  {new['secret_access_key']}\n"
                              f"tenant             {new['tenant']}\n"
                              f"scope              {new.get('scope', 'full')}", highlight=False))


def _key_policy(policy_file: Path | None, read_only: bool, bucket: str | None) -> Any:
    """The policy the options ask for (checked here, so a mistake is named before the gateway is asked)."""
    from dwray.core.policy import AccessPolicy

    if policy_file is not None:
        if read_only or bucket is not None:
            raise InvalidArgument("give --policy, or --read-only and/or --bucket, not both")
        try:
            text = click.get_text_stream("stdin").read() if str(policy_file) == "-" else policy_file.read_text()
        except OSError as error:
            raise InvalidArgument(f"cannot read the policy file {policy_file}: {error.strerror}") from None
        return AccessPolicy.parse(text)
    if bucket is not None:
        return AccessPolicy.for_bucket(bucket, read_only=read_only)
    return AccessPolicy.read_only() if read_only else None


@command(key_group, "list")
@click.option("--tenant", "key_tenant", default=None, help="only this tenant's keys")
@admin_options
def key_list(state: State, as_json: bool, key_tenant: str | None, endpoint: str | None,
             admin_token_file: Path | None) -> None:
    """List access keys (never their secrets)."""
    keys = _admin(state, endpoint, admin_token_file).get("/keys", tenant=key_tenant)
    emit(as_json, keys, lambda: _table(keys, ["access_key_id", "tenant", "revoked", "created", "scope",
                                              "description"]))


@command(key_group, "revoke")
@click.argument("access_key_id")
@admin_options
def key_revoke(state: State, as_json: bool, access_key_id: str, endpoint: str | None,
               admin_token_file: Path | None) -> None:
    """Revoke an access key."""
    if not access_key_id.strip():
        raise InvalidArgument("name the access key id to revoke")
    _admin(state, endpoint, admin_token_file).delete(f"/keys/{access_key_id}")
    emit(as_json, {"revoked": access_key_id}, lambda: stdout.print(f"revoked {access_key_id}", highlight=False))


@cli.group("plugin")
def plugin_group() -> None:
    """Plugins: the running warehouse's (list, restart) and their provenance (keygen, sign, verify, discover)."""


@command(plugin_group, "list")
@admin_options
def plugin_list(state: State, as_json: bool, endpoint: str | None, admin_token_file: Path | None) -> None:
    """Each plugin's state, generation and restarts."""
    tree = _admin(state, endpoint, admin_token_file).get("/plugins")
    emit(as_json, tree, lambda: _table(tree["children"], ["id", "plugin", "state", "generation", "restarts",
                                                          "last_failure"]))


@command(plugin_group, "restart")
@click.argument("child_id")
@admin_options
def plugin_restart(state: State, as_json: bool, child_id: str, endpoint: str | None,
                   admin_token_file: Path | None) -> None:
    """Restart one plugin."""
    result = _admin(state, endpoint, admin_token_file).post(f"/plugins/{child_id}/restart")
    emit(as_json, result, lambda: stdout.print(f"restarted {child_id} (generation {result['generation']})",
                                               highlight=False))
