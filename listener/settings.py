"""Listener settings: the only module of the listener that reads the environment.

Variables are ``ACESTEPS_*`` (shared ones, see `acesteps.settings`) and ``ACESTEPS_LISTENER_*``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from acesteps.settings import ChainSettings

__all__ = ["ListenerSettings"]


class ListenerSettings(ChainSettings):
    model_config = SettingsConfigDict(env_prefix="ACESTEPS_", extra="ignore", frozen=True)

    listener_confirmations: int = Field(
        3, ge=0, le=1000, description="a block is processed once this many blocks follow it"
    )
    listener_block_tag: Literal["latest", "safe", "finalized"] = Field(
        "latest", description="the head that confirmations count from"
    )
    listener_start_block: int | None = Field(
        None,
        ge=1,
        description="first block to scan on the very first run "
        "(default: the deployment block from the deployment file, else 1)",
    )
    listener_max_block_range: int = Field(
        2000, ge=1, description="most blocks per eth_getLogs; halved when the node refuses"
    )
    listener_history_blocks: int = Field(
        256, ge=1, description="how far back reorgs are detected and requests revoked"
    )
    listener_poll_interval_s: float = Field(1.0, gt=0)
    listener_rpc_backoff_max_s: float = Field(30.0, gt=0)
    listener_transactional_id: str | None = Field(
        None, description="default: <topic prefix>.listener.<chain id>.<contract>"
    )

    @model_validator(mode="after")
    def _history_covers_confirmations(self) -> ListenerSettings:
        if self.listener_history_blocks <= self.listener_confirmations:
            raise ValueError("listener_history_blocks must exceed listener_confirmations")
        return self
