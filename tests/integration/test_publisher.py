"""The publisher as a real process (``python -m publisher``) against the real Kafka, Kubo and
a private anvil per test, fed as a generator feeds it.

Each test has its own topics (the ``settings`` fixture), its own anvil and contract, and its
own publisher instance id. A track is random bytes (1.2 MB, three chunks, about a 30 s MP3),
written to ``PREFIX.audio.v1`` as its chunks and its AudioReady in one Kafka transaction,
keyed by the request id. Every check reads the topics read_committed (what a downstream
consumer sees) and the chain itself (``trackOf``, ``TrackRegistered`` logs, the signer's
nonce).

The Kubo test stops a private Kubo for ``ACESTEPS_TEST_KUBO_DOWN_S`` seconds (default 60,
the outage the reliability requirement names); it dominates this file's runtime.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from eth_account import Account
from web3 import AsyncWeb3
from web3.contract import AsyncContract
from web3.types import Wei

from acesteps.chain import connect, deploy_registry
from acesteps.cli.verify import add_arguments, run_cli
from acesteps.deployment import Deployment
from acesteps.dev.devchain import dev_key
from acesteps.dev.localstack import StackSettings
from acesteps.hashing import keccak256_hex
from acesteps.ipfs.kubo import KuboClient
from acesteps.ipfs.unixfs import cid_of_bytes
from acesteps.kafka.admin import ensure_topics
from acesteps.kafka.producer import idempotent_producer, send_message, send_record
from acesteps.kafka.producer import transactional_producer as make_transactional_producer
from acesteps.kafka.records import OutRecord
from acesteps.messages import (
    TYPE_HEADER,
    AudioChunk,
    AudioReady,
    GenerationFailed,
    GenerationProgress,
    TrackPublished,
    decode,
)
from acesteps.registry import Registry, RequestStatus, offchain_request_id
from acesteps.settings import CommonSettings
from acesteps.topics import Topics
from tests.factories import manifest_for
from tests.integration.anvil import Anvil
from tests.integration.kafkaread import eventually, partitions, read_all
from tests.integration.kubo import Kubo
from tests.integration.services import ServiceProcess

KUBO_DOWN_S = float(os.environ.get("ACESTEPS_TEST_KUBO_DOWN_S", "60"))
TRACK_BYTES = 1_200_000  # 30 s of MP3 at 320 kbps: three 512 KiB chunks
FEE = 10**16
OWNER_KEY = dev_key(0)
PUBLISHER_KEY = dev_key(1)
PUBLISHER = Account.from_key(PUBLISHER_KEY).address
REQUESTER = Account.from_key(dev_key(3)).address
BYSTANDER = Account.from_key(dev_key(5)).address
ZERO = b"\x00" * 32


# ---------------------------------------------------------------------- tracks


@dataclass(frozen=True)
class Track:
    """One generated file of an HTTP request, and what a generator says about it."""

    request_id: str
    data: bytes
    offchain_id: str

    @property
    def audio_hash(self) -> str:
        return keccak256_hex(self.data)

    @property
    def cid(self) -> str:
        return cid_of_bytes(self.data)

    def chunks(self) -> list[AudioChunk]:
        return AudioChunk.split(self.request_id, self.data)

    def ready(self) -> AudioReady:
        return AudioReady(
            request_id=self.request_id,
            audio_hash=self.audio_hash,
            cid=self.cid,
            size_bytes=len(self.data),
            chunks=len(self.chunks()),
            format="mp3",
            sample_rate=44100,
            channels=2,
            duration_s=30,
            seed=1,
            model_id="test",
            source="http",
            offchain_id=self.offchain_id,
            manifest=manifest_for(self.request_id, self.data, offchain_id=self.offchain_id),
        )


def flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


# ---------------------------------------------------------------------- the harness


@dataclass
class Harness:
    """A private anvil with a fresh registry, this test's topics, and a generator's producer."""

    settings: CommonSettings
    anvil: Anvil
    w3: AsyncWeb3[Any]
    deployment: Deployment
    reg: AsyncContract
    producer: AIOKafkaProducer
    tmp: Path
    ipfs_api_url: str
    ipfs_gateway_url: str
    processes: list[ServiceProcess] = field(default_factory=list)

    @property
    def topics(self) -> Topics:
        return self.settings.topics

    async def deploy(self, fee: int = 0) -> None:
        """A new registry (``PUBLISHER`` has the publisher role) replaces the current one."""
        self.deployment = await deploy_registry(self.w3, OWNER_KEY, PUBLISHER, fee)
        self.reg = Registry(self.w3, self.deployment.address).contract

    def track(self, size: int = TRACK_BYTES) -> Track:
        """An HTTP request's track: fresh random bytes, which no other test (or earlier run)
        can have added to Kubo, under the id the registry derives from a new off-chain id."""
        offchain_id = "0x" + os.urandom(32).hex()
        rid = offchain_request_id(31337, self.deployment.address, offchain_id)
        return Track(rid, os.urandom(size), offchain_id)

    # -- the publisher

    def publisher(
        self,
        instance: str = "a",
        ipfs: Kubo | None = None,
        module: str = "publisher",
        env: dict[str, str] | None = None,
        **extra: object,
    ) -> ServiceProcess:
        """An unstarted ``python -m MODULE``; ``extra`` sets ``ACESTEPS_PUBLISHER_*``."""
        prefix = self.settings.topic_prefix
        values = {
            "ACESTEPS_KAFKA_BOOTSTRAP": self.settings.kafka_bootstrap,
            "ACESTEPS_TOPIC_PREFIX": prefix,
            "ACESTEPS_RPC_URL": self.anvil.url,
            "ACESTEPS_CONTRACT_ADDRESS": self.deployment.address,
            "ACESTEPS_DEPLOYMENT_FILE": str(self.tmp / "no-deployment.json"),
            "ACESTEPS_PRIVATE_KEY": PUBLISHER_KEY,
            "ACESTEPS_IPFS_API_URL": ipfs.api_url if ipfs else self.ipfs_api_url,
            "ACESTEPS_IPFS_GATEWAY_URL": ipfs.gateway_url if ipfs else self.ipfs_gateway_url,
            "ACESTEPS_IPFS_TIMEOUT_S": "30",
            "ACESTEPS_PUBLISHER_INSTANCE_ID": f"{prefix}-{instance}",
            "ACESTEPS_PUBLISHER_CONFIRMATIONS": "1",
            "ACESTEPS_PUBLISHER_TX_POLL_INTERVAL_S": "0.1",
            # This anvil mines only when sent something (tests hold transactions in its pool):
            # a registration is final in the head block (reorgs: tests/integration/test_reorg.py).
            "ACESTEPS_FINALITY_DEPTH": "1",
            **{f"ACESTEPS_PUBLISHER_{k.upper()}": str(v) for k, v in extra.items()},
            **(env or {}),
        }
        log = StackSettings().log_dir / f"publisher-{prefix}.log"
        proc = ServiceProcess(module, values, log)
        self.processes.append(proc)
        return proc

    # -- the audio topic, as a generator writes it

    async def send_records(self, records: Sequence[OutRecord]) -> None:
        """``records`` in one committed transaction."""
        await self.producer.begin_transaction()
        try:
            deliveries = [await send_record(self.producer, r) for r in records]
            await asyncio.gather(*deliveries)
        except BaseException:
            await self.producer.abort_transaction()
            raise
        await self.producer.commit_transaction()

    def records(self, track: Track, chunks: Iterable[AudioChunk] | None = None) -> list[OutRecord]:
        topic = self.topics.audio
        body = [OutRecord.chunk(topic, c) for c in (track.chunks() if chunks is None else chunks)]
        return [*body, OutRecord.message(topic, track.request_id, track.ready())]

    async def send(self, *tracks: Track) -> None:
        """Each track as a generator writes it: chunks then AudioReady, one transaction."""
        for track in tracks:
            await self.send_records(self.records(track))

    # -- what came out

    async def published(self) -> list[TrackPublished]:
        out = []
        for record in await read_all(self.settings.kafka_bootstrap, self.topics.tracks):
            if dict(record.headers)[TYPE_HEADER] != b"TrackPublished":
                continue  # TrackFinalized, RegistrationReorged: the finality loop's
            track = decode(TrackPublished, record.value)
            assert record.key == track.request_id.encode()
            out.append(track)
        return out

    async def failures(self) -> list[GenerationFailed]:
        records = await read_all(self.settings.kafka_bootstrap, self.topics.failures)
        return [decode(GenerationFailed, r.value) for r in records]

    async def wait_published(
        self, tracks: Sequence[Track], timeout_s: float = 60
    ) -> dict[str, TrackPublished]:
        wanted = {t.request_id for t in tracks}
        found: dict[str, TrackPublished] = {}

        async def done() -> bool:
            for proc in self.processes:  # those started and not killed on purpose
                assert proc.proc is None or proc.alive(), f"publisher exited:\n{proc.tail()}"
            found.clear()
            found.update({p.request_id: p for p in await self.published()})
            return wanted <= found.keys()

        await eventually(done, timeout_s, f"{len(wanted)} TrackPublished", interval_s=0.5)
        return {rid: found[rid] for rid in wanted}

    # -- the chain

    async def registrations(self) -> Counter[str]:
        logs = await self.reg.events.TrackRegistered().get_logs(from_block=0)
        return Counter("0x" + bytes(x["args"]["requestId"]).hex() for x in logs)

    async def registration_logs(self) -> dict[str, Any]:
        logs = await self.reg.events.TrackRegistered().get_logs(from_block=0)
        return {"0x" + bytes(x["args"]["requestId"]).hex(): x for x in logs}

    async def track_of(self, request_id: str) -> tuple[bytes, str]:
        audio_hash, cid = await self.reg.functions.trackOf(bytes.fromhex(request_id[2:])).call()
        return bytes(audio_hash), cid

    async def publisher_nonce(self, block: str = "latest") -> int:
        return int(await self.w3.eth.get_transaction_count(PUBLISHER, block))  # type: ignore[arg-type]

    async def skipped(self) -> Counter[str]:
        """Items of ``registerTracks`` the contract skipped (``TrackSkipped``), by request id."""
        logs = await self.reg.events.TrackSkipped().get_logs(from_block=0)
        return Counter("0x" + bytes(x["args"]["requestId"]).hex() for x in logs)

    async def assert_sent_once(self) -> None:
        """No track was sent for registration twice: no item skipped, and every transaction of
        the publisher registered something."""
        assert await self.skipped() == Counter(), "a track was sent for registration twice"
        logs = await self.reg.events.TrackRegistered().get_logs(from_block=0)
        transactions = {bytes(x["transactionHash"]) for x in logs}
        assert await self.publisher_nonce() == len(transactions), "a transaction was wasted"

    # -- the assertion every reliability test ends with

    async def assert_each_published_once(self, tracks: Sequence[Track]) -> None:
        """Each track: one TrackPublished (read_committed), one registration, the right one."""
        published = await self.published()
        counts = Counter(p.request_id for p in published)
        duplicated = {rid: n for rid, n in counts.items() if n > 1}
        assert not duplicated, f"TrackPublished more than once: {duplicated}"
        assert {t.request_id for t in tracks} <= counts.keys()
        registered = await self.registrations()
        assert all(n == 1 for n in registered.values()), f"registered twice: {registered}"
        logs = await self.registration_logs()
        by_id = {p.request_id: p for p in published}
        for track in tracks:
            assert registered[track.request_id] == 1
            assert await self.track_of(track.request_id) == (
                bytes.fromhex(track.audio_hash[2:]),
                track.cid,
            )
            pub, log = by_id[track.request_id], logs[track.request_id]
            assert (pub.audio_hash, pub.cid) == (track.audio_hash, track.cid)
            assert pub.tx_hash == "0x" + bytes(log["transactionHash"]).hex()
            assert pub.block_number == log["blockNumber"]
        assert await self.failures() == [], "something was dead-lettered"


@pytest.fixture
async def h(settings: CommonSettings, tmp_path: Path) -> AsyncIterator[Harness]:
    await ensure_topics(settings.kafka_bootstrap, settings.topic_specs())
    anvil = Anvil(StackSettings().log_dir, state=tmp_path / "anvil-state.json").start()
    w3 = connect(anvil.url)
    producer = make_transactional_producer(
        settings.kafka_bootstrap, f"{settings.topic_prefix}.test-generator"
    )
    await producer.start()
    harness: Harness | None = None
    try:
        deployment = await deploy_registry(w3, OWNER_KEY, PUBLISHER)
        harness = Harness(
            settings=settings,
            anvil=anvil,
            w3=w3,
            deployment=deployment,
            reg=Registry(w3, deployment.address).contract,
            producer=producer,
            tmp=tmp_path,
            ipfs_api_url=settings.ipfs_api_url,
            ipfs_gateway_url=settings.ipfs_gateway_url,
        )
        yield harness
    finally:
        for proc in harness.processes if harness else []:
            proc.stop()
        await producer.stop()
        await w3.provider.disconnect()
        anvil.stop()


@pytest.fixture
async def kubo(stack: CommonSettings) -> AsyncIterator[KuboClient]:
    async with KuboClient(stack.ipfs_api_url) as client:
        yield client


async def verify(h: Harness, *argv: str) -> int:
    """``acesteps verify ARGV`` against this test's chain, as the CLI runs it."""
    parser = argparse.ArgumentParser(prog="acesteps verify")
    add_arguments(parser)
    chain = ["--rpc-url", h.anvil.url, "--contract", h.deployment.address]
    return await run_cli(parser.parse_args([*argv, *chain]))


