"""The one entry-point shape of every service: settings -> logging -> run until a signal.

``python -m listener`` / ``generator`` / ``publisher`` each call `main` with their settings
class and their ``run(settings, stop)``; SIGINT and SIGTERM set ``stop`` so the service
finishes the batch in progress and closes its clients.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

from acesteps import logs
from acesteps.kafka import connection as kafka_connection
from acesteps.kafka import schema_registry
from acesteps.metrics import serve_metrics
from acesteps.settings import CommonSettings, ConfigError, load_settings

__all__ = ["main"]

S = TypeVar("S", bound=CommonSettings)


def main(
    name: str, settings_cls: type[S], run: Callable[[S, asyncio.Event], Awaitable[None]]
) -> int:
    settings = load_settings(settings_cls)  # bad configuration exits 2 before connecting
    logs.configure(name, settings.log_level, settings.log_format)

    kafka_connection.configure(settings.kafka_security())
    try:
        schema_registry.configure(settings.schema_registry_url or None)
    except schema_registry.RegistryError as exc:
        logging.getLogger(name).error("schema registry: %s", exc)
        return 1
    serve_metrics(settings)

    async def _run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run(settings, stop)

    try:
        asyncio.run(_run())
    except ConfigError as exc:
        logging.getLogger(name).error("%s", exc)
        return 2
    return 0
