"""``python -m listener``: the chain listener (settings -> clients -> poller -> loop)."""

from __future__ import annotations

import asyncio
import logging
import signal

from acesteps.settings import ConfigError, load_settings
from listener.chainservice import run_chain_listener
from listener.settings import ListenerSettings


async def _main(settings: ListenerSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run_chain_listener(settings, stop)


def main() -> int:
    settings = load_settings(ListenerSettings)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(_main(settings))
    except ConfigError as exc:
        logging.getLogger("listener").error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
