"""The batch-invariant replacements of aten ops, and the ops that need none.

`REPLACED` maps each aten op whose reduction order can depend on the batch (matrix products,
sums and means, softmax, norms, convolutions, and the activations whose CPU code rounds a
vector's tail differently) to a kernel built from the device's `Kernels`. `SAFE` names the
ops that cannot make one item's bits depend on the others. `attention` replaces
``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Final

import torch
from torch import Tensor

from generator.invariant import reference
from generator.invariant.kernels import Kernels, UncoveredOp

__all__ = ["INTEGER_ONLY", "IN_PLACE", "REPLACED", "SAFE", "attention"]

aten = torch.ops.aten


# ------------------------------------------------------------------ building blocks


def _rows(x: Tensor) -> Tensor:
    return x.reshape(-1, x.shape[-1]) if x.dim() != 2 else x


def _sum_last(k: Kernels, x: Tensor) -> Tensor:
    """Float32 sum over the last dim, any leading shape."""
    if x.shape[-1] == 0:
        return torch.zeros(x.shape[:-1], dtype=torch.float32, device=x.device)
    return k.row_sum(_rows(x.contiguous())).reshape(x.shape[:-1])


def _dims(x: Tensor, dim: Sequence[int] | int | None) -> list[int]:
    if dim is None or (not isinstance(dim, int) and len(dim) == 0):
        return list(range(x.dim()))
    dims = [dim] if isinstance(dim, int) else list(dim)
    return sorted({d % max(x.dim(), 1) for d in dims})


def _reduce(k: Kernels, x: Tensor, dims: list[int], keepdim: bool) -> Tensor:
    """Sum over ``dims``: moved last, flattened, summed in one fixed order."""
    kept = [d for d in range(x.dim()) if d not in dims]
    moved = x.permute(*kept, *dims)
    flat = moved.reshape(*[x.shape[d] for d in kept], -1)
    total = _sum_last(k, flat)
    if keepdim:
        total = total.reshape([1 if d in dims else x.shape[d] for d in range(x.dim())])
    return total


def _matmul(k: Kernels, a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for 2-D or 3-D operands of the same rank."""
    if a.dim() == 2:
        return k.matmul(a.unsqueeze(0), b.unsqueeze(0))[0]
    return k.matmul(a, b)


