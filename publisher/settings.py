"""Publisher settings: the only module of the publisher that reads the environment.

Variables are ``ACESTEPS_*`` (shared ones, see `acesteps.settings`) and
``ACESTEPS_PUBLISHER_*``. The signing key comes from ``ACESTEPS_PRIVATE_KEY`` or
``ACESTEPS_KEYSTORE_FILE`` (+ ``ACESTEPS_KEYSTORE_PASSWORD``) and is never logged.

Remote pinning services (IPFS Pinning Service API, see `publisher.remotepin`) are a JSON list
in ``ACESTEPS_PUBLISHER_PINNING_SERVICES``, none by default::

    [{"name": "pinata", "endpoint": "https://api.pinata.cloud/psa", "token": "..."}]

Their tokens are `SecretStr`: they never appear in the settings' repr or in logs.
"""

from __future__ import annotations

import socket

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from acesteps.kafka.pipelined import Pipelining
from acesteps.settings import ChainSettings
from publisher.txtypes import TxPolicy

__all__ = ["PinningService", "PublisherSettings"]


class PinningService(BaseModel):
    """One remote pinning service: its name in the records, its API endpoint and token."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(
        pattern=r"^[A-Za-z0-9._-]{1,64}$", description="key of its status in remote_pins"
    )
    endpoint: str = Field(description="base URL of the API: requests go to {endpoint}/pins")
    token: SecretStr = Field(description="access token, sent as Authorization: Bearer")

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http(s) URL, got {value!r}")
        return value.rstrip("/")


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
    publisher_batch_size: int = Field(
        50, ge=1, le=128, description="tracks registered by one registerTracks transaction"
    )
    publisher_batch_wait_ms: int = Field(
        200, ge=0, le=60_000, description="how long a batch waits for more tracks to fill it"
    )
    publisher_max_in_flight: int = Field(
        16,
        ge=1,
        le=64,
        description=(
            "registration transactions waiting to be mined at once (16: what geth keeps per "
            "account in its pool for sure, txpool.accountslots)"
        ),
    )
    publisher_chunk_scan_limit: int = Field(
        20_000, ge=1, description="records read back from AudioReady to find its chunks"
    )
    publisher_pinning_services: list[PinningService] = Field(
        default_factory=list,
        description="remote pinning services asked to pin each track too (JSON list)",
    )
    publisher_pinning_timeout_s: float = Field(
        30.0, gt=0, description="timeout of one request to a remote pinning service"
    )

    @field_validator("publisher_pinning_services")
    @classmethod
    def _unique_service_names(cls, value: list[PinningService]) -> list[PinningService]:
        names = [service.name for service in value]
        if len(set(names)) != len(names):
            raise ValueError(f"pinning service names must be unique, got {names}")
        return value

    def pipelining(self) -> Pipelining:
        return Pipelining(
            batch_size=self.publisher_batch_size,
            fill_wait_s=self.publisher_batch_wait_ms / 1000,
            max_in_flight=self.publisher_max_in_flight,
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