def logged(proc: ServiceProcess, words: str, times: int = 1) -> Callable[[], Awaitable[bool]]:
    """A check for `eventually`: ``words`` appear ``times`` times in the process's log."""

    async def check() -> bool:
        return proc.text().count(words) >= times

    return check


async def hold(seconds: float, procs: Sequence[ServiceProcess]) -> None:
    """Wait ``seconds``, failing at once if a publisher exits meanwhile."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for proc in procs:
            assert proc.alive(), f"publisher exited:\n{proc.tail()}"
        await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


# ---------------------------------------------------------------------- 1. the happy path


async def test_a_track_becomes_registered_and_verifiable(
    h: Harness, kubo: KuboClient, capsys: pytest.CaptureFixture[str]
) -> None:
    h.publisher().start()
    track = h.track()
    assert len(track.chunks()) == 3
    await h.send(track)

    pub = (await h.wait_published([track]))[track.request_id]

    # 1. TrackPublished says what was published, where and in which transaction.
    assert pub.request_id == track.request_id
    assert (pub.audio_hash, pub.cid) == (track.audio_hash, track.cid)
    assert pub.urls == (f"ipfs://{track.cid}", f"{h.ipfs_gateway_url}/ipfs/{track.cid}")
    assert pub.chain_id == 31337
    assert pub.contract.lower() == h.deployment.address.lower()
    receipt = await h.w3.eth.get_transaction_receipt(pub.tx_hash)  # type: ignore[arg-type]
    assert receipt["status"] == 1 and receipt["blockNumber"] == pub.block_number
    assert receipt["from"] == PUBLISHER
    ready = track.ready()
    assert (pub.format, pub.size_bytes, pub.seed, pub.model_id, pub.duration_s) == (
        ready.format,
        ready.size_bytes,
        ready.seed,
        ready.model_id,
        ready.duration_s,
    )
    await h.assert_each_published_once([track])
    hints = await read_all(h.settings.kafka_bootstrap, h.topics.progress)
    assert [
        (r.key.decode(), GenerationProgress.model_validate_json(r.value).stage) for r in hints
    ] == [(track.request_id, "publishing")]
    # 2. On chain and on IPFS.
    assert await h.track_of(track.request_id) == (bytes.fromhex(track.audio_hash[2:]), track.cid)
    assert await kubo.pin_ls(track.cid)
    assert await kubo.cat(track.cid) == track.data

    # 3. Anyone can check it: the pinned bytes match the registration...
    capsys.readouterr()
    assert await verify(h, track.request_id, "--ipfs-api-url", h.ipfs_api_url) == 0
    out = capsys.readouterr().out
    assert out.startswith("MATCH: "), out
    # ... and a copy with one byte changed does not.
    copy = h.tmp / "track.mp3"
    copy.write_bytes(flipped(track.data, 600_000))
    assert await verify(h, track.request_id, "--file", str(copy)) == 1
    out = capsys.readouterr().out
    assert out.startswith("MISMATCH: "), out


# ---------------------------------------------------------------------- 2. Kubo goes away


async def test_kubo_down_for_a_minute_loses_and_duplicates_nothing(
    h: Harness, tmp_path: Path
) -> None:
    """Kubo stopped ``KUBO_DOWN_S`` (60 s), five tracks arriving meanwhile.

    An unreachable Kubo is an `UnavailableError`: retried with capped back-off (0.5 s
    doubling up to 30 s) for as long as the outage lasts, never counted towards
    ``ACESTEPS_PUBLISHER_MAX_ATTEMPTS``, so no track is dead-lettered because of it.
    """
    node = Kubo(tmp_path / "ipfs", StackSettings().log_dir).start()
    try:
        proc = h.publisher(ipfs=node).start()
        first = h.track()
        await h.send(first)
        await h.wait_published([first])

        node.stop()
        down_at = time.monotonic()
        during = [h.track() for _ in range(5)]
        for track in during:
            await h.send(track)
        await eventually(logged(proc, "IpfsUnavailable"), 30, "the publisher to retry")
        await hold(KUBO_DOWN_S - (time.monotonic() - down_at), [proc])
        # Nothing can have been published without IPFS, nor given up on.
        assert [p.request_id for p in await h.published()] == [first.request_id]
        assert await h.failures() == []

        node.start()  # same repository and ports
        await h.wait_published(during, timeout_s=120)
        await h.assert_each_published_once([first, *during])
        async with KuboClient(node.api_url) as client:
            for track in [first, *during]:
                assert await client.pin_ls(track.cid)
        assert proc.alive()
    finally:
        node.stop()


# ---------------------------------------------------------------------- 3. anvil restarts


async def test_anvil_restarted_mid_stream_loses_and_duplicates_nothing(h: Harness) -> None:
    proc = h.publisher().start()
    tracks = [h.track() for _ in range(6)]
    await h.send(tracks[0])
    await h.wait_published(tracks[:1])
    head = await h.w3.eth.block_number

    # Three tracks in flight when the node goes; two more arrive while it is gone.
    await h.send(*tracks[1:4])
    await eventually(logged(proc, "registered in", times=2), 30, "a second registration")
    h.anvil.stop()
    await h.send(*tracks[4:])
    await hold(5, [proc])
    h.anvil.start()  # same port, chain state reloaded
    assert await h.w3.eth.block_number >= head

    await h.wait_published(tracks, timeout_s=120)
    await h.assert_each_published_once(tracks)
    await h.assert_sent_once()
    assert proc.alive()


# ---------------------------------------------------------------------- 4. kill -9 after mining


async def test_kill9_after_the_registration_is_mined_registers_once(h: Harness) -> None:
    # Blocks only when the test mines them: the registration can be seen mined while the
    # publisher still waits for its 3 confirmations, so its Kafka transaction cannot have
    # begun.
    h.anvil.rpc("evm_setAutomine", False)
    proc = h.publisher(confirmations=3).start()
    track = h.track()
    await h.send(track)

    async def sent() -> bool:
        return await h.publisher_nonce("pending") == 1

    await eventually(sent, 60, "the registration transaction in the pool", interval_s=0.1)
    h.anvil.rpc("evm_mine")
    assert (await h.registrations())[track.request_id] == 1
    await eventually(logged(proc, "registerTracks: sent"), 10, "the publisher's log of it")
    await asyncio.sleep(0.5)  # it polls the receipt, then the confirmations: mined, 1 deep
    assert not proc.mentions("registered in"), "the publisher did not wait for confirmations"
    proc.kill9()
    assert await h.published() == []
    uncommitted = await read_all(h.settings.kafka_bootstrap, h.topics.tracks, "read_uncommitted")
    assert uncommitted == [], "the killed publisher got as far as producing"

    h.anvil.rpc("anvil_mine", hex(5))
    again = h.publisher(confirmations=3).start()  # same instance id: fences the dead one
    await h.wait_published([track])

    await h.assert_each_published_once([track])
    # One transaction ever from the publisher's key, and none waiting in the pool.
    assert await h.publisher_nonce("latest") == await h.publisher_nonce("pending") == 1
    assert again.mentions("already registered")


# ---------------------------------------------------------------------- 5. poison audio


async def test_broken_files_are_dead_lettered_and_nothing_is_pinned_or_registered(
    h: Harness, kubo: KuboClient
) -> None:
    proc = h.publisher().start()
    missing, duplicated, tampered = h.track(), h.track(), h.track()
    c = missing.chunks()
    await h.send_records(h.records(missing, [c[0], c[2]]))
    c = duplicated.chunks()
    await h.send_records(h.records(duplicated, [c[0], c[1], c[1], c[2]]))
    c = tampered.chunks()
    bad = AudioChunk(
        request_id=tampered.request_id, sequence=1, total=3, data=flipped(c[1].data, 1000)
    )
    await h.send_records(h.records(tampered, [c[0], bad, c[2]]))
    good = h.track()
    await h.send(good)

    await h.wait_published([good])

    async def three_failures() -> bool:
        return len(await h.failures()) >= 3

    await eventually(three_failures, 30, "three GenerationFailed", interval_s=0.5)
    failures = {f.request_id: f for f in await h.failures()}
    assert len(failures) == 3
    expected = {
        missing.request_id: "missing_chunks",
        duplicated.request_id: "corrupt_audio",
        tampered.request_id: "corrupt_audio",
    }
    assert {rid: f.code for rid, f in failures.items()} == expected
    for failure in failures.values():
        assert failure.stage == "publisher" and failure.retryable is False
    assert "[1]" in failures[missing.request_id].message
    assert "appears twice" in failures[duplicated.request_id].message
    assert "audioHash" in failures[tampered.request_id].message

    for track in (missing, duplicated, tampered):
        # The genuine bytes' CID (fresh random bytes: nobody else ever added them).
        assert not await kubo.pin_ls(track.cid)
        assert await h.track_of(track.request_id) == (ZERO, "")
    tampered_file = c[0].data + bad.data + c[2].data
    assert not await kubo.pin_ls(cid_of_bytes(tampered_file))
    assert await h.registrations() == Counter({good.request_id: 1})
    assert [p.request_id for p in await h.published()] == [good.request_id]
    assert proc.alive()


# ---------------------------------------------------------------------- 6. a stolen nonce


async def test_a_nonce_taken_by_another_sender_loses_no_track(h: Harness) -> None:
    proc = h.publisher().start()
    before, after = h.track(), h.track()
    await h.send(before)
    await h.wait_published([before])
    assert await h.publisher_nonce() == 1

    # Someone else sends from the publisher's key: the nonce the publisher holds is taken.
    account = Account.from_key(PUBLISHER_KEY)
    tx = {
        "to": BYSTANDER,
        "value": 1,
        "gas": 21_000,
        "maxFeePerGas": 10**11,
        "maxPriorityFeePerGas": 10**9,
        "nonce": 1,
        "chainId": 31337,
    }
    stolen = await h.w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
    assert (await h.w3.eth.wait_for_transaction_receipt(stolen))["status"] == 1

    await h.send(after)
    await h.wait_published([after])

    await h.assert_each_published_once([before, after])
    assert await h.publisher_nonce() == 3
    assert proc.mentions("nonce 1 refused")


# ---------------------------------------------------------------------- 7. refunds


async def test_a_failed_onchain_request_is_refunded_exactly_once(h: Harness) -> None:
    await h.deploy(fee=FEE)
    call = h.reg.functions.requestGeneration("a calm piano piece", "", 30)
    tx_hash = await call.transact({"from": REQUESTER, "value": Wei(FEE)})
    receipt = await h.w3.eth.wait_for_transaction_receipt(tx_hash)
    (event,) = h.reg.events.GenerationRequested().process_receipt(receipt)
    rid = "0x" + bytes(event["args"]["requestId"]).hex()
    balance = await h.w3.eth.get_balance(REQUESTER)
    h.publisher().start()

    # The generator refused it, and the record arrives twice (a retried producer, a replay).
    failed = GenerationFailed(
        request_id=rid, stage="generator", code="policy_refused", message="named artist"
    )
    http_id = "0x" + os.urandom(32).hex()  # never requested on chain: nothing to mark
    http_failed = failed.model_copy(update={"request_id": http_id})
    producer = idempotent_producer(h.settings.kafka_bootstrap)
    await producer.start()
    try:
        for message in (failed, http_failed, failed):
            await (await send_message(producer, h.topics.failures, message.request_id, message))
    finally:
        await producer.stop()

    group = f"{h.settings.topic_prefix}.publisher.failures"
    await eventually(
        lambda: _consumed_all(h.settings.kafka_bootstrap, group, h.topics.failures),
        60,
        "the publisher to consume the failures",
        interval_s=0.5,
    )
    assert await h.w3.eth.get_balance(REQUESTER) == balance + FEE
    logs = await h.reg.events.GenerationFailed().get_logs(from_block=0)
    assert [("0x" + bytes(x["args"]["requestId"]).hex(), x["args"]["refund"]) for x in logs] == [
        (rid, FEE)
    ]
    assert await Registry(h.w3, h.reg.address).status(rid) == RequestStatus.FAILED
    assert await h.publisher_nonce("pending") == 1, "markFailed was sent more than once"


async def _consumed_all(bootstrap: str, group: str, topic: str) -> bool:
    """Whether ``group`` committed offsets past every record of ``topic``.

    For topics written without transactions, where the end offset follows the last record.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(await partitions(bootstrap, topic))
    finally:
        await consumer.stop()
    return all(
        end == 0 or (tp in committed and committed[tp].offset >= end) for tp, end in ends.items()
    )


