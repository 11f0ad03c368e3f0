"""Prometheus metrics: every service serves ``/metrics`` when ``ACESTEPS_METRICS_PORT`` is set.

Services define their own metrics next to the code that updates them (``generator.metrics``,
...); this module only starts the endpoint, on ``ACESTEPS_METRICS_HOST`` (127.0.0.1 unless
told otherwise) in a background thread of prometheus_client.
"""

from __future__ import annotations

import logging

from prometheus_client import start_http_server

from acesteps.settings import CommonSettings

__all__ = ["serve_metrics"]

log = logging.getLogger(__name__)


def serve_metrics(settings: CommonSettings) -> None:
    if settings.metrics_port is None:
        return
    start_http_server(settings.metrics_port, addr=settings.metrics_host)
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
