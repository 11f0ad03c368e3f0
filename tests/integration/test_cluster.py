"""The whole service on a 3-node Kafka cluster (``scripts/stack up --brokers 3``): topics with
3 replicas and min.insync.replicas=2, clients connected with SASL_SSL and SCRAM-SHA-512, every
service configured only through the documented settings (`scripts/stack cluster env`).

A node is killed with SIGKILL while 100 requests flow, once a broker that is a follower in the
controller quorum and once the active controller; it comes back later. Nothing may be lost or
duplicated and every track must verify. The figures (time for the cluster to move on, and for
the quorum to elect a controller) are written to ``cluster-figures.jsonl`` in the stack's log
folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from acesteps.dev.localstack import StackSettings
from acesteps.kafka import connection
from acesteps.settings import CommonSettings
from tests.integration.cluster import (
    Cluster,
    Progress,
    assert_each_once,
    cluster_running,
    submit,
    until_final,
)
from tests.integration.pipeline import running_pipeline

REQUESTS = 100
DURATION_S = 5
# One caller sends all the requests at once, then asks for each twice a second.
UNLIMITED = {
    "ACESTEPS_API_GENERATE_BURST": str(REQUESTS),
    "ACESTEPS_API_GENERATE_PER_MINUTE": "6000",
    "ACESTEPS_API_READ_BURST": str(10 * REQUESTS),
    "ACESTEPS_API_READ_PER_MINUTE": "60000",
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    yield from cluster_running()


@pytest.fixture
def secure(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """This test process's own Kafka clients connect as the services do."""
    for key, value in cluster.settings().items():
        monkeypatch.setenv(key, value)
    connection.configure(CommonSettings().kafka_security())
    yield cluster
    connection.configure(connection.KafkaSecurity())


def figures(**values: object) -> None:
    with (StackSettings().log_dir / "cluster-figures.jsonl").open("a") as out:
        out.write(json.dumps(values) + "\n")


@pytest.mark.parametrize("victim", ["broker", "controller"])
async def test_a_node_killed_while_requests_flow_loses_and_duplicates_nothing(
    secure: Cluster, stack: CommonSettings, victim: str
) -> None:
    cluster = secure
    with running_pipeline(stack, common=cluster.settings(), **UNLIMITED) as pipeline:
        began = time.monotonic()
        ids = await submit(pipeline, REQUESTS, DURATION_S, f"cluster {victim} kill")
        progress = Progress(pipeline, ids)
        await progress.until(REQUESTS // 5, timeout_s=300)

        leader = cluster.leader()
        node = leader if victim == "controller" else next(n for n in (1, 2, 3) if n != leader)
        done_before = await progress.completed()
        assert done_before < REQUESTS - 20, "the kill must land while requests flow"
        killed_at = time.monotonic()
        cluster.kill(node)
        elected_s = None
        if victim == "controller":
            new_leader, elected_s = cluster.wait_new_leader(node)
            assert new_leader != node
        # The pipeline goes on with two nodes: ten more tracks complete with the node down.
        await progress.until(done_before + 1, timeout_s=300)
        first_after_s = time.monotonic() - killed_at
        await progress.until(done_before + 10, timeout_s=300)
        moved_on_s = time.monotonic() - killed_at
        assert await progress.completed() < REQUESTS, "the node came back too late to matter"
        cluster.start(node)
        down_s = time.monotonic() - killed_at

        records = await until_final(progress, timeout_s=600)
        total_s = time.monotonic() - began
        assert [r["status"] for r in records] == ["completed"] * REQUESTS
        await assert_each_once(pipeline, cluster.bootstrap, ids)
    figures(
        test=f"kill -9 {victim}",
        node=node,
        requests=REQUESTS,
        completed_before_kill=done_before,
        lost=0,
        duplicated=0,
        controller_elected_s=None if elected_s is None else round(elected_s, 2),
        first_completed_after_kill_s=round(first_after_s, 2),
        ten_more_completed_after_kill_s=round(moved_on_s, 2),
        node_down_s=round(down_s, 2),
        total_s=round(total_s, 2),
    )