# ---------------------------------------------------------------------- 8. batches


async def mine_until_published(h: Harness, tracks: Sequence[Track]) -> None:
    """With automine off: mine a block at a time until every track is published."""
    wanted = {t.request_id for t in tracks}

    async def published() -> bool:
        h.anvil.rpc("evm_mine")
        return wanted <= {p.request_id for p in await h.published()}

    await eventually(published, 120, f"{len(wanted)} TrackPublished", interval_s=0.5)


async def transactions(h: Harness) -> Counter[bytes]:
    """Registrations per transaction."""
    logs = await h.reg.events.TrackRegistered().get_logs(from_block=0)
    return Counter(bytes(x["transactionHash"]) for x in logs)


async def test_a_burst_goes_out_in_batches_with_several_in_flight(h: Harness) -> None:
    h.anvil.rpc("evm_setAutomine", False)
    h.publisher(batch_size=4, max_in_flight=3, batch_wait_ms=300).start()
    tracks = [h.track() for _ in range(12)]
    await h.send(*tracks)

    async def three_in_the_pool() -> bool:
        return await h.publisher_nonce("pending") - await h.publisher_nonce("latest") >= 3

    await eventually(three_in_the_pool, 60, "three registration transactions in flight")
    await mine_until_published(h, tracks)

    await h.assert_each_published_once(tracks)
    await h.assert_sent_once()
    per_tx = await transactions(h)
    assert max(per_tx.values()) <= 4 and len(per_tx) >= 3
    assert len(per_tx) < len(tracks), f"not batched: {sorted(per_tx.values())}"


