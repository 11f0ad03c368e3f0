"""Batch-invariant generation: a batch of jobs gives every job exactly its single run's bytes.

`generator.invariant.mode` runs a pipeline call with kernels whose result for one item does
not depend on the rest of its batch (`reference` on the CPU, `triton_ops` on CUDA) and
refuses any op it has no such kernel for; `generator.invariant.masks` lets jobs with captions
and lyrics of different token lengths share a call. The worker uses both in the
``invariant`` batch mode (`generator.model`).
"""
