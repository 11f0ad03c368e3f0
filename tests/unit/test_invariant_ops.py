"""The batch-invariant mode's CPU kernels and its guard (`generator.invariant`).

For every op the mode replaces: row (or item) i of a batched call equals the call on that row
alone, bit for bit; padding with zeros (or masked keys) leaves the real results unchanged; and
the result is close to torch's. The elementwise ops the mode lets through unchanged are
checked for the property it relies on: an element's bits do not depend on where it sits in
the tensor. An op the mode has no kernel for raises `UncoveredOp`.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from generator.invariant import reference
from generator.invariant.mode import InvariantMode, UncoveredOp

CPU = torch.device("cpu")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=_gen(seed))


def _rows_alone(fn: Callable[[Tensor], Tensor], x: Tensor) -> list[Tensor]:
    return [fn(x[i : i + 1]) for i in range(x.shape[0])]


def _assert_row_invariant(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``fn`` on all rows, checked against ``fn`` on each row alone; returns the batch."""
    together = fn(x)
    for i, alone in enumerate(_rows_alone(fn, x)):
        assert torch.equal(together[i : i + 1], alone), f"row {i} depends on its batch"
    return together


# ------------------------------------------------------------------ reference kernels


@pytest.mark.parametrize("m", [1, 3, 37])
def test_matmul_rows_do_not_depend_on_the_batch_and_zero_padded_k_changes_nothing(
    m: int,
) -> None:
    a, b = _randn(2, m, 45, seed=1), _randn(2, 45, 19, seed=2)
    out = reference.matmul(a, b)
    torch.testing.assert_close(out, a @ b, rtol=1e-5, atol=1e-5)
    for j in range(2):
        for i in range(m):
            alone = reference.matmul(a[j : j + 1, i : i + 1], b[j : j + 1])
            assert torch.equal(alone[0, 0], out[j, i])
    padded = reference.matmul(F.pad(a, (0, 21)), F.pad(b, (0, 0, 0, 21)))
    assert torch.equal(padded, out)


def test_tree_sum_and_softmax_ignore_appended_zeros_and_masked_entries() -> None:
    x = _randn(6, 29, seed=3)
    assert torch.equal(reference.tree_sum(F.pad(x, (0, 35))), reference.tree_sum(x))
    torch.testing.assert_close(reference.tree_sum(x), x.sum(-1))
    masked = torch.cat([x, torch.full((6, 12), -torch.inf)], dim=1)
    for log in (False, True):
        got = reference.softmax(x, log=log)
        want = F.log_softmax(x, -1) if log else F.softmax(x, -1)
        torch.testing.assert_close(got, want)
        assert torch.equal(reference.softmax(masked, log=log)[:, :29], got)


# Elementwise ops the mode lets through unchanged; each element must get the same bits
# wherever it sits (torch computes a vector's tail with scalar code).
PASSED_THROUGH: dict[str, Callable[[Tensor], Tensor]] = {
    "exp": torch.exp,
    "log": lambda x: torch.log(x.abs() + 1e-3),
    "sin": torch.sin,
    "cos": torch.cos,
    "tanh": torch.tanh,
    "sqrt": lambda x: torch.sqrt(x.abs()),
    "rsqrt": lambda x: torch.rsqrt(x.abs() + 1e-3),
    "reciprocal": torch.reciprocal,
    "erf": torch.erf,
    "div": lambda x: x / 3.7,
}
# Replaced by the mode; the replacement must have the same property.
REPLACED: dict[str, Callable[[Tensor], Tensor]] = {
    "silu": F.silu,
    "sigmoid": torch.sigmoid,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "pow_scalar": lambda x: torch.pow(10000.0, x / 4),
    "square": lambda x: x.pow(2),
}


