"""Which kernels the batch-invariant mode runs on a device, and the error when it has none.

On the CPU: the elementwise compositions of `generator.invariant.reference`. On CUDA: the
fixed-tile Triton kernels of `generator.invariant.triton_ops`; triton is then required,
since falling back to other kernels would change the bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import torch
from torch import Tensor

from generator.invariant import reference

__all__ = ["REFERENCE", "Kernels", "UncoveredOp", "kernels_for"]


class UncoveredOp(RuntimeError):
    """An op ran in the batch-invariant mode that has no invariant kernel."""


@dataclass(frozen=True)
class Kernels:
    """The three reductions everything else is built from, for one device."""

    name: str
    matmul: Callable[[Tensor, Tensor], Tensor]
    """``[B, M, K] @ [B, K, N]``."""
    row_sum: Callable[[Tensor], Tensor]
    """Sum over the last dim of ``[R, N]`` (float32)."""
    softmax: Callable[[Tensor, bool], Tensor]
    """(Log-)softmax over the last dim of ``[R, N]``."""


REFERENCE: Final = Kernels("reference", reference.matmul, reference.tree_sum, reference.softmax)


def kernels_for(device: torch.device) -> Kernels:
    """The kernels the mode uses on ``device``."""
    if device.type == "cpu":
        return REFERENCE
    from generator.invariant import triton_ops  # triton only where needed

    if not triton_ops.available():
        raise UncoveredOp(
            f"the batch-invariant mode on {device.type} needs triton (pip install triton); "
            "without it set ACESTEPS_GENERATOR_BATCH_MODE=sequential"
        )
    return Kernels("triton", triton_ops.matmul, triton_ops.row_sum, triton_ops.softmax)
