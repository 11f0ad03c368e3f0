"""Checks that run before any GPU work, and the job they produce.

The message model (`acesteps.messages.GenerationRequest`) already enforces the structural
limits: duration 5-240 s, prompt and lyrics lengths, at most 16 tags, format, seed range, no
control characters. What only the generator can check is added here:

1. the content policy (`generator.policy`): a refusal raises `ContentPolicyRefused`
   (``code="content_policy"``), carrying the `PolicyDecision` with reason and suggestion;
2. text the tokenizer cannot take: lone surrogates (valid JSON escapes, invalid UTF-8);
3. token limits of the model, counted with the pipeline's own tokenizer on the text exactly
   as the pipeline formats it: the caption template at most 256 tokens, the lyric block at
   most 2048. The pipeline would silently truncate longer input (cutting off the caption's
   metadata block, or the end of the song), so it is refused with `InvalidInput`
   (``code="invalid_input"``) instead.

`TokenCounter` is the part of `generator.model.Model` these checks need, so this module (and
its tests) need no torch.
"""

from __future__ import annotations

import math
from typing import Protocol

from acesteps.messages import GenerationRequest
from acesteps.options import MAX_DURATION_S, MIN_DURATION_S
from generator.editing import Edit
from generator.errors import ContentPolicyRefused, InvalidInput
from generator.jobs import Job, Style
from generator.policy import ContentPolicy, PolicyDecision

__all__ = ["PolicyRefusal", "TokenCounter", "check_job", "prepare"]


class TokenCounter(Protocol):
    """Counts tokens the way the loaded pipeline will (`generator.model.Model`)."""

    max_text_tokens: int
    max_lyric_tokens: int

    def token_lengths(self, job: Job) -> tuple[int, int]: ...


class PolicyRefusal(ContentPolicyRefused):
    """`ContentPolicyRefused` with the decision attached, for the failure record."""

    def __init__(self, decision: PolicyDecision) -> None:
        super().__init__(decision.message())
        self.decision = decision


def prepare(
    request: GenerationRequest,
    policy: ContentPolicy,
    counter: TokenCounter,
    model: str | None = None,
    style: Style | None = None,
    edit: Edit | None = None,
) -> Job:
    """The job for ``request`` on served model ``model`` (default: the one it names) in its
    preset's ``style``, editing as ``edit`` says (its source fetched), or `PolicyRefusal` /
    `InvalidInput`: call before the GPU, with ``counter`` that model."""
    # 1. Content policy first: a refused request is reported as refused, whatever else.
    decision = policy.check_request(request)
    if not decision.allowed:
        raise PolicyRefusal(decision)
    # 2. The job itself (caption, lyrics, seed), then what the model can take.
    job = Job.from_request(request, model, style, edit)
    check_job(job, counter)
    return job


def check_job(job: Job, counter: TokenCounter) -> None:
    """Raise `InvalidInput` for a job the model cannot run as asked."""
    if not (math.isfinite(job.duration_s) and MIN_DURATION_S <= job.duration_s <= MAX_DURATION_S):
        raise InvalidInput(
            f"duration {job.duration_s} s is outside {MIN_DURATION_S}-{MAX_DURATION_S} s"
        )
    for name, text in (("prompt and tags", job.caption), ("lyrics", job.lyrics)):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(f"the {name} contain text that is not valid Unicode") from None
    text_tokens, lyric_tokens = counter.token_lengths(job)
    if text_tokens > counter.max_text_tokens:
        raise InvalidInput(
            f"prompt and tags are too long for the model: {text_tokens} tokens with the "
            f"caption template, at most {counter.max_text_tokens}; shorten the prompt or drop tags"
        )
    if lyric_tokens > counter.max_lyric_tokens:
        raise InvalidInput(
            f"lyrics are too long for the model: {lyric_tokens} tokens, at most "
            f"{counter.max_lyric_tokens}"
        )
