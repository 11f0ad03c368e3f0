"""The error tree every service builds on.

One root, `AceStepsError`, and two branches that tell the consume loop
(`acesteps.kafka.loop`) what to do with the record being handled:

- `RetryableError`: the input is fine, something it depends on is not (IPFS down, RPC
  timeout, GPU out of memory). The loop aborts, backs off and tries the record again, and
  dead-letters it with code ``retries_exhausted`` after a bounded number of attempts.
- `PermanentError`: trying again cannot help (a refused prompt, a hash mismatch, a record
  that does not decode). The loop dead-letters the record at once.

Each service subclasses both branches (``GeneratorError``, ``RetryableGeneratorError``, ...)
and sets ``code``: the lower-case error code written into ``GenerationFailed.code``. Only the
consume loop catches broadly; handlers raise these and let the loop decide.
"""

from __future__ import annotations

import re
from typing import ClassVar, Final

__all__ = [
    "CODE_PATTERN",
    "AceStepsError",
    "InvalidRecordError",
    "PermanentError",
    "RetryableError",
    "UnavailableError",
]

CODE_PATTERN: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
"""What ``GenerationFailed.code`` accepts; every ``code`` below must match it."""


class AceStepsError(Exception):
    """Root of every error the services raise on purpose."""

    code: ClassVar[str] = "error"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # A bad code would only show when the record is dead-lettered; fail at import instead.
        if not CODE_PATTERN.fullmatch(cls.code):
            raise TypeError(
                f"{cls.__name__}.code {cls.code!r} does not match {CODE_PATTERN.pattern}"
            )


class RetryableError(AceStepsError):
    """Transient: the same record may succeed later."""

    code = "retryable_error"


class UnavailableError(RetryableError):
    """A service this one depends on is down (IPFS, the chain node). Retried with capped
    backoff for as long as it takes, never dead-lettered: the record is fine, and giving up
    would lose a good track to an outage."""

    code = "dependency_unavailable"


class PermanentError(AceStepsError):
    """Final for this record: it is dead-lettered with ``code`` and the message."""

    code = "permanent_error"


class InvalidRecordError(PermanentError):
    """The record's key, headers or value do not decode to what the topic promises."""

    code = "invalid_record"
