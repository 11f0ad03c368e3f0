"""``python -m listener``: the chain listener and the HTTP API, side by side in one process.

Either half can be turned off (``ACESTEPS_LISTENER_CHAIN_ENABLED``, ``ACESTEPS_API_ENABLED``):
an API replica next to another listener needs only the API; the chain half's transactional
id fences a second copy anyway. If one half fails, the other is stopped and the process
exits non-zero.
"""

from __future__ import annotations

import asyncio

from acesteps.settings import ConfigError
from listener.api.service import run_api
from listener.chainservice import run_chain_listener
from listener.settings import ListenerSettings

__all__ = ["run_listener"]


async def run_listener(settings: ListenerSettings, stop: asyncio.Event) -> None:
    if not (settings.listener_chain_enabled or settings.api_enabled):
        raise ConfigError("both ACESTEPS_LISTENER_CHAIN_ENABLED and ACESTEPS_API_ENABLED are off")
    async with asyncio.TaskGroup() as group:
        if settings.listener_chain_enabled:
            group.create_task(run_chain_listener(settings, stop))
        if settings.api_enabled:
            group.create_task(run_api(settings, stop))
