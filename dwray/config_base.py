"""What every config section shares: frozen models that refuse unknown fields, and sizes with units."""
from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

__all__ = ["Section", "Size", "parse_size"]

_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
          "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: Any) -> Any:
    """Turn ``"64MiB"`` or ``"1.5GiB"`` into bytes; leave other values for pydantic to judge."""
    if isinstance(value, str):
        match = _SIZE.match(value)
        if not match or match.group(2).lower() not in _UNITS:
            raise ValueError("not a size (use bytes, or a number with a unit: KiB, MiB, GiB, TiB, KB, MB, GB, TB)")
        return int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    return value


Size = Annotated[int, BeforeValidator(parse_size)]


class Section(BaseModel):
    """A config section: unknown fields are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
