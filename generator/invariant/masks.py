"""Masked caption and lyric padding: jobs whose prompts differ in token length share a call.

The pipeline pads a batch's captions and lyrics to the longest (``padding="longest"``). Three
places then see the padding, and each must leave a real position's result exactly as in the
job's single run, where there is none:

- the Qwen3 text encoder gets no attention mask. Its attention is causal, so with the padding
  on the right (`padding_masks` sets the tokenizer's side) a real token never sees a pad, and
  its positions (RoPE) are those of the single run;
- the lyric encoder masks padded keys, and the condition encoder packs each job's real tokens
  first (lyrics, timbre, caption: the single run's order) with a mask of its real length;
- the DiT's cross-attention gets no mask from the pipeline. `padding_masks` captures the
  condition encoder's mask and hands it to every transformer block as
  ``encoder_attention_mask`` (twice over when guidance stacks the unconditional half).

With the batch-invariant kernels, a masked key's probability is exactly 0, a sum with
zeros appended is the same sum, and a product with a zero-padded K is the same product
(`generator.invariant.reference`), so the padding changes no bit of a real position. Outside
the batch-invariant mode this file is not used: float kernels that reorder by length would
undo it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

__all__ = ["padding_masks"]


class _Masks:
    """The condition encodings of the current call and the mask of the DiT call in flight."""

    def __init__(self) -> None:
        self.encodings: list[tuple[Tensor, Tensor]] = []
        self.current: Tensor | None = None

    def encoded(self, _module: Any, _args: Any, _kwargs: Any, output: Any) -> None:
        states, mask = output
        self.encodings.append((states, mask.bool()))

    def dit_call(self, _module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        states: Tensor = kwargs["encoder_hidden_states"]
        self.current = self._mask_for(states)[:, None, None, :]

    def block_call(
        self, _module: Any, args: Any, kwargs: dict[str, Any]
    ) -> tuple[Any, dict[str, Any]]:
        if self.current is not None:
            kwargs["encoder_attention_mask"] = self.current
        return args, kwargs

    def _mask_for(self, states: Tensor) -> Tensor:
        """The mask of the encoding that ``states`` starts with (guidance appends the
        unconditional half, which has the conditional half's length and mask). Told apart by
        shape; only encodings of one shape (a cover blended with text2music) are compared,
        since that waits for the device, at every step."""
        fits = [
            (encoded, mask)
            for encoded, mask in self.encodings
            if encoded.shape[1:] == states.shape[1:] and states.shape[0] % encoded.shape[0] == 0
        ]
        if len(fits) > 1:
            fits = [(e, m) for e, m in fits if torch.equal(states[: e.shape[0]], e)]
        if not fits:
            raise RuntimeError(
                "padding masks: the DiT was called with encoder states the condition encoder "
                "did not make in this call"
            )
        encoded, mask = fits[-1]
        return mask.repeat(states.shape[0] // encoded.shape[0], 1)


@contextmanager
def padding_masks(pipeline: Any) -> Iterator[None]:
    """Inside, ``pipeline`` pads on the right and its DiT masks padded condition tokens."""
    masks = _Masks()
    tokenizer = pipeline.tokenizer
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    hooks = [
        pipeline.condition_encoder.register_forward_hook(masks.encoded, with_kwargs=True),
        pipeline.transformer.register_forward_pre_hook(masks.dit_call, with_kwargs=True),
        *(
            block.register_forward_pre_hook(masks.block_call, with_kwargs=True)
            for block in pipeline.transformer.layers
        ),
    ]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
        tokenizer.padding_side = side
