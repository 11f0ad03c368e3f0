"""Batch-invariant reductions built from elementwise torch ops: the CPU kernels of the mode.

An elementwise ``+`` or ``*`` rounds each element on its own (IEEE 754), whatever the shape,
the vector width or the thread that computes it. So a reduction written as a fixed sequence
of elementwise operations gives each output element the same bits however many rows there
are, where its row sits, and how the work is split across threads:

- `tree_sum` sums the last dim by halving: zero-pad it to a power of two, then add the upper
  half onto the lower one until one column is left. Appending zeros to a row does not change
  its sum (the first halvings only add zeros), which makes masked padding exact.
- `matmul` multiplies in chunks of `CHUNK` along K: each chunk's products are tree-summed and
  the chunk sums are added in ascending order. Zero-padded K leaves the result unchanged.

Measured on this project's CPU path, torch's own kernels are not batch-invariant: GEMM and
GEMV paths differ (one row against several), and some elementwise activations (``silu``,
``sigmoid``, ``gelu``, ``pow(scalar, tensor)``) compute a vector's tail with scalar code that
rounds differently, so an element's bits depend on where the batch puts it. `silu`,
`sigmoid`, `gelu` and `pow_scalar` here are written from ``exp``, ``tanh``, ``erf``, ``log``
and the four arithmetic operations, whose vector and scalar code agree
(tests/unit/test_invariant_ops.py checks every one).
"""

from __future__ import annotations

import math
from typing import Final

import torch
from torch import Tensor

__all__ = [
    "CHUNK",
    "gelu",
    "matmul",
    "pow_scalar",
    "sigmoid",
    "silu",
    "softmax",
    "tree_sum",
]

CHUNK: Final = 16
"""K elements per chunk of `matmul` (a power of two)."""

_BUDGET: Final = 1 << 22
"""Elements of the largest temporary `matmul` makes (rows are taken in slices to fit)."""


def tree_sum(x: Tensor, dim: int = -1) -> Tensor:
    """Sum over ``dim`` in fixed halving order, accumulated in float32 (or float64)."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    x = x.to(acc).movedim(dim, 0)
    n = x.shape[0]
    width = 1 << max(0, math.ceil(math.log2(max(n, 1))))
    if width != n:
        x = torch.cat([x, x.new_zeros((width - n, *x.shape[1:]))])
    while width > 1:
        width //= 2
        x = x[:width] + x[width:]
    return x[0]


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for ``a`` ``[..., M, K]`` and ``b`` ``[..., K, N]`` (equal leading dims),
    accumulated in float32 and returned in ``a``'s dtype. A last chunk shorter than `CHUNK`
    is tree-summed at its own power-of-two width: the same bits as zero-padded to `CHUNK`."""
    out_dtype = a.dtype
    k = a.shape[-1]
    if b.shape[-2] != k:
        raise ValueError(f"matmul: {tuple(a.shape)} @ {tuple(b.shape)}")
    acc = torch.float64 if a.dtype == torch.float64 else torch.float32
    a, b = a.to(acc).transpose(-1, -2), b.to(acc)  # a: [..., K, M]
    m, n = a.shape[-1], b.shape[-1]
    lead = a.shape[:-2]
    rows = max(1, _BUDGET // max(1, math.prod(lead) * min(k, CHUNK) * n))
    out = torch.zeros((*lead, m, n), dtype=acc, device=a.device)
    for start in range(0, m, rows):
        part = a[..., start : start + rows]
        total = out[..., start : start + rows, :]
        for c in range(0, k, CHUNK):
            # [..., chunk, rows, 1] * [..., chunk, 1, N]: the chunk's products, K leading
            left = part[..., c : c + CHUNK, :].unsqueeze(-1)
            total += tree_sum(left * b[..., c : c + CHUNK, :].unsqueeze(-2), dim=-3)
    return out.to(out_dtype)


def softmax(x: Tensor, log: bool = False) -> Tensor:
    """(Log-)softmax over the last dim: max, ``exp(x - max)``, `tree_sum`. Masked entries
    (``-inf``) add exactly zero, so padding a row with them leaves its real entries alone."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    y = x.to(acc)
    top = y.amax(dim=-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    shifted = y - top
    total = tree_sum(torch.exp(shifted)).unsqueeze(-1)
    out = shifted - torch.log(total) if log else torch.exp(shifted) / total
    return out.to(x.dtype)


def sigmoid(x: Tensor) -> Tensor:
    return 1.0 / (1.0 + torch.exp(-x))


def silu(x: Tensor) -> Tensor:
    return x * sigmoid(x)


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    if approximate == "tanh":
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * (x * x * x))
        return 0.5 * x * (1.0 + torch.tanh(inner))
    return 0.5 * x * (1.0 + torch.erf(x * (1.0 / math.sqrt(2.0))))


def pow_scalar(base: float, exponent: Tensor) -> Tensor:
    """``base ** exponent`` for a positive scalar base, as ``exp(exponent * ln(base))``."""
    if base <= 0:
        raise ValueError(f"pow_scalar needs a positive base, got {base}")
    return torch.exp(exponent * math.log(base))
