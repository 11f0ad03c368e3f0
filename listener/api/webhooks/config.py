"""The webhooks' settings as the API uses them, and the master key their secrets come from."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field

from listener.api.store import Store
from listener.api.webhooks.targets import TargetPolicy
from listener.settings import WEBHOOK_RETRY_S, ListenerSettings

__all__ = ["MASTER_META", "WebhookConfig", "load_master"]

MASTER_META = "webhook_master"
"""The status store's ``meta`` entry holding the generated master key (base64)."""


@dataclass(frozen=True)
class WebhookConfig:
    master: bytes = field(repr=False)
    """What every API key's signing secret is derived from (`signing.derive_secret`)."""
    targets: TargetPolicy = field(default_factory=TargetPolicy)
    retry_s: tuple[float, ...] = WEBHOOK_RETRY_S
    """Seconds after each failed attempt before the next; after the last one: failed."""
    timeout_s: float = 10.0
    concurrency: int = 16

    @classmethod
    def from_settings(
        cls, settings: ListenerSettings, master: bytes, targets: TargetPolicy | None = None
    ) -> WebhookConfig:
        return cls(
            master=master,
            targets=targets
            or TargetPolicy(
                allow_http=settings.api_webhook_allow_http,
                allow_nets=tuple(settings.api_webhook_allow_nets),
            ),
            retry_s=tuple(settings.api_webhook_retry_s),
            timeout_s=settings.api_webhook_timeout_s,
            concurrency=settings.api_webhook_concurrency,
        )


async def load_master(store: Store, settings: ListenerSettings) -> bytes:
    """``ACESTEPS_API_WEBHOOK_SECRET``'s bytes; else the store's key, made (32 random bytes)
    by the first process that asks, so that replicas sharing a store and restarts agree."""
    if settings.api_webhook_secret is not None:
        return settings.api_webhook_secret.get_secret_value().encode()
    fresh = base64.b64encode(os.urandom(32)).decode()
    return base64.b64decode(await store.meta(MASTER_META, fresh))
