"""The batch-invariant mode: every torch op of a pipeline call either has a kernel whose result
for one batch item is independent of the others, or fails loudly.

`InvariantMode` is a pair of torch modes, entered together on the calling thread only (the
mode stacks are thread-local, so a worker thread in this mode never changes another's ops):

- a ``TorchFunctionMode`` replaces ``F.scaled_dot_product_attention`` before torch picks a
  fused backend: `attention` is a materialised ``softmax(q k^T * scale + mask) v`` built from
  the invariant kernels, so masked (padded) keys contribute exactly zero;
- a ``TorchDispatchMode`` sees every aten op the call runs. Ops whose reduction order can
  depend on the batch (matrix products, sums and means, softmax, norms, convolutions) go to
  their replacements (`generator.invariant.ops`); ops that cannot (views, copies, indexing,
  exact reductions such as max, elementwise ops whose vector and scalar code agree) run as
  they are;
  any other op raises `UncoveredOp`, so a model that needs a kernel the mode lacks is refused
  instead of silently losing invariance.

Which kernels: on the CPU the elementwise compositions of `generator.invariant.reference`; on
CUDA the fixed-tile Triton kernels of `generator.invariant.triton_ops` (triton is then
required: falling back would change the bytes). Convolutions run one batch item at a time,
which is exactly the single run's call. `counts` tells how often each replacement ran.
"""

from __future__ import annotations

from collections import Counter
from types import TracebackType
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

from generator.invariant.kernels import Kernels, UncoveredOp, kernels_for
from generator.invariant.ops import IN_PLACE, INTEGER_ONLY, REPLACED, SAFE, attention

__all__ = ["InvariantMode", "UncoveredOp"]


def _name(func: Any) -> str:
    return str(func.overloadpacket.__name__).rstrip("_")


class _Dispatch(TorchDispatchMode):
    def __init__(self, kernels: Kernels, counts: Counter[str]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.kernels = kernels
        self.counts = counts

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func in IN_PLACE:
            out = REPLACED[IN_PLACE[func]](self.kernels, *args, **kwargs)
            self.counts[str(IN_PLACE[func])] += 1
            return args[0].copy_(out)
        replacement = REPLACED.get(func)
        if replacement is not None:
            self.counts[str(func)] += 1
            return replacement(self.kernels, *args, **kwargs)
        name = _name(func)
        if name in SAFE:
            return func(*args, **kwargs)
        if name in INTEGER_ONLY and not args[0].is_floating_point():
            return func(*args, **kwargs)
        raise UncoveredOp(
            f"the batch-invariant mode has no kernel for {func}: it cannot promise that this "
            "op's result for one item is independent of its batch; run this model with "
            "ACESTEPS_GENERATOR_BATCH_MODE=sequential"
        )


class _Functions(TorchFunctionMode):
    def __init__(self, kernels: Kernels, counts: Counter[str]) -> None:
        super().__init__()
        self.kernels = kernels
        self.counts = counts

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        if func is F.scaled_dot_product_attention:
            self.counts["scaled_dot_product_attention"] += 1
            with _disable_current_modes():  # the kernels' own ops, as for a replacement
                return attention(self.kernels, *args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


class InvariantMode:
    """``with InvariantMode(device): ...``: the calls inside run batch-invariant (see the
    module docstring). Reentrant per instance is not supported; make one per call."""

    def __init__(self, device: torch.device | str) -> None:
        self.kernels = kernels_for(torch.device(device))
        self.counts: Counter[str] = Counter()
        self._modes: list[Any] = []

    def __enter__(self) -> InvariantMode:
        functions = _Functions(self.kernels, self.counts)
        dispatch = _Dispatch(self.kernels, self.counts)
        functions.__enter__()  # type: ignore[no-untyped-call]
        try:
            dispatch.__enter__()  # type: ignore[no-untyped-call]
        except BaseException:
            functions.__exit__(None, None, None)  # type: ignore[no-untyped-call]
            raise
        self._modes = [functions, dispatch]
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        functions, dispatch = self._modes
        self._modes = []
        try:
            dispatch.__exit__(kind, value, traceback)
        finally:
            functions.__exit__(kind, value, traceback)
