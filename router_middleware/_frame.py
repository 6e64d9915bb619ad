"""The metrics view as a pandas DataFrame, for notebooks: one row per provider.

pandas (the ``notebook`` extra) is imported only when a frame is asked for.

Example:
    >>> from router_middleware import FakeClock, ResilientRouter
    >>> from router_middleware.testing import ScriptedChatModel
    >>> router = ResilientRouter({"a": ScriptedChatModel()}, clock=FakeClock())
    >>> _ = router.invoke("hi")
    >>> frame = router.metrics_frame()
    >>> list(frame.index), int(frame.loc["a", "total_requests"])
    (['a'], 1)
    >>> frame.loc["a", "circuit_breaker_state"]
    'closed'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas

__all__ = ["flatten", "metrics_frame"]


def flatten(row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``row`` with nested mappings spread into ``outer.inner`` keys (a column each).

    Example:
        >>> flatten({"cost": 0.5, "context_refused_at": {"gpt-4o": 9000}})
        {'cost': 0.5, 'context_refused_at.gpt-4o': 9000}
    """
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def metrics_frame(snapshot: Mapping[str, Any]) -> pandas.DataFrame:
    """The ``providers`` of a ``router.metrics()`` snapshot as a DataFrame indexed by
    provider name; a column a provider lacks (``token_headroom`` without token limits)
    is missing (NaN) in its row."""
    try:
        import pandas
    except ImportError as exc:
        raise ImportError(
            "metrics_frame() needs pandas: pip install 'router-middleware[notebook]'"
        ) from exc
    rows = {name: flatten(m) for name, m in snapshot["providers"].items()}
    frame = pandas.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "provider"
    return frame
