"""The generator's errors, on the shared tree of `acesteps.errors`.

The consume loop retries a `RetryableGeneratorError` (the GPU ran out of memory, a device
error) and dead-letters a `PermanentGeneratorError` with its ``code`` to
``PREFIX.failures.v1``. `ModelUnavailable` is neither: it is raised while the worker starts,
before anything is consumed, and stops the service with its message.
"""

from __future__ import annotations

from acesteps.errors import AceStepsError, PermanentError, RetryableError

__all__ = [
    "ContentPolicyRefused",
    "GenerationFailedError",
    "GeneratorError",
    "Interrupted",
    "InvalidInput",
    "ModelUnavailable",
    "OutOfMemory",
    "PermanentGeneratorError",
    "RetryableGeneratorError",
]


class GeneratorError(AceStepsError):
    """Root of the generator's errors."""

    code = "generator_error"


class RetryableGeneratorError(GeneratorError, RetryableError):
    """Trying the same request again later may succeed."""

    code = "generator_retryable"


class PermanentGeneratorError(GeneratorError, PermanentError):
    """The same request will fail again: dead-letter it."""

    code = "generator_permanent"


class InvalidInput(PermanentGeneratorError):
    """The request passed the message model but not the model's own limits (token counts)."""

    code = "invalid_input"


class ContentPolicyRefused(PermanentGeneratorError):
    """The content policy refused the request; the message carries reason and suggestion."""

    code = "content_policy"


class GenerationFailedError(PermanentGeneratorError):
    """The pipeline ran but produced something unusable (non-finite samples)."""

    code = "generation_failed"


class OutOfMemory(RetryableGeneratorError):
    """The device ran out of memory; a smaller batch or a later attempt may fit."""

    code = "out_of_memory"


class Interrupted(GeneratorError):
    """A model call stopped between two denoising steps: every request of it must stop
    (canceled, or past its deadline). The handler turns it into a `GenerationCanceled`."""

    code = "interrupted"


class ModelUnavailable(GeneratorError):
    """The checkpoint cannot be loaded; raised at start-up, names what to configure."""

    code = "model_unavailable"