def _assert_position_free(fn: Callable[[Tensor], Tensor]) -> None:
    for n in (7, 33, 1000, 70_001):
        x = _randn(n, seed=n) * 3
        whole = fn(x)
        for start, stop in ((0, 1), (1, 9), (3, min(n, 40)), (n // 2, n), (0, n - 1)):
            assert torch.equal(fn(x[start:stop].clone()), whole[start:stop]), (n, start, stop)


@pytest.mark.parametrize("name", sorted(PASSED_THROUGH))
def test_elementwise_ops_passed_through_give_each_element_the_same_bits_anywhere(
    name: str,
) -> None:
    _assert_position_free(PASSED_THROUGH[name])


@pytest.mark.parametrize("name", sorted(REPLACED))
def test_replaced_activations_give_each_element_the_same_bits_anywhere(name: str) -> None:
    fn = REPLACED[name]

    def invariant(x: Tensor) -> Tensor:
        with InvariantMode(CPU):
            return fn(x)

    _assert_position_free(invariant)
    x = _randn(300, seed=9)
    torch.testing.assert_close(invariant(x), fn(x), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ the mode


def _under_mode(fn: Callable[[Tensor], Tensor]) -> tuple[Callable[[Tensor], Tensor], Counter[str]]:
    """``fn`` run in the mode, and how often each replacement ran."""
    counts: Counter[str] = Counter()

    def run(x: Tensor) -> Tensor:
        with InvariantMode(CPU) as mode:
            out = fn(x)
        counts.update(mode.counts)
        return out

    return run, counts


OPS: dict[str, tuple[Callable[[Tensor], Tensor], str]] = {
    "linear": (lambda x: F.linear(x, _randn(24, 40, seed=4), _randn(24, seed=5)), "addmm"),
    "linear_no_bias": (lambda x: F.linear(x, _randn(24, 40, seed=4)), "mm"),
    "bmm": (
        lambda x: torch.bmm(x.view(-1, 5, 8), _randn(1, 8, 6, seed=6).expand(x.shape[0], -1, -1)),
        "bmm",
    ),
    "baddbmm": (
        lambda x: torch.baddbmm(
            _randn(6, seed=17), x.view(-1, 5, 8), _randn(1, 8, 6, seed=6).expand(x.shape[0], -1, -1)
        ),
        "baddbmm",
    ),
    "mean": (lambda x: x.pow(2).mean(-1, keepdim=True), "mean"),
    "sum": (lambda x: x.sum(dim=(1,)), "sum"),
    "softmax": (lambda x: F.softmax(x, dim=-1), "_softmax"),
    "log_softmax": (lambda x: F.log_softmax(x, dim=-1), "_log_softmax"),
    "layer_norm": (
        lambda x: F.layer_norm(x, (40,), _randn(40, seed=7), _randn(40, seed=8)),
        "native_layer_norm",
    ),
    "vector_norm": (
        lambda x: torch.linalg.vector_norm(x, dim=1, keepdim=True),
        "linalg_vector_norm",
    ),
    "conv1d": (
        lambda x: F.conv1d(x.view(-1, 4, 10), _randn(3, 4, 3, seed=9), padding=1),
        "convolution",
    ),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_each_replaced_op_is_row_invariant_close_to_torch_and_counted(name: str) -> None:
    fn, op = OPS[name]
    x = _randn(11, 40, seed=10)
    run, counts = _under_mode(fn)
    together = _assert_row_invariant(run, x)
    torch.testing.assert_close(together, fn(x), rtol=1e-5, atol=1e-5)
    assert any(key.startswith(f"aten.{op}.") for key in counts), counts


def test_attention_with_padded_masked_keys_gives_the_unpadded_rows_bits() -> None:
    """What lets captions of different lengths share a call: a job padded to the batch's
    longest and masked gets exactly its unpadded, unmasked result (GQA: 4 heads, 2 K/V)."""
    q, k, v = _randn(1, 4, 6, 8, seed=11), _randn(1, 2, 5, 8, seed=12), _randn(1, 2, 5, 8, seed=13)

    def sdpa(query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None) -> Tensor:
        with InvariantMode(CPU) as mode:
            out = F.scaled_dot_product_attention(query, key, value, mask, enable_gqa=True)
        assert mode.counts["scaled_dot_product_attention"] == 1
        return out

    alone = sdpa(q, k, v)
    torch.testing.assert_close(alone, F.scaled_dot_product_attention(q, k, v, enable_gqa=True))
    pad = 7
    kp, vp = F.pad(k, (0, 0, 0, pad), value=3.0), F.pad(v, (0, 0, 0, pad), value=-2.0)
    keep = torch.arange(5 + pad) < 5
    assert torch.equal(sdpa(q, kp, vp, keep[None, None, None, :]), alone)
    additive = torch.zeros(5 + pad).masked_fill(~keep, torch.finfo(torch.float32).min)
    assert torch.equal(sdpa(q, kp, vp, additive[None, None, None, :]), alone)
    causal = sdpa(q, _randn(1, 4, 6, 8, seed=14), _randn(1, 4, 6, 8, seed=15))
    assert causal.shape == (1, 4, 6, 8)


def test_an_op_without_an_invariant_kernel_is_refused_not_run() -> None:
    x, eye = _randn(4, 5, seed=16), torch.eye(5)
    with InvariantMode(CPU), pytest.raises(UncoveredOp, match="cumsum"):
        torch.cumsum(x, dim=1)
    with InvariantMode(CPU), pytest.raises(UncoveredOp, match="addmm"):
        torch.addmm(x, x, eye, beta=0.5)
    with InvariantMode(CPU), pytest.raises(UncoveredOp, match=r"aten\.eye"):
        torch.eye(3)  # not listed as safe, so refused
    with InvariantMode(CPU):  # integer prefix sums are exact in any order
        assert torch.cumsum(torch.arange(4), 0).tolist() == [0, 1, 3, 6]
    assert torch.equal(torch.cumsum(x, dim=1), torch.cumsum(x, dim=1))  # outside: untouched


def test_the_mode_stays_on_the_thread_that_entered_it() -> None:
    seen: list[Exception | None] = []

    def other() -> None:
        try:
            torch.cumsum(_randn(3), 0)
            seen.append(None)
        except Exception as exc:
            seen.append(exc)

    with InvariantMode(CPU):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert seen == [None]
