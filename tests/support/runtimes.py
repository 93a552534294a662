"""An operator runtime without clients, for tests of the handlers' own
bookkeeping (wake-ups, waits) that never reach the API server."""

from __future__ import annotations

from typing import Any, cast

from modelgate import handlers
from modelgate.settings import OperatorSettings


def bare_runtime(**parts: Any) -> handlers.Runtime:
    """A Runtime whose clients, store, runner and delivery are None unless given."""
    defaults: dict[str, Any] = {
        "clients": None,
        "store": None,
        "runner": None,
        "delivery": None,
    }
    defaults.update(parts)
    return handlers.Runtime(settings=OperatorSettings(), **cast(Any, defaults))
