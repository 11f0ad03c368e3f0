"""The publisher's errors: one root, a retryable branch and a permanent branch.

The consume loop is the only place that catches broadly: it retries a
`RetryablePublisherError` (the node is down, a transaction was not mined in time, the wallet
is empty) and dead-letters a `PermanentPublisherError` to ``PREFIX.failures.v1`` with its
``code``. Messages never carry key material: errors are built from addresses, hashes and
node answers only.
"""

from __future__ import annotations

from acesteps.errors import AceStepsError, PermanentError, RetryableError, UnavailableError

__all__ = [
    "ChainUnavailable",
    "ConflictingRegistration",
    "ContractReverted",
    "InsufficientFunds",
    "PermanentPublisherError",
    "PublisherError",
    "RetryablePublisherError",
    "TxDropped",
    "TxNotMined",
]


class PublisherError(AceStepsError):
    """Root of the publisher's errors; ``code`` is the ``GenerationFailed.code`` to report."""

    code = "publisher_error"


class RetryablePublisherError(PublisherError, RetryableError):
    """Retrying the same work later may succeed."""

    code = "retryable"


class PermanentPublisherError(PublisherError, PermanentError):
    """Retrying the same work will fail again: dead-letter it."""

    code = "permanent"


class ChainUnavailable(RetryablePublisherError, UnavailableError):
    """The JSON-RPC node could not be reached or did not answer in time."""

    code = "chain_unavailable"


class InsufficientFunds(RetryablePublisherError):
    """The signer cannot pay for gas; retryable because an operator can top it up."""

    code = "insufficient_funds"


class TxNotMined(RetryablePublisherError):
    """None of the transactions sent for one call was mined before the deadline."""

    code = "tx_not_mined"

    def __init__(self, message: str, tx_hashes: tuple[str, ...]) -> None:
        super().__init__(message)
        self.tx_hashes = tx_hashes


class TxDropped(TxNotMined):
    """A transaction of ours vanished: no receipt, and the node no longer knows it (a reorg
    orphaned its block). Retrying reads the chain again and sends what is still needed."""

    code = "tx_dropped"


class ContractReverted(PermanentPublisherError):
    """The contract refused the call (on estimation, or as a mined transaction that failed).

    ``error_name`` is the custom error's name from the ABI (``AlreadyRegistered``), or
    ``Error`` / ``Panic`` for Solidity's built-in ones, or ``unknown``.
    """

    code = "contract_reverted"

    def __init__(
        self,
        function: str,
        error_name: str,
        args: tuple[object, ...] = (),
        tx_hash: str | None = None,
    ) -> None:
        where = f" in transaction {tx_hash}" if tx_hash else " on estimation"
        super().__init__(f"{function} reverted with {error_name}{args!r}{where}")
        self.function = function
        self.error_name = error_name
        self.args_ = args
        self.tx_hash = tx_hash


class CallbackDeferred(RetryablePublisherError, UnavailableError):
    """``registerTracks`` skipped a request because its callback's gas did not fit in the
    batch's (``CallbackOverBudget``): registered by a later transaction, however many tries
    that takes (the first callback of a batch always fits)."""

    code = "callback_deferred"


class ConflictingRegistration(PermanentPublisherError):
    """The request id is registered on chain with another track than the one published."""

    code = "conflicting_registration"
