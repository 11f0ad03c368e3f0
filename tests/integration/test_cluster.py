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

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from eth_account import Account

from acesteps.dev.devchain import dev_key
from acesteps.dev.localstack import StackSettings
from acesteps.kafka import connection
from acesteps.kafka.admin import topic_configs
from acesteps.settings import CommonSettings
from tests.integration.cluster import (
    Cluster,
    Progress,
    assert_each_once,
    cluster_running,
    submit,
    until_final,
)
from tests.integration.kafkaread import eventually
from tests.integration.pipeline import running_pipeline
from tests.integration.services import ServiceProcess

REQUESTS = 100
SESSION_TIMEOUT_S = 10  # acesteps.kafka.consuming.LoopConfig.session_timeout_ms
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
    """This test process's own Kafka clients connect as the services do; every node up."""
    cluster.heal()
    for key, value in cluster.settings().items():
        monkeypatch.setenv(key, value)
    connection.configure(CommonSettings().kafka_security())
    yield cluster
    connection.configure(connection.KafkaSecurity())


async def joined(proc: ServiceProcess) -> None:
    """Until ``proc`` (a consume loop's service) holds partitions of its group."""

    async def holding() -> bool:
        assert proc.alive(), proc.tail()
        return "assigned [TopicPartition" in proc.text()

    await eventually(holding, 120, f"{proc.module} to join its group")


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
        # The status projection may catch up in one jump after the kill: how many were done
        # when the node came back is a figure, not a condition.
        done_at_restart = await progress.completed()
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
        completed_when_the_node_came_back=done_at_restart,
        total_s=round(total_s, 2),
    )


