"""Warehouse operations as OpenTelemetry spans: each is the root of its trace, whose
children are the plugin calls it makes (their hosts join the same trace)."""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace

__all__ = ["traced", "tracer", "within"]

tracer = trace.get_tracer("dwray.core.warehouse")
_F = TypeVar("_F", bound=Callable[..., Any])


def traced(operation: str) -> Callable[[_F], _F]:
    """Run a warehouse operation in a span ``dwray.<operation>``."""
    def decorate(method: _F) -> _F:
        @functools.wraps(method)
        def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            with tracer.start_as_current_span(f"dwray.{operation}", attributes={"dwray.operation": operation}):
                return method(self, *args, **kwargs)
        return run  # type: ignore[return-value]
    return decorate


def within(context: Any, chunks: Iterator[Any]) -> Iterator[Any]:
    """Iterate ``chunks`` with ``context`` current while each chunk is produced (not between)."""
    while True:
        token = otel_context.attach(context)
        try:
            chunk = next(chunks)
        except StopIteration:
            return
        finally:
            otel_context.detach(token)
        yield chunk
