"""Throughput of the whole pipeline with 1 and 2 generators, on the local one-node Kafka and on
the 3-node SASL_SSL cluster, as one JSON object.

    scripts/stack up && source .cache/run/stack.env
    .cache/venv/bin/python bench/cluster.py [--requests 60 --duration 5 --generators 1,2]

Each run is the real service as subprocesses (`tests.integration.pipeline`: a private anvil
with a fresh registry, the listener with its API, the generator with the tiny random-weight
model on CPU, the publisher) on a fresh topic prefix; with 2 generators a second generator
process joins the group under its own instance id. The cluster runs start it
(``scripts/stack cluster up``) unless it runs, and connect only through the documented
settings (``scripts/stack cluster env``). ``--requests`` HTTP requests of ``--duration``
seconds are submitted at once; the time is from the first submit until the API reports every
request completed (registered on chain, TrackPublished committed). On a machine with few
cores the generators compete with Kafka, Kubo, anvil and each other for the CPU: the ratio
says what a second generator buys *here*, not on GPUs.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import json
import os
import time
from typing import Any

from acesteps.kafka import connection
from acesteps.settings import CommonSettings
from tests.integration.cluster import Progress, cluster_running, submit
from tests.integration.pipeline import running_pipeline

UNLIMITED = {
    "ACESTEPS_API_GENERATE_BURST": "100000",
    "ACESTEPS_API_GENERATE_PER_MINUTE": "1000000",
    "ACESTEPS_API_READ_BURST": "100000",
    "ACESTEPS_API_READ_PER_MINUTE": "1000000",
}


async def one_run(
    stack: CommonSettings, common: dict[str, str], generators: int, n: int, duration: int
) -> dict[str, Any]:
    with running_pipeline(stack, common=common, **UNLIMITED) as pipeline:
        base = pipeline.service_env["generator"]["ACESTEPS_GENERATOR_INSTANCE_ID"]
        for i in range(2, generators + 1):
            pipeline.start(
                f"generator-{i}", "generator", ACESTEPS_GENERATOR_INSTANCE_ID=f"{base}-{i}"
            )
        began = time.monotonic()
        ids = await submit(pipeline, n, duration, "bench")
        progress = Progress(pipeline, ids)
        await progress.until(n, timeout_s=1800)
        seconds = time.monotonic() - began
    return {
        "generators": generators,
        "requests": n,
        "seconds": round(seconds, 2),
        "tracks_per_s": round(n / seconds, 3),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    stack = CommonSettings()
    counts = [int(x) for x in args.generators.split(",")]
    runs: dict[str, list[dict[str, Any]]] = {"local": [], "cluster": []}
    for generators in counts:
        runs["local"].append(await one_run(stack, {}, generators, args.requests, args.duration))
    clusters = cluster_running()
    cluster = next(clusters)
    try:
        saved = dict(os.environ)
        os.environ.update(cluster.settings())
        connection.configure(CommonSettings().kafka_security())
        try:
            for generators in counts:
                runs["cluster"].append(
                    await one_run(
                        stack, cluster.settings(), generators, args.requests, args.duration
                    )
                )
        finally:
            os.environ.clear()
            os.environ.update(saved)
            connection.configure(connection.KafkaSecurity())
    finally:
        clusters.close()
    ratios = {
        kafka: round(found[-1]["tracks_per_s"] / found[0]["tracks_per_s"], 3)
        for kafka, found in runs.items()
        if len(found) > 1
    }
    return {
        "bench": "cluster",
        "cpus": os.cpu_count(),
        "duration_s": args.duration,
        "runs": runs,
        f"throughput_ratio_{counts[-1]}_vs_{counts[0]}_generators": ratios,
        "cluster_vs_local_ratio": [
            round(c["tracks_per_s"] / loc["tracks_per_s"], 3)
            for c, loc in zip(runs["cluster"], runs["local"], strict=True)
        ],
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--generators", default="1,2", help="comma-separated counts")
    print(json.dumps(asyncio.run(main(ap.parse_args())), indent=2))
