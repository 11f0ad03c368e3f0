"""Throughput of the publisher's hashes on one 50 MB buffer, as one JSON object.

Usage: ``python bench/hashing.py [--size-mb 50] [--runs 5]``

Measures, in one process and on the same random buffer, the best of ``--runs`` timings of:
keccak256 one-shot (``audioHash``), keccak256 streamed in 512 KiB pieces (as the publisher
reads audio chunks), the local CID computation (`acesteps.ipfs.unixfs.cid_of_bytes`) and
``hashlib.sha256`` as the yardstick. MB/s use 10**6 bytes; ratios are to sha256 measured in
the same run, so they compare across machines better than the absolute numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable

from acesteps.hashing import Keccak256, keccak256
from acesteps.ipfs.unixfs import cid_of_bytes

PIECE = 512 * 1024


def _best_seconds(fn: Callable[[], object], runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _keccak_streamed(view: memoryview) -> bytes:
    hasher = Keccak256()
    for start in range(0, len(view), PIECE):
        hasher.update(view[start : start + PIECE])
    return hasher.digest()


def main() -> None:
    parser = argparse.ArgumentParser(description="hash throughput on one random buffer")
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    data = os.urandom(args.size_mb * 10**6)
    view = memoryview(data)
    cases: dict[str, Callable[[], object]] = {
        "sha256": lambda: hashlib.sha256(data).digest(),
        "keccak256": lambda: keccak256(data),
        "keccak256_streamed_512KiB": lambda: _keccak_streamed(view),
        "cid_v1_raw_balanced": lambda: cid_of_bytes(data),
    }
    mb_per_s = {
        name: round(len(data) / 10**6 / _best_seconds(fn, args.runs), 1)
        for name, fn in cases.items()
    }
    print(
        json.dumps(
            {
                "bench": "hashing",
                "size_bytes": len(data),
                "runs": args.runs,
                "python": platform.python_version(),
                "machine": platform.machine(),
                "mb_per_s": mb_per_s,
                "ratio_to_sha256": {
                    name: round(speed / mb_per_s["sha256"], 3)
                    for name, speed in mb_per_s.items()
                    if name != "sha256"
                },
            }
        )
    )


if __name__ == "__main__":
    main()
