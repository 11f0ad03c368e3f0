"""Publisher settings: the only module of the publisher that reads the environment.

Variables are ``ACESTEPS_*`` (shared ones, see `acesteps.settings`) and
``ACESTEPS_PUBLISHER_*``. The signing key comes from ``ACESTEPS_PRIVATE_KEY`` or
``ACESTEPS_KEYSTORE_FILE`` (+ ``ACESTEPS_KEYSTORE_PASSWORD``) and is never logged.
"""

from __future__ import annotations

import socket

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from acesteps.settings import ChainSettings
from publisher.txsender import TxPolicy

__all__ = ["PublisherSettings"]


class PublisherSettings(ChainSettings):
    model_config = SettingsConfigDict(env_prefix="ACESTEPS_", extra="ignore", frozen=True)

    publisher_instance_id: str = Field(
        default_factory=lambda: socket.gethostname(),
        pattern=r"^[A-Za-z0-9._-]{1,100}$",
        description="stable and unique per instance: names its transactional ids",
    )
    publisher_confirmations: int = Field(
        1, ge=1, le=100, description="1: the block that mined it; n: n-1 blocks on top"
    )
    publisher_max_fee_gwei: float = Field(500.0, gt=0)
    publisher_gas_margin: float = Field(1.25, ge=1)
    publisher_tx_pending_timeout_s: float = Field(60.0, gt=0)
    publisher_tx_max_replacements: int = Field(5, ge=0)
    publisher_tx_deadline_s: float = Field(900.0, gt=0)
    publisher_tx_poll_interval_s: float = Field(1.0, gt=0)
    publisher_max_attempts: int = Field(8, ge=1, description="tries before dead-lettering")
    publisher_chunk_scan_limit: int = Field(
        20_000, ge=1, description="records read back from AudioReady to find its chunks"
    )

    def tx_policy(self) -> TxPolicy:
        return TxPolicy(
            max_fee_cap_wei=int(self.publisher_max_fee_gwei * 10**9),
            gas_margin=self.publisher_gas_margin,
            pending_timeout_s=self.publisher_tx_pending_timeout_s,
            max_replacements=self.publisher_tx_max_replacements,
            deadline_s=self.publisher_tx_deadline_s,
            poll_interval_s=self.publisher_tx_poll_interval_s,
        )
