"""The chain listener as a real process, and reading what it wrote: for the listener's and the
reorg tests."""

from __future__ import annotations

from typing import Any

from acesteps.dev.localstack import StackSettings
from acesteps.messages import TYPE_HEADER, ListenerCheckpoint, decode
from acesteps.settings import CommonSettings
from tests.integration.anvil import Anvil
from tests.integration.kafkaread import eventually, read_all
from tests.integration.services import ServiceProcess

__all__ = ["ListenerProcess", "checkpoint", "of_type", "requests_topic", "wait_checkpoint"]


class ListenerProcess(ServiceProcess):
    """``python -m listener`` with its settings in the environment; log kept for failures."""

    def __init__(
        self, settings: CommonSettings, anvil: Anvil | str, contract: str, **extra: object
    ):
        env = {
            "ACESTEPS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "ACESTEPS_TOPIC_PREFIX": settings.topic_prefix,
            "ACESTEPS_RPC_URL": anvil if isinstance(anvil, str) else anvil.url,
            "ACESTEPS_CONTRACT_ADDRESS": contract,
            "ACESTEPS_LISTENER_POLL_INTERVAL_S": "0.1",
            "ACESTEPS_API_ENABLED": "false",  # the chain half only
            "ACESTEPS_LISTENER_RPC_BACKOFF_MAX_S": "1",
            **{f"ACESTEPS_LISTENER_{k.upper()}": str(v) for k, v in extra.items()},
        }
        log = StackSettings().log_dir / f"listener-{settings.topic_prefix}.log"
        super().__init__("listener", env, log)


async def requests_topic(settings: CommonSettings) -> list[Any]:
    return await read_all(settings.kafka_bootstrap, settings.topics.requests)


def of_type(records: list[Any], kind: type) -> list[Any]:
    return [
        decode(kind, r.value)
        for r in records
        if dict(r.headers)[TYPE_HEADER] == kind.__name__.encode()
    ]


async def checkpoint(settings: CommonSettings) -> int:
    records = await read_all(settings.kafka_bootstrap, settings.topics.checkpoints)
    return decode(ListenerCheckpoint, records[-1].value).block_number if records else -1


async def wait_checkpoint(
    settings: CommonSettings, block: int, proc: ListenerProcess, timeout_s: float = 60
) -> None:
    async def reached() -> bool:
        assert proc.alive(), f"listener exited:\n{proc.tail()}"
        return await checkpoint(settings) >= block

    await eventually(reached, timeout_s, f"checkpoint at block {block}", interval_s=0.3)
