"""The ``dw`` command line."""
from __future__ import annotations

from dwray.cli import admin_token_cmds as _admin_token_cmds  # noqa: F401 - registers admin-token
from dwray.cli import audit_cmds as _audit_cmds  # noqa: F401 - registers audit
from dwray.cli import config_cmds as _config_cmds  # noqa: F401 - registers config
from dwray.cli import events_cmds as _events_cmds  # noqa: F401 - registers events
from dwray.cli import gateway_cmds as _gateway_cmds  # noqa: F401 - registers up/down/tenant/key/plugin
from dwray.cli import plugin_cmds as _plugin_cmds  # noqa: F401 - registers plugin keygen/sign/verify/discover
from dwray.cli import quota_cmds as _quota_cmds  # noqa: F401 - registers quota
from dwray.cli import scrub_cmds as _scrub_cmds  # noqa: F401 - registers scrub
from dwray.cli import slo_cmds as _slo_cmds  # noqa: F401 - registers slo
from dwray.cli.app import cli
from dwray.cli.dev_cmd import dev_command

cli.add_command(dev_command)  # dw dev: dw up with request logs, restarted on code changes


def main() -> None:
    """Entry point of the ``dw`` console script."""
    cli(prog_name="dw")


__all__ = ["cli", "main"]
