"""The web3 provider the signer sends through: it retries reads, never a raw transaction.

web3's `AsyncHTTPProvider` retries failed requests, ``eth_sendRawTransaction`` included. A
retried broadcast that answers "nonce too low" (the first try got through and was mined)
would make `publisher.txsender.TxSender` send the call again under a new nonce: a duplicate.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import aiohttp
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.providers.rpc.utils import REQUEST_RETRY_ALLOWLIST, ExceptionRetryConfiguration

__all__ = ["connect_for_sending", "no_send_retries"]

log = logging.getLogger(__name__)

_SEND_RAW: Final = "eth_sendRawTransaction"


def connect_for_sending(rpc_url: str, timeout_s: float = 30.0) -> AsyncWeb3[Any]:
    """An `AsyncWeb3` that retries reads but never re-sends a raw transaction by itself."""
    retry = ExceptionRetryConfiguration(
        errors=(aiohttp.ClientError, TimeoutError),
        method_allowlist=[m for m in REQUEST_RETRY_ALLOWLIST if m != _SEND_RAW],
    )
    provider = AsyncHTTPProvider(
        rpc_url, request_kwargs={"timeout": timeout_s}, exception_retry_configuration=retry
    )
    return AsyncWeb3(provider)


def no_send_retries(w3: AsyncWeb3[Any]) -> None:
    provider = w3.provider
    if not isinstance(provider, AsyncHTTPProvider):
        return
    config = provider.exception_retry_configuration
    if config is not None and _SEND_RAW in config.method_allowlist:
        provider.exception_retry_configuration = ExceptionRetryConfiguration(
            errors=config.errors,
            retries=config.retries,
            backoff_factor=config.backoff_factor,
            method_allowlist=[m for m in config.method_allowlist if m != _SEND_RAW],
        )
        log.info("took %s off the provider's retry list (see publisher.provider)", _SEND_RAW)
