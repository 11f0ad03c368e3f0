"""The batch-invariant Triton kernels (`generator.invariant.triton_ops`), bit for bit.

The CPU tests run the kernels in the Triton interpreter (``TRITON_INTERPRET=1``, set per test,
so it works whatever imported triton before) with the interpreter's 16-wide tiles, on shapes
that cross tile borders: several M row tiles, a K tail, an N tail, several row chunks. The
``gpu`` tests check the same properties on CUDA at realistic sizes (bfloat16; float32 too for
the matmul).
"""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("triton", reason="the batch-invariant kernels are Triton kernels")

from generator.invariant import triton_ops

M, K, N = 37, 29, 23  # 3 row tiles of 16, a K tail of 13, an N tail of 7
ROWS, COLS = 9, 50  # 4 row chunks of 16, the last one partial
INF = math.inf


@pytest.fixture
def interpret(monkeypatch: pytest.MonkeyPatch) -> None:
    """The interpreter for this test; the kernels are decorated per mode at first use."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")


cpu = pytest.mark.usefixtures("interpret")
MATMUL_DTYPES = [torch.float32, torch.bfloat16]


def randn(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def test_the_cpu_shapes_cross_tile_borders() -> None:
    assert M > 2 * triton_ops.INTERPRET_BLOCK_M and M % triton_ops.INTERPRET_BLOCK_M
    assert K > triton_ops.INTERPRET_BLOCK_K and K % triton_ops.INTERPRET_BLOCK_K
    assert N > triton_ops.INTERPRET_BLOCK_N and N % triton_ops.INTERPRET_BLOCK_N
    assert COLS > 2 * triton_ops.INTERPRET_ROW_BLOCK and COLS % triton_ops.INTERPRET_ROW_BLOCK


@cpu
def test_available_under_the_interpreter() -> None:
    assert triton_ops.available()


@cpu
def test_cpu_tensors_without_the_interpreter_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        triton_ops.row_sum(randn(2, 3))


# ------------------------------------------------------------------ matmul


@cpu
@pytest.mark.parametrize("dtype", MATMUL_DTYPES)
def test_matmul_is_close_to_torch(dtype: torch.dtype) -> None:
    a, b = randn(2, M, K, dtype=dtype), randn(2, K, N, dtype=dtype, seed=1)
    c = triton_ops.matmul(a, b)
    assert c.dtype == dtype and c.shape == (2, M, N)
    want = a.double() @ b.double()
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(c.double(), want, rtol=tol, atol=tol)


@cpu
@pytest.mark.parametrize("dtype", MATMUL_DTYPES)
def test_matmul_rows_do_not_depend_on_m_or_position(dtype: torch.dtype) -> None:
    a, b = randn(2, M, K, dtype=dtype), randn(2, K, N, dtype=dtype, seed=1)
    full = triton_ops.matmul(a, b)
    for m in (1, 3, 17, M):
        assert torch.equal(triton_ops.matmul(a[:, :m], b), full[:, :m]), m
    for i in range(M):
        assert torch.equal(triton_ops.matmul(a[:, i : i + 1], b), full[:, i : i + 1]), i
    # every row in another tile and another place within its tile
    flipped = triton_ops.matmul(a.flip(1), b)
    assert torch.equal(flipped, full.flip(1))


@cpu
@pytest.mark.parametrize("dtype", MATMUL_DTYPES)
def test_matmul_batch_items_are_independent(dtype: torch.dtype) -> None:
    a, b = randn(3, M, K, dtype=dtype), randn(3, K, N, dtype=dtype, seed=1)
    full = triton_ops.matmul(a, b)
    for j in range(3):
        assert torch.equal(triton_ops.matmul(a[j : j + 1], b[j : j + 1]), full[j : j + 1]), j
    others = a.clone()
    others[1:] = randn(2, M, K, dtype=dtype, seed=2)
    assert torch.equal(triton_ops.matmul(others, b)[0], full[0])


@cpu
@pytest.mark.parametrize("dtype", MATMUL_DTYPES)
@pytest.mark.parametrize("pad", [3, 35])  # within the last K chunk; two chunks more
def test_matmul_zero_padded_k_changes_nothing(dtype: torch.dtype, pad: int) -> None:
    a, b = randn(2, M, K, dtype=dtype), randn(2, K, N, dtype=dtype, seed=1)
    a_pad = torch.cat([a, torch.zeros(2, M, pad, dtype=dtype)], dim=2)
    b_pad = torch.cat([b, torch.zeros(2, pad, N, dtype=dtype)], dim=1)
    assert torch.equal(triton_ops.matmul(a_pad, b_pad), triton_ops.matmul(a, b))


@cpu
def test_matmul_takes_any_strides() -> None:
    a, b = randn(2, M, K), randn(2, K, N, seed=1)
    b_t = b.transpose(1, 2).contiguous().transpose(1, 2)  # the same values, column-major
    a_t = a.transpose(1, 2).contiguous().transpose(1, 2)
    assert not b_t.is_contiguous() and not a_t.is_contiguous()
    assert torch.equal(triton_ops.matmul(a_t, b_t), triton_ops.matmul(a, b))


@cpu
def test_matmul_rejects_mismatched_operands() -> None:
    with pytest.raises(ValueError):
        triton_ops.matmul(randn(1, 2, 3), randn(1, 4, 5))
    with pytest.raises(TypeError):
        triton_ops.matmul(randn(1, 2, 3), randn(1, 3, 5, dtype=torch.bfloat16))


# ------------------------------------------------------------------ row sum and softmax


@cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_row_sum_is_close_to_torch(dtype: torch.dtype) -> None:
    x = randn(ROWS, COLS, dtype=dtype)
    s = triton_ops.row_sum(x)
    assert s.dtype == torch.float32 and s.shape == (ROWS,)
    torch.testing.assert_close(s.double(), x.double().sum(1), rtol=1e-5, atol=1e-5)


@cpu
def test_row_sum_rows_do_not_depend_on_the_others_and_zeros_change_nothing() -> None:
    x = randn(ROWS, COLS) * torch.logspace(-3, 3, COLS)  # rounding depends on the order
    full = triton_ops.row_sum(x)
    for r in (1, 4, ROWS):
        assert torch.equal(triton_ops.row_sum(x[:r]), full[:r]), r
    for i in range(ROWS):
        assert torch.equal(triton_ops.row_sum(x[i : i + 1]), full[i : i + 1]), i
    assert torch.equal(triton_ops.row_sum(x.flip(0)), full.flip(0))
    for pad in (6, 40):
        padded = torch.cat([x, torch.zeros(ROWS, pad)], dim=1)
        assert torch.equal(triton_ops.row_sum(padded), full), pad


@cpu
@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_softmax_is_close_to_torch(log: bool, dtype: torch.dtype) -> None:
    x = randn(ROWS, COLS, dtype=dtype) * 4
    y = triton_ops.softmax(x, log=log)
    assert y.dtype == dtype and y.shape == x.shape
    want = (torch.log_softmax if log else torch.softmax)(x.double(), dim=1)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(y.double(), want, rtol=tol, atol=tol)


@cpu
@pytest.mark.parametrize("log", [False, True])
def test_softmax_rows_do_not_depend_on_the_others_and_minus_inf_changes_nothing(
    log: bool,
) -> None:
    x = randn(ROWS, COLS) * 4
    x[2, 5:] = -INF  # a masked row inside the batch
    full = triton_ops.softmax(x, log=log)
    for i in range(ROWS):
        assert torch.equal(triton_ops.softmax(x[i : i + 1], log=log), full[i : i + 1]), i
    assert torch.equal(triton_ops.softmax(x.flip(0), log=log), full.flip(0))
    for pad in (6, 40):
        padded = triton_ops.softmax(torch.cat([x, torch.full((ROWS, pad), -INF)], 1), log=log)
        assert torch.equal(padded[:, :COLS], full), pad
        assert bool((padded[:, COLS:] == (-INF if log else 0.0)).all())


@cpu
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("log", [False, True])
def test_softmax_of_an_all_minus_inf_row_is_nan_like_torch(log: bool) -> None:
    x = randn(3, COLS)
    x[1] = -INF
    y = triton_ops.softmax(x, log=log)
    want = (torch.log_softmax if log else torch.softmax)(x, dim=1)
    assert bool(y[1].isnan().all()) and bool(want[1].isnan().all())
    assert torch.equal(y[[0, 2]], triton_ops.softmax(x[[0, 2]], log=log))


@cpu
def test_attention_with_padded_keys_equals_the_unpadded_one() -> None:
    """What the mode relies on: masked keys get probability exactly 0 and add exactly 0."""
    q, k, v = randn(2, 7, 16), randn(2, K, 16, seed=1), randn(2, K, 16, seed=2)

    def attend(keys: torch.Tensor, values: torch.Tensor, valid: int) -> torch.Tensor:
        scores = triton_ops.matmul(q, keys.transpose(1, 2))
        scores[:, :, valid:] = -INF
        probs = triton_ops.softmax(scores.reshape(-1, keys.shape[1])).reshape(scores.shape)
        return triton_ops.matmul(probs, values)

    pad = 20  # padded keys and values hold junk, not zeros
    k_pad = torch.cat([k, randn(2, pad, 16, seed=3)], dim=1)
    v_pad = torch.cat([v, randn(2, pad, 16, seed=4)], dim=1)
    alone = attend(k, v, K)
    assert torch.equal(attend(k_pad, v_pad, K), alone)
    want = torch.softmax(q.double() @ k.double().transpose(1, 2), -1) @ v.double()
    torch.testing.assert_close(alone.double(), want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ CUDA


@pytest.fixture
def compiled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def cuda_randn(*shape: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    return randn(*shape, dtype=dtype, seed=seed).cuda()


@pytest.mark.gpu
@pytest.mark.usefixtures("compiled")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gpu_matmul_is_batch_invariant(dtype: torch.dtype) -> None:
    depth, width = 2048, 2048
    a, b = cuda_randn(1, 256, depth, dtype=dtype), cuda_randn(1, depth, width, dtype=dtype, seed=1)
    full = triton_ops.matmul(a, b)
    torch.testing.assert_close(
        full.double(), a.double() @ b.double(), rtol=2e-2, atol=2e-2 * math.sqrt(depth)
    )
    for m in (1, 2, 3, 17, 63, 64, 65, 128, 200, 255, 256):
        assert torch.equal(triton_ops.matmul(a[:, :m], b), full[:, :m]), m
    for i in (0, 1, 63, 64, 100, 255):
        assert torch.equal(triton_ops.matmul(a[:, i : i + 1], b), full[:, i : i + 1]), i
    pad = 77
    a_pad = torch.cat([a, torch.zeros_like(a[:, :, :pad])], dim=2)
    b_pad = torch.cat([b, torch.zeros_like(b[:, :pad])], dim=1)
    assert torch.equal(triton_ops.matmul(a_pad, b_pad), full)
    items = cuda_randn(4, 64, depth, dtype=dtype, seed=2)
    shared = b.expand(4, depth, width)
    batched = triton_ops.matmul(items, shared)
    for j in range(4):
        assert torch.equal(triton_ops.matmul(items[j : j + 1], b), batched[j : j + 1]), j


@pytest.mark.gpu
@pytest.mark.usefixtures("compiled")
def test_gpu_row_sum_and_softmax_are_batch_invariant() -> None:
    x = cuda_randn(256, 2048, dtype=torch.bfloat16) * 4
    sums = triton_ops.row_sum(x)
    torch.testing.assert_close(sums.double(), x.double().sum(1), rtol=1e-4, atol=1e-3)
    for log in (False, True):
        full = triton_ops.softmax(x, log=log)
        want = (torch.log_softmax if log else torch.softmax)(x.double(), dim=1)
        torch.testing.assert_close(full.double(), want, rtol=2e-2, atol=2e-2)
        padded = torch.cat([x, torch.full_like(x[:, :300], -INF)], dim=1)
        assert torch.equal(triton_ops.softmax(padded, log=log)[:, :2048], full)
        for r in (1, 2, 3, 17, 64, 65, 200, 256):
            assert torch.equal(triton_ops.softmax(x[:r], log=log), full[:r]), r
            assert torch.equal(triton_ops.softmax(x[r - 1 : r], log=log), full[r - 1 : r]), r
    for r in (1, 3, 64, 65, 256):
        assert torch.equal(triton_ops.row_sum(x[:r]), sums[:r]), r
        assert torch.equal(triton_ops.row_sum(x[r - 1 : r]), sums[r - 1 : r]), r
    padded = torch.cat([x, torch.zeros_like(x[:, :300])], dim=1)
    assert torch.equal(triton_ops.row_sum(padded), sums)
