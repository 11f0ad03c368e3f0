"""The generator's Prometheus metrics (served by `acesteps.metrics` on ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["BATCH_SIZE", "GPU_MEMORY", "REALTIME_FACTOR", "REQUESTS", "STAGE_SECONDS"]

REQUESTS = Counter(
    "acesteps_generator_requests_total",
    "Requests by outcome: generated, refused, failed (a failed attempt is retried or "
    "dead-lettered by the loop)",
    ["outcome"],
)
BATCH_SIZE = Histogram(
    "acesteps_generator_batch_size",
    "Jobs per model call",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
STAGE_SECONDS = Histogram(
    "acesteps_generator_stage_seconds",
    "Seconds per job and stage (model, encode, hash)",
    ["stage"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
REALTIME_FACTOR = Gauge(
    "acesteps_generator_realtime_factor",
    "Seconds of audio per second of model time, last model call",
)
GPU_MEMORY = Gauge(
    "acesteps_generator_gpu_memory_bytes",
    "CUDA memory: peak allocated during the last model call, and reserved now",
    ["kind"],
)
