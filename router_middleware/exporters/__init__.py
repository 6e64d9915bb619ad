"""Exporters: the router's metrics in a monitoring system's own format.

Each exporter is an :class:`~router_middleware.Observer` with its own optional
dependency, imported only when its name is first read: ``import router_middleware`` (or
this package) never imports ``prometheus_client``.

- :class:`PrometheusExporter` (``pip install 'router-middleware[prometheus]'``):
  counters and histograms from the router's events, gauges read at scrape time.
- :class:`OpenTelemetryExporter` (``pip install 'router-middleware[otel]'``): a span
  per request, a child span per attempt, and the GenAI client metrics, through the
  OpenTelemetry API (``import router_middleware`` never imports ``opentelemetry``).

Example:
    >>> from router_middleware import ResilientRouter
    >>> from router_middleware.exporters import PrometheusExporter, instrument
    >>> exporter = instrument(ResilientRouter({"a": lambda request: "hi"}))
    >>> isinstance(exporter, PrometheusExporter)
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from .._router import ResilientRouter
    from ._otel import OpenTelemetryExporter
    from ._prometheus import PrometheusExporter

__all__ = ["OpenTelemetryExporter", "PrometheusExporter", "instrument"]


def instrument(
    router: ResilientRouter, registry: CollectorRegistry | None = None
) -> PrometheusExporter:
    """Attach a new :class:`PrometheusExporter` to ``router`` and return it."""
    from ._prometheus import PrometheusExporter

    return PrometheusExporter.attach(router, registry)


def __getattr__(name: str) -> Any:
    if name == "PrometheusExporter":
        from ._prometheus import PrometheusExporter

        return PrometheusExporter
    if name == "OpenTelemetryExporter":
        from ._otel import OpenTelemetryExporter

        return OpenTelemetryExporter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
