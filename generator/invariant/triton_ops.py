"""Batch-invariant Triton kernels: matmul, row sum and softmax.

A kernel is *batch invariant* when the bits of each output row depend only on that row's
inputs: not on how many rows there are (the batch size), not on where the row sits, and not
on what the other rows hold. Then a batch of jobs yields exactly the bytes each job yields
alone. Library GEMMs break this because they pick tile sizes, split-K factors or a GEMV path
from the shapes, and each choice sums the same products in a different order.

The kernels here fix every choice that decides the order of floating-point operations:

* Fixed tiles. ``BLOCK_M``, ``BLOCK_N``, ``BLOCK_K`` and ``ROW_BLOCK`` are module constants
  (smaller ones under ``TRITON_INTERPRET=1`` so the CPU interpreter stays fast, chosen once
  per process, never from a shape). The grid size follows the shapes; the tiling does not.
* No split-K. One program owns an output tile and walks the whole K dimension, so a product
  is never summed across programs.
* Ascending K, one fp32 accumulator per output element: ``acc = dot(a_k, b_k, acc)`` for
  chunks k = 0, 1, 2, ... (16-bit inputs multiply exactly into fp32; fp32 inputs use IEEE
  products, no TF32).
* Row reductions: one program per row; a ``ROW_BLOCK``-wide fp32 vector accumulates the row
  chunk by chunk in ascending order, then one tree reduction (``tl.reduce``) folds the vector.
* No shape selects other code. M is not specialised (M == 1 compiles like M == 256); the
  row kernels do not specialise the row length or stride, since the vector layout that
  ``tl.reduce`` folds could follow the load width a specialised stride allows; every tensor
  reaches a kernel 16-byte aligned (a misaligned view is copied). The matmul keeps the
  K, N and stride specialisations: they change how tiles are loaded, not the MMA chain.

Properties, bit for bit: row i of ``matmul(a, b)`` equals ``matmul(a[:, i:i+1], b)``; batch
item j equals ``matmul(a[j:j+1], b[j:j+1])``; padding K with zero columns of ``a`` and zero
rows of ``b`` changes nothing (x + 0 == x), so masked attention keys with probability exactly
0 are exact. ``row_sum`` and ``softmax`` rows are independent of the other rows; appending
zeros to a row leaves its sum unchanged and appending ``-inf`` leaves its softmax entries
unchanged (exp(-inf) == 0). A row of only ``-inf`` gives NaN, as torch does.

Under the interpreter ``tl.dot`` cannot take bfloat16 operands, so 16-bit tiles are widened
to fp32 before the dot there (an exact conversion); on the GPU they go to the tensor cores as
they are.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import torch

try:
    import triton  # type: ignore[import-untyped]
    import triton.language as tl  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - triton ships with the CUDA builds of torch
    triton = None
    tl = None

__all__ = ["available", "matmul", "row_sum", "softmax"]

# GPU tiles: 64x64 output tiles fit an H100/H200 tensor-core MMA with 4 warps and keep
# M = 1..64 in one tile row; 32 K per step; 1024 columns per row-reduction step.
BLOCK_M, BLOCK_N, BLOCK_K, ROW_BLOCK = 64, 64, 32, 1024
# Interpreter tiles: the smallest tl.dot accepts, so CPU tests cross tile borders cheaply.
INTERPRET_BLOCK_M, INTERPRET_BLOCK_N, INTERPRET_BLOCK_K, INTERPRET_ROW_BLOCK = 16, 16, 16, 16
NUM_WARPS = 4
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_ALIGN = 16  # bytes


def _add_fn(a, b):  # type: ignore[no-untyped-def]
    return a + b


def _max_fn(a, b):  # type: ignore[no-untyped-def]
    return tl.maximum(a, b)


# The kernels call no @triton.jit helper of triton.language (tl.sum, tl.max, tl.zeros, tl.cdiv):
# those are decorated when triton is imported, so a process that set TRITON_INTERPRET=1 after
# importing triton could not interpret them. These combine functions are JITFunctions in both
# modes (the interpreter calls their Python body); the kernels are decorated at first use.
_add = triton.runtime.JITFunction(_add_fn) if triton is not None else None
_max = triton.runtime.JITFunction(_max_fn) if triton is not None else None


def _matmul_kernel(  # type: ignore[no-untyped-def]
    a_ptr, b_ptr, c_ptr, M, N, K,
    stride_ab, stride_am, stride_ak, stride_bb, stride_bk, stride_bn,
    stride_cb, stride_cm, stride_cn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    IEEE: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    tiles_m = (M + BLOCK_M - 1) // BLOCK_M
    tiles_n = (N + BLOCK_N - 1) // BLOCK_N
    pid = tl.program_id(0)
    item = (pid // (tiles_m * tiles_n)).to(tl.int64)
    tile = pid % (tiles_m * tiles_n)
    rm = (tile // tiles_n) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = (tile % tiles_n) * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    a_rows = a_ptr + item * stride_ab + rm[:, None].to(tl.int64) * stride_am
    b_cols = b_ptr + item * stride_bb + rn[None, :].to(tl.int64) * stride_bn
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):  # ascending K, no split
        kk = k0 + rk
        a = tl.load(a_rows + kk[None, :] * stride_ak, mask=(rm[:, None] < M) & (kk[None, :] < K),
                    other=0.0)  # fmt: skip
        b = tl.load(b_cols + kk[:, None] * stride_bk, mask=(kk[:, None] < K) & (rn[None, :] < N),
                    other=0.0)  # fmt: skip
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        if IEEE:
            acc = tl.dot(a, b, acc, input_precision="ieee")
        else:
            acc = tl.dot(a, b, acc)
    c = c_ptr + item * stride_cb + rm[:, None].to(tl.int64) * stride_cm + rn[None, :] * stride_cn
    tl.store(c, acc.to(c_ptr.dtype.element_ty), mask=(rm[:, None] < M) & (rn[None, :] < N))


def _row_sum_kernel(x_ptr, out_ptr, N, stride, BLOCK: tl.constexpr):  # type: ignore[no-untyped-def]
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    acc = tl.full((BLOCK,), 0.0, dtype=tl.float32)
    for start in range(0, N, BLOCK):
        idx = start + cols
        acc += tl.load(x_ptr + row * stride + idx, mask=idx < N, other=0.0).to(tl.float32)
    tl.store(out_ptr + row, tl.reduce(acc, 0, _add))


def _softmax_kernel(  # type: ignore[no-untyped-def]
    x_ptr, y_ptr, N, stride_x, stride_y, BLOCK: tl.constexpr, LOG: tl.constexpr
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    x_row = x_ptr + row * stride_x
    y_row = y_ptr + row * stride_y
    top = tl.full((BLOCK,), float("-inf"), dtype=tl.float32)
    for start in range(0, N, BLOCK):
        idx = start + cols
        x = tl.load(x_row + idx, mask=idx < N, other=float("-inf")).to(tl.float32)
        top = tl.maximum(top, x)
    m = tl.reduce(top, 0, _max)
    acc = tl.full((BLOCK,), 0.0, dtype=tl.float32)
    for start in range(0, N, BLOCK):
        idx = start + cols
        x = tl.load(x_row + idx, mask=idx < N, other=float("-inf")).to(tl.float32)
        acc += tl.exp(x - m)
    total = tl.reduce(acc, 0, _add)
    for start in range(0, N, BLOCK):
        idx = start + cols
        x = tl.load(x_row + idx, mask=idx < N, other=float("-inf")).to(tl.float32)
        if LOG:
            y = (x - m) - tl.log(total)
        else:
            y = tl.exp(x - m) / total
        tl.store(y_row + idx, y.to(y_ptr.dtype.element_ty), mask=idx < N)


@dataclass(frozen=True)
class _Kernels:
    matmul: Any
    row_sum: Any
    softmax: Any
    blocks: tuple[int, int, int]
    row_block: int
    interpret: bool


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on")


@functools.cache
def _build(interpret: bool) -> _Kernels:
    """Decorate the kernels; ``triton.jit`` reads ``TRITON_INTERPRET`` at this moment."""
    if triton is None:
        raise RuntimeError("batch-invariant kernels need triton, which is not installed")
    jit = triton.jit
    if interpret:
        blocks = (INTERPRET_BLOCK_M, INTERPRET_BLOCK_N, INTERPRET_BLOCK_K)
        row_block = INTERPRET_ROW_BLOCK
    else:
        blocks, row_block = (BLOCK_M, BLOCK_N, BLOCK_K), ROW_BLOCK
    return _Kernels(
        matmul=jit(_matmul_kernel, do_not_specialize=["M"]),
        row_sum=jit(_row_sum_kernel, do_not_specialize=["N", "stride"]),
        softmax=jit(_softmax_kernel, do_not_specialize=["N", "stride_x", "stride_y"]),
        blocks=blocks,
        row_block=row_block,
        interpret=interpret,
    )


def available() -> bool:
    """Whether these kernels can run here: triton, and CUDA or the Triton interpreter."""
    return triton is not None and (torch.cuda.is_available() or _interpreting())


def _kernels(*tensors: torch.Tensor) -> _Kernels:
    interpret = _interpreting()
    for t in tensors:
        if t.dtype not in _DTYPES:
            raise TypeError(f"batch-invariant kernels take float32/bfloat16/float16, not {t.dtype}")
        if t.device.type != "cuda" and not interpret:
            raise ValueError(f"tensor on {t.device}: these kernels need CUDA or TRITON_INTERPRET=1")
    return _build(interpret)


def _aligned(x: torch.Tensor) -> torch.Tensor:
    """``x``, or a contiguous copy when its data does not start on a 16-byte boundary."""
    return x if x.data_ptr() % _ALIGN == 0 else x.clone(memory_format=torch.contiguous_format)


def _rows(x: torch.Tensor) -> torch.Tensor:
    if x.dim() != 2:
        raise ValueError(f"expected a 2-D (rows, columns) tensor, got shape {tuple(x.shape)}")
    return _aligned(x if x.stride(1) == 1 else x.contiguous())


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for ``a`` (B, M, K) and ``b`` (B, K, N), fp32 accumulation, batch invariant."""
    if a.dim() != 3 or b.dim() != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
        raise ValueError(f"matmul of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dtype != b.dtype:
        raise TypeError(f"matmul of {a.dtype} and {b.dtype}")
    kern = _kernels(a, b)
    a, b = _aligned(a), _aligned(b)
    batch, m, depth = a.shape
    n = b.shape[2]
    c = torch.empty((batch, m, n), dtype=a.dtype, device=a.device)
    if c.numel() == 0:
        return c
    bm, bn, bk = kern.blocks
    grid = (batch * triton.cdiv(m, bm) * triton.cdiv(n, bn),)
    kern.matmul[grid](
        a, b, c, m, n, depth, *a.stride(), *b.stride(), *c.stride(),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
        IEEE=a.dtype == torch.float32 or kern.interpret, UPCAST=kern.interpret, num_warps=NUM_WARPS,
    )  # fmt: skip
    return c


def row_sum(x: torch.Tensor) -> torch.Tensor:
    """The fp32 sum of each row of ``x`` (R, N), in an order fixed by the row alone."""
    kern = _kernels(x)
    x = _rows(x)
    out = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    if x.shape[0]:
        kern.row_sum[(x.shape[0],)](x, out, x.shape[1], x.stride(0), BLOCK=kern.row_block,
                                 num_warps=NUM_WARPS)  # fmt: skip
    return out


def softmax(x: torch.Tensor, log: bool = False) -> torch.Tensor:
    """(Log-)softmax over the last dim of ``x`` (R, N), computed in fp32, in ``x``'s dtype.

    A row of only ``-inf`` comes back NaN, as from ``torch.softmax``.
    """
    kern = _kernels(x)
    x = _rows(x)
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if y.numel():
        kern.softmax[(x.shape[0],)](x, y, x.shape[1], x.stride(0), y.stride(0),
                                 BLOCK=kern.row_block, LOG=log, num_warps=NUM_WARPS)  # fmt: skip
    return y
