"""Listener settings: the only module of the listener that reads the environment.

Variables are ``ACESTEPS_*`` (shared ones, see `acesteps.settings`) and ``ACESTEPS_LISTENER_*``.
"""

from __future__ import annotations

import ipaddress
import re
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from acesteps.models import ModelsSettings
from acesteps.presets import PresetsSettings
from acesteps.settings import CACHE_DIR, ChainSettings

__all__ = ["WEBHOOK_RETRY_S", "ListenerSettings"]

WEBHOOK_RETRY_S = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
"""After a failed webhook attempt: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (27.6 h in all, as
Svix retries); eight attempts."""


class ListenerSettings(ChainSettings, ModelsSettings, PresetsSettings):
    """Also ``ACESTEPS_MODELS`` and ``ACESTEPS_MODEL_DEFAULT`` (`acesteps.models`), and
    ``ACESTEPS_PRESETS`` (`acesteps.presets`): the API refuses requests naming another model
    or preset and lists them at ``GET /api/models`` and ``GET /api/presets``; set them as the
    generators have them."""

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

    listener_chain_enabled: bool = Field(
        True, description="poll the contract's logs (off: an API-only replica)"
    )

    # ---------------------------------------------------------------- HTTP API
    api_enabled: bool = Field(True, description="serve the HTTP API and the web page")
    api_host: str = Field("127.0.0.1", description="address the API binds")
    api_port: int = Field(18000, ge=1, le=65535)
    api_public_url: str | None = Field(
        None, description="base of the URLs the API hands out (default: from the Host header)"
    )
    api_wait_s: float = Field(
        60.0, ge=0, le=600, description="how long POST /api/generate waits before a 202"
    )
    api_public_rpc_url: str | None = Field(
        None,
        description="the JSON-RPC URL the verification page (/verify) suggests to browsers "
        "(default: ACESTEPS_RPC_URL when it is on a loopback address; a keyed provider URL is "
        "never handed out unless set here)",
    )
    api_public_gateway_url: str | None = Field(
        None,
        description="the IPFS gateway the verification page suggests "
        "(default: ACESTEPS_IPFS_GATEWAY_URL)",
    )
    api_explorer_url: str | None = Field(
        None,
        description="a block explorer's base URL: track pages link transactions to "
        "BASE/tx/HASH (unset: the hash is shown)",
    )
    api_auth: Literal["auto", "on", "off"] = Field(
        "auto", description="API keys for POST /api/generate; auto: on unless bound to loopback"
    )
    api_keys: dict[str, SecretStr] = Field(
        default_factory=dict, description='JSON object {"<key id>": "<secret>"}'
    )
    api_generate_per_minute: float = Field(30, ge=0, description="POST budget per caller")
    api_generate_burst: int = Field(10, ge=1)
    api_cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="origins whose pages may call the API (comma-separated, scheme://host"
        "[:port]; * for any); empty: no cross-origin calls",
    )
    api_resend_after_s: float = Field(
        10.0,
        gt=0,
        description="an accepted request not read back from Kafka after this long is sent "
        "again (the outbox); also how often the outbox is looked at",
    )
    api_error_per_minute: float = Field(
        300, ge=0, description="budget per caller of submissions refused as invalid"
    )
    api_error_burst: int = Field(100, ge=1)
    api_read_per_minute: float = Field(1200, ge=0, description="GET budget per caller")
    api_read_burst: int = Field(200, ge=1)
    api_store_url: str = Field(
        f"sqlite:///{CACHE_DIR / 'run' / 'status.sqlite3'}",
        pattern=r"^(sqlite:///.+|postgres(ql)?://.+)$",
        description="status store: sqlite:///PATH (one replica) or postgresql://... (shared)",
    )
    api_audio_cache_dir: Path = Field(
        CACHE_DIR / "run" / "api-audio", description="files fetched from IPFS for /audio"
    )
    api_audio_cache_mb: int = Field(2048, ge=1, description="size the audio cache is kept under")
    api_upload_max_mb: int = Field(
        50, ge=1, description="the largest file POST /api/uploads accepts (MiB)"
    )
    api_webhooks: bool = Field(
        True, description="deliver webhooks from this replica (off: others deliver them)"
    )
    api_webhook_secret: SecretStr | None = Field(
        None,
        description="master key every API key's webhook signing secret is derived from "
        "(default: a random key kept in the status store, shared by its replicas)",
    )
    api_webhook_retry_s: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: list(WEBHOOK_RETRY_S),
        min_length=1,
        description="seconds between a failed webhook attempt and the next, comma-separated; "
        "after the last one the delivery has failed",
    )
    api_webhook_timeout_s: float = Field(
        10.0, gt=0, le=300, description="one webhook attempt's time limit"
    )
    api_webhook_concurrency: int = Field(
        16, ge=1, le=1024, description="webhook attempts in flight at once, per replica"
    )
    api_webhook_allow_http: bool = Field(
        False, description="accept http:// webhook URLs (default: https only)"
    )
    api_webhook_allow_nets: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list,
        description="networks webhooks may reach although they are not public (CIDRs, "
        "comma-separated): loopback, private, link-local, ... are refused otherwise",
    )

    @field_validator("api_webhook_retry_s", "api_webhook_allow_nets", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("api_webhook_secret")
    @classmethod
    def _check_webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("the webhook master secret needs at least 16 characters")
        return value

    @field_validator("api_webhook_retry_s")
    @classmethod
    def _check_retries(cls, value: list[float]) -> list[float]:
        if any(not 0 <= s < 10**7 for s in value):
            raise ValueError("each retry delay is 0 or more seconds (under 10^7)")
        return value

    @field_validator("api_cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [o.strip() for o in value.split(",") if o.strip()]
        return value

    @field_validator("api_cors_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"an origin is scheme://host[:port] or *, got {origin!r}")
        return value

    @property
    def api_auth_required(self) -> bool:
        if self.api_auth != "auto":
            return self.api_auth == "on"
        try:
            return not ipaddress.ip_address(self.api_host).is_loopback
        except ValueError:
            return self.api_host != "localhost"

    @model_validator(mode="after")
    def _keys_when_required(self) -> ListenerSettings:
        if self.api_enabled and self.api_auth_required and not self.api_keys:
            raise ValueError(
                f"the API on {self.api_host} requires keys: set ACESTEPS_API_KEYS to "
                '\'{"<key id>": "<secret>"}\' (or ACESTEPS_API_AUTH=off to run without)'
            )
        return self

    @model_validator(mode="after")
    def _history_covers_confirmations(self) -> ListenerSettings:
        if self.listener_history_blocks <= self.listener_confirmations:
            raise ValueError("listener_history_blocks must exceed listener_confirmations")
        return self