def attention(
    k: Kernels,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Tensor:
    """``softmax(q k^T * scale + mask) v`` over ``[..., H, L, E]`` tensors. A row whose keys
    are all masked gives zeros (torch gives NaN there), so it cannot poison the real rows."""
    if dropout_p:
        raise UncoveredOp("the batch-invariant mode runs inference only (dropout_p must be 0)")
    heads, kv_heads = query.shape[-3], key.shape[-3]
    if heads != kv_heads:  # grouped-query attention: each K/V head serves heads/kv_heads
        key = key.repeat_interleave(heads // kv_heads, dim=-3)
        value = value.repeat_interleave(heads // kv_heads, dim=-3)
    lead, lq, lk = query.shape[:-2], query.shape[-2], key.shape[-2]
    q = query.reshape(-1, lq, query.shape[-1])
    kt = key.reshape(-1, lk, key.shape[-1]).transpose(1, 2)
    scores = _matmul(k, q, kt).float() * (scale if scale is not None else query.shape[-1] ** -0.5)
    scores = scores.reshape(*lead, lq, lk)
    if is_causal:
        keep = torch.ones(lq, lk, dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~keep, -math.inf)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, -math.inf)
        else:
            scores = scores + attn_mask.float()
    probs = k.softmax(scores.reshape(-1, lk), False).reshape(scores.shape)
    probs = torch.nan_to_num(probs, nan=0.0)
    out = _matmul(
        k, probs.reshape(-1, lq, lk).to(value.dtype), value.reshape(-1, lk, value.shape[-1])
    )
    return out.reshape(*lead, lq, value.shape[-1])


# ------------------------------------------------------------------ the op table


def _mm(k: Kernels, a: Tensor, b: Tensor) -> Tensor:
    return _matmul(k, a, b)


def _add_product(
    k: Kernels, bias: Tensor, a: Tensor, b: Tensor, *, beta: float = 1, alpha: float = 1
) -> Tensor:
    if beta != 1 or alpha != 1:
        raise UncoveredOp(f"addmm/baddbmm with beta={beta}, alpha={alpha}")
    return _matmul(k, a, b) + bias


def _mean(
    k: Kernels, x: Tensor, dim: Any = None, keepdim: bool = False, *, dtype: Any = None
) -> Tensor:
    dims = _dims(x, dim)
    count = math.prod(x.shape[d] for d in dims)
    return (_reduce(k, x, dims, keepdim) / count).to(dtype or x.dtype)


def _sum(
    k: Kernels, x: Tensor, dim: Any = None, keepdim: bool = False, *, dtype: Any = None
) -> Tensor:
    if not x.is_floating_point():  # integer sums are exact in any order
        return torch.sum(x, dim=dim, keepdim=keepdim, dtype=dtype)
    return _reduce(k, x, _dims(x, dim), keepdim).to(dtype or x.dtype)


def _softmax(k: Kernels, x: Tensor, dim: int, half_to_float: bool, log: bool = False) -> Tensor:
    moved = x.movedim(dim, -1)
    out = k.softmax(_rows(moved.contiguous()), log).reshape(moved.shape).movedim(-1, dim)
    return out.float() if half_to_float else out


def _layer_norm(
    k: Kernels,
    x: Tensor,
    shape: Sequence[int],
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    n = math.prod(shape)
    rows = x.reshape(*x.shape[: x.dim() - len(shape)], n).float()
    mean = (_sum_last(k, rows) / n).unsqueeze(-1)
    centred = rows - mean
    rstd = torch.rsqrt(_sum_last(k, centred * centred).unsqueeze(-1) / n + eps)
    out = (centred * rstd).reshape(x.shape).to(x.dtype)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    stat_shape = [*x.shape[: x.dim() - len(shape)], *([1] * len(shape))]
    return out, mean.reshape(stat_shape), rstd.reshape(stat_shape)


def _vector_norm(
    k: Kernels, x: Tensor, ord: float = 2, dim: Any = None, keepdim: bool = False, **_: Any
) -> Tensor:
    if ord != 2:
        raise UncoveredOp(f"linalg_vector_norm with ord={ord}")
    y = x.float()
    return torch.sqrt(_reduce(k, y * y, _dims(x, dim), keepdim)).to(x.dtype)


def _convolution(_k: Kernels, x: Tensor, *args: Any) -> Tensor:
    """One batch item per call: exactly the call a single run makes."""
    return torch.cat([aten.convolution.default(x[i : i + 1], *args) for i in range(x.shape[0])])


def _pow(_k: Kernels, x: Tensor, exponent: float) -> Tensor:
    if exponent == 0.5:
        return torch.sqrt(x)
    if exponent == -0.5:
        return torch.rsqrt(x)
    if exponent == -1:
        return torch.reciprocal(x)
    if float(exponent).is_integer() and 1 <= exponent <= 8:
        out = x
        for _ in range(int(exponent) - 1):
            out = out * x
        return out
    raise UncoveredOp(f"pow with exponent {exponent}")


REPLACED: Final[dict[Any, Callable[..., Any]]] = {
    aten.mm.default: _mm,
    aten.bmm.default: _mm,
    aten.addmm.default: _add_product,
    aten.baddbmm.default: _add_product,
    aten.mean.dim: _mean,
    aten.mean.default: _mean,
    aten.sum.dim_IntList: _sum,
    aten.sum.default: _sum,
    aten._softmax.default: _softmax,
    aten._log_softmax.default: lambda k, x, dim, h: _softmax(k, x, dim, h, log=True),
    aten.native_layer_norm.default: _layer_norm,
    aten.linalg_vector_norm.default: _vector_norm,
    aten.convolution.default: _convolution,
    aten.silu.default: lambda _k, x: reference.silu(x),
    aten.sigmoid.default: lambda _k, x: reference.sigmoid(x),
    aten.gelu.default: lambda _k, x, approximate="none": reference.gelu(x, approximate),
    aten.pow.Scalar: lambda _k, base, x: reference.pow_scalar(float(base), x),
    aten.pow.Tensor_Scalar: _pow,
}

IN_PLACE: Final[dict[Any, Any]] = {
    aten.silu_.default: aten.silu.default,
    aten.sigmoid_.default: aten.sigmoid.default,
}

SAFE: Final = frozenset(
    """
    view _unsafe_view reshape t transpose permute unsqueeze squeeze expand slice select split
    split_with_sizes unbind chunk cat stack clone _to_copy copy detach alias as_strided
    lift_fresh contiguous flatten unflatten narrow movedim
    zeros ones full empty empty_like zeros_like ones_like full_like new_zeros new_ones new_empty
    new_full arange linspace scalar_tensor
    index index_select gather scatter index_put embedding masked_fill where constant_pad_nd
    repeat repeat_interleave flip roll tril triu fill zero
    add sub rsub mul div neg abs exp log log1p expm1 sin cos tanh sqrt rsqrt reciprocal erf
    clamp clamp_min clamp_max maximum minimum sign floor ceil round trunc remainder fmod
    bitwise_and bitwise_or bitwise_not bitwise_xor logical_and logical_or logical_not
    eq ne lt le gt ge isfinite isnan isinf nan_to_num any all
    amax amin max min aminmax argmax argmin sort argsort bincount nonzero _local_scalar_dense
    equal randn rand normal uniform _weight_norm_interface
    """.split()
)
"""Ops that cannot make one item's bits depend on the others: views and copies, indexing,
elementwise ops whose vector and scalar code agree (tests/unit/test_invariant_ops.py checks
the transcendental ones), exact reductions (max, min, sort), random draws from an explicit
generator, and ``_weight_norm_interface`` (computed on parameters only)."""

INTEGER_ONLY: Final = frozenset({"cumsum", "cumprod"})