def topics_create(cluster: Cluster, prefix: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "acesteps.cli", "topics", "create"],
        env={**os.environ, **cluster.settings(), "ACESTEPS_TOPIC_PREFIX": prefix, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_clients_connect_only_with_the_right_credentials_and_ca(secure: Cluster) -> None:
    cluster = secure
    prefix = f"t{uuid.uuid4().hex[:12]}"
    made = topics_create(cluster, prefix)
    assert made.returncode == 0, made.stderr[-2000:]
    assert f"{prefix}.requests.v1" in made.stdout.split()
    configs = await topic_configs(cluster.bootstrap, f"{prefix}.requests.v1")
    assert configs["min.insync.replicas"] == "2"
    # What exists is checked against the settings: 3 replicas were made, 2 are now asked for.
    other = topics_create(cluster, prefix, ACESTEPS_KAFKA_REPLICATION_FACTOR="2")
    assert other.returncode == 1 and "replication factor [3], spec 2" in other.stderr
    refused = {
        "wrong password": ({"ACESTEPS_KAFKA_SASL_PASSWORD": "wrong"}, "SaslAuthenticationFailed"),
        "unknown CA": ({"ACESTEPS_KAFKA_SSL_CAFILE": ""}, "CERTIFICATE_VERIFY_FAILED"),
    }
    for what, (env, reason) in refused.items():
        answer = topics_create(cluster, f"t{uuid.uuid4().hex[:12]}", **env)
        assert answer.returncode == 1, what
        assert reason in answer.stderr and "error: KafkaConnectionError" in answer.stderr, what


async def test_scaled_out_workers_killed_frozen_and_replaced_lose_and_duplicate_nothing(
    secure: Cluster, stack: CommonSettings
) -> None:
    """Two generators and two publishers share their groups (distinct instance ids). Under
    load: one of each is killed with SIGKILL mid-batch; a third generator joins (rebalance);
    one generator is frozen (SIGSTOP) past its session timeout while the others take its
    partitions, then resumes as a zombie with a batch in hand; another is frozen and replaced
    by a process with its instance id, whose transactional id fences it: resumed, it must
    stop without writing."""
    cluster = secure
    with running_pipeline(stack, common=cluster.settings(), **UNLIMITED) as pipeline:
        second_key = dev_key(2)
        chain = pipeline.chain
        chain.wait(
            chain.call(
                chain.registry.functions.setPublisher(Account.from_key(second_key).address, True)
            )
        )
        generator = pipeline.service_env["generator"]["ACESTEPS_GENERATOR_INSTANCE_ID"]
        publisher = pipeline.service_env["publisher"]["ACESTEPS_PUBLISHER_INSTANCE_ID"]
        pipeline.start("generator-2", "generator", ACESTEPS_GENERATOR_INSTANCE_ID=generator + "-2")
        pipeline.start(
            "publisher-2",
            "publisher",
            ACESTEPS_PUBLISHER_INSTANCE_ID=publisher + "-2",
            ACESTEPS_PRIVATE_KEY=second_key,
        )
        began = time.monotonic()
        ids = await submit(pipeline, REQUESTS, DURATION_S, "scale-out")
        progress = Progress(pipeline, ids)

        # 1. SIGKILL of one generator and one publisher while both groups work.
        await progress.until(10, timeout_s=300)
        pipeline.services["generator-2"].kill9()
        pipeline.services["publisher-2"].kill9()
        del pipeline.services["generator-2"]
        # 2. A rebalance under load: a third generator joins; the killed publisher comes back.
        third = pipeline.start(
            "generator-3", "generator", ACESTEPS_GENERATOR_INSTANCE_ID=generator + "-3"
        )
        pipeline.start(
            "publisher-2",
            "publisher",
            ACESTEPS_PUBLISHER_INSTANCE_ID=publisher + "-2",
            ACESTEPS_PRIVATE_KEY=second_key,
        )
        await joined(third)  # a process starts in seconds (torch): the group waits for it
        await progress.until(30, timeout_s=300)

        # 3. A zombie: generator-3 frozen past its session, its partitions go to the first
        #    generator, then it resumes with the batch it was handling.
        frozen = pipeline.services.pop("generator-3")
        frozen.signal(signal.SIGSTOP)
        await asyncio.sleep(SESSION_TIMEOUT_S + 5)
        frozen.signal(signal.SIGCONT)
        pipeline.services["generator-3"] = frozen

        async def stall_seen() -> bool:
            return frozen.mentions("stood still")

        await eventually(stall_seen, 30, "the resumed generator to see its stall")
        await progress.until(50, timeout_s=300)

        # 4. Fencing by transactional id: the first generator frozen, a process with its
        #    instance id started in its place; resumed, the old one is fenced and stops.
        old = pipeline.services.pop("generator")
        old.signal(signal.SIGSTOP)
        await joined(pipeline.start("generator-1b", "generator"))  # the same instance id
        await progress.until(60, timeout_s=300)
        old.signal(signal.SIGCONT)
        assert old.wait(timeout_s=60) != 0, "the replaced generator went on"
        # What stops it first depends on timing: its producer is fenced (the new process's
        # InitProducerId bumped the epoch), or it refuses to commit what it held (it stood
        # still past its session) and the group refuses its stale membership. Either way it
        # wrote nothing: every record is checked once below.
        stopped_by = [w for w in ("ProducerFenced", "not committing") if old.mentions(w)]
        assert stopped_by, old.tail()

        records = await until_final(progress, timeout_s=600)
        assert [r["status"] for r in records] == ["completed"] * REQUESTS
        await assert_each_once(pipeline, cluster.bootstrap, ids)
        for name in ("generator-1b", "generator-3", "publisher", "publisher-2"):
            assert pipeline.services[name].alive(), name
        total_s = time.monotonic() - began
        refused = sum(p.text().count("not committing") for p in [*pipeline.services.values(), old])
    figures(
        test="scale-out: 2 generators + 2 publishers; kill -9 of one each, a third generator "
        "joins, one frozen past its session, one frozen and replaced (fenced)",
        requests=REQUESTS,
        lost=0,
        duplicated=0,
        batches_refused_by_the_zombie_checks=refused,
        replaced_generator_stopped_by=stopped_by,
        total_s=round(total_s, 2),
    )