async def test_kill9_with_a_batch_in_the_pool_registers_each_track_once(h: Harness) -> None:
    h.anvil.rpc("evm_setAutomine", False)
    proc = h.publisher().start()
    tracks = [h.track() for _ in range(5)]
    await h.send(*tracks)

    async def in_the_pool() -> bool:
        return await h.publisher_nonce("pending") >= 1

    await eventually(in_the_pool, 60, "a registration transaction in the pool", interval_s=0.1)
    proc.kill9()  # sent, not mined: nothing is registered or announced yet
    assert await h.published() == [] and await h.registrations() == Counter()

    # The restart finds nothing registered and sends again; the first transaction wins, the
    # second one's items are skipped as registered and read back.
    h.publisher().start()
    await mine_until_published(h, tracks)
    await h.assert_each_published_once(tracks)
    assert set(await h.skipped()) <= {t.request_id for t in tracks}


async def test_kill9_during_a_fee_bump_registers_each_track_once(h: Harness) -> None:
    h.anvil.rpc("evm_setAutomine", False)
    proc = h.publisher(tx_pending_timeout_s=1).start()
    tracks = [h.track() for _ in range(3)]
    await h.send(*tracks)
    await eventually(logged(proc, "pending too long; replaced by"), 60, "a fee bump")
    proc.kill9()
    h.anvil.rpc("evm_mine")  # the replacement is mined; the original is gone

    again = h.publisher().start()
    await h.wait_published(tracks)
    await h.assert_each_published_once(tracks)
    await h.assert_sent_once()  # the restart found them registered: nothing sent again
    assert await h.publisher_nonce("latest") == await h.publisher_nonce("pending")
    assert again.mentions("already registered")


async def test_kill9_after_confirming_before_committing_publishes_each_once(h: Harness) -> None:
    marker = h.tmp / "paused"
    proc = h.publisher(
        module="tests.integration.publisher_worker", env={"PUBTEST_MARKER": str(marker)}
    ).start()
    tracks = [h.track() for _ in range(4)]
    await h.send(*tracks)

    async def paused() -> bool:
        assert proc.alive(), f"publisher exited:\n{proc.tail()}"
        return marker.exists()

    await eventually(paused, 60, "the publisher to pause before committing TrackPublished")
    written = await read_all(h.settings.kafka_bootstrap, h.topics.tracks, "read_uncommitted")
    assert written, "the paused transaction holds TrackPublished records"
    assert await h.published() == []
    registered = await h.registrations()
    assert registered, "confirmed on chain before the commit"
    proc.kill9()

    h.publisher().start()  # same instance id: fences the dead one, its transaction aborts
    await h.wait_published(tracks)
    await h.assert_each_published_once(tracks)
    await h.assert_sent_once()
