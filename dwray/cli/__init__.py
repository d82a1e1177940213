"""The ``dw`` command line."""
from __future__ import annotations

from dwray.cli.app import cli


def main() -> None:
    """Entry point of the ``dw`` console script."""
    cli(prog_name="dw")


__all__ = ["cli", "main"]
