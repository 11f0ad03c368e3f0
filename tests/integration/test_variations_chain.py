"""Variations of a chain request through the real stack (listener, generator, publisher,
IPFS, anvil): the contract makes the request's variations in its transaction, each paid by
its own share of the fee; the services see one ordinary request per track and register each
on its own; the variations' records and registered manifests name their parent."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import pytest

from acesteps.chainoptions import encode_options
from acesteps.hashing import keccak256_hex
from acesteps.manifest import manifest_hash, parse_manifest
from acesteps.settings import CommonSettings
from acesteps.variations import default_seed, variation_key
from tests.integration.kafkaread import eventually
from tests.integration.pipeline import Pipeline, record_where, running_pipeline

FEE = 10**15
FAILED = 3  # the contract's Status


@pytest.fixture(scope="module")
def pipeline(stack: CommonSettings) -> Iterator[Pipeline]:
    with running_pipeline(stack) as running:
        running.chain.wait(running.chain.call(running.chain.registry.functions.setRequestFee(FEE)))
        yield running


def _raw(request_id: str) -> bytes:
    return bytes.fromhex(request_id[2:])


async def test_a_chain_request_with_three_variations_makes_three_verifiable_tracks(
    stack: CommonSettings, pipeline: Pipeline
) -> None:
    chain, registry = pipeline.chain, pipeline.chain.registry
    me = chain.account.address
    tx = chain.request_with_options(
        "a calm piano piece, three takes", 5, encode_options(variations=3, bpm=96), value=3 * FEE
    )
    receipt = chain.wait(tx)
    (requested,) = chain.requested([tx])
    parent = requested.request_id
    ids = [parent, variation_key(parent, 1), variation_key(parent, 2)]

    # Paid: three fees, one share each.
    block = receipt["blockNumber"]
    paid = chain.w3.eth.get_balance(registry.address, block) - chain.w3.eth.get_balance(
        registry.address, block - 1
    )
    assert paid == 3 * FEE
    for request_id in ids:
        stored = registry.functions.requests(_raw(request_id)).call()
        assert (stored[0], stored[3]) == (me, FEE)

    records = [
        await record_where(pipeline, rid, lambda g: g["status"] == "completed", f"track {rid}")
        for rid in ids
    ]
    assert len({r["audioHash"] for r in records}) == 3  # three seeds, three tracks
    base = default_seed(parent)
    assert [r["seed"] for r in records] == [base, (base + 1) % 2**32, (base + 2) % 2**32]
    assert records[0]["variations"] == 3 and records[0]["children"] == ids[1:]
    for index, record in enumerate(records[1:], 1):
        assert (record["parent"], record["variation"], record["bpm"]) == (parent, index, 96)
        assert record.get("variations") is None

    async with aiohttp.ClientSession() as http:
        for index, (rid, record) in enumerate(zip(ids, records, strict=True)):
            # Verifiable on its own: the chain's hash of the request is the file's.
            on_hash, on_cid = registry.functions.trackOf(_raw(rid)).call()
            assert ("0x" + bytes(on_hash).hex(), on_cid) == (record["audioHash"], record["cid"])
            async with http.get(f"{stack.ipfs_gateway_url}/ipfs/{on_cid}") as answer:
                assert answer.status == 200
                assert keccak256_hex(await answer.read()) == record["audioHash"]
            assert registry.functions.verify(_raw(rid), on_hash).call()
            async with http.get(f"{pipeline.api_url}/api/generations/{rid}/verify") as answer:
                verdict = await answer.json()
            assert verdict["status"] == "MATCH", verdict
            lineage = (verdict["parentId"], verdict["variation"], verdict["lineage"])
            assert lineage == (
                (None, None, None) if index == 0 else (parent, index, "parentOf on chain")
            )
            # Its registered manifest names its parent and index (the parent's, its variations).
            async with http.get(f"{pipeline.api_url}/api/generations/{rid}/manifest") as answer:
                assert answer.status == 200, await answer.text()
                data = await answer.read()
            on_chain = registry.functions.provenanceOf(_raw(rid)).call()
            assert "0x" + bytes(on_chain[0]).hex() == manifest_hash(data)
            manifest = parse_manifest(data)
            assert manifest.request.request_id == rid
            assert manifest.output.file.audio_hash == record["audioHash"]
            if index == 0:
                assert manifest.request.parent_id is None and manifest.request.variation is None
                assert manifest.request.options.variations == 3
            else:
                assert (manifest.request.parent_id, manifest.request.variation) == (parent, index)
                assert manifest.request.options.variations is None
                assert manifest.request.options.seed == (base + index) % 2**32
    # The publisher took each request's own fee.
    assert registry.functions.collectedFees().call() == 3 * FEE


async def test_a_refused_request_with_variations_is_refunded_share_by_share(
    pipeline: Pipeline,
) -> None:
    chain, registry = pipeline.chain, pipeline.chain.registry
    tx = chain.request_with_options(
        "a waltz", 5, encode_options(variations=2, bpm=500), value=2 * FEE
    )
    (requested,) = chain.requested([tx])
    ids = [requested.request_id, variation_key(requested.request_id, 1)]
    for rid in ids:  # each refused by the listener, as its parent is
        failed = await record_where(
            pipeline, rid, lambda g: g["status"] == "failed", f"the failure of {rid}"
        )
        assert failed["error"]["code"] == "invalid_request", failed

        async def refunded(rid: str = rid) -> bool:
            return int(registry.functions.requests(_raw(rid)).call()[1]) == FAILED

        await eventually(refunded, 60, f"the refund of {rid}")
    logs = registry.events.GenerationFailed().get_logs(from_block=0)
    refunds = {"0x" + bytes(e["args"]["requestId"]).hex(): e["args"]["refund"] for e in logs}
    assert [refunds[rid] for rid in ids] == [FEE, FEE]
