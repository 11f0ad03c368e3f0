"""`acesteps.rpcfailover.FailoverHTTPProvider` and the listener on several RPC URLs, against
a real anvil behind proxies that answer as troubled providers do."""

from __future__ import annotations

from acesteps.chain import connect
from acesteps.messages import GenerationRequest
from acesteps.rpcfailover import FailoverHTTPProvider
from acesteps.settings import CommonSettings
from tests.integration.anvil import Anvil, free_port
from tests.integration.chainload import ChainLoader
from tests.integration.listening import (
    ListenerProcess,
    of_type,
    requests_topic,
    wait_checkpoint,
)
from tests.integration.rpcproxy import RpcProxy


async def test_a_failing_or_rate_limited_node_hands_over_to_the_next(anvil: Anvil) -> None:
    first = await RpcProxy(anvil.url).start()
    second = await RpcProxy(anvil.url).start()
    w3 = connect(first.url, 2.0, [second.url])
    provider = w3.provider
    assert isinstance(provider, FailoverHTTPProvider)
    try:
        head = await w3.eth.block_number
        assert provider.current == 0 and head >= 0

        first.fail(["rate_limited"] * 50)  # a provider out of quota for a while
        assert await w3.eth.block_number == head
        assert provider.current == 1 and first.faulted == 1, "one try, then the next URL"
        assert await w3.eth.chain_id == 31337
        assert first.faulted == 1, "it stays on the URL that answers"

        first.faults.clear()
        second.fail(["http_502", "truncated"])
        assert await w3.eth.block_number == head
        assert provider.current == 0 and second.faulted == 1

        second.faults.clear()
        first.hang_s = 3.0
        first.fail(["hang"])
        assert await w3.eth.block_number == head, "a timeout moves on too"
        assert provider.current == 1 and first.faulted == 2

        second.fail(["http_429"])
        assert await w3.eth.block_number == head
        assert provider.current == 0 and second.faulted == 2

        first.fail(["http_502"])
        second.fail(["http_502"])
        try:
            await w3.eth.block_number
        except Exception as exc:  # every URL failed: the last error, for the caller's retries
            assert "502" in str(exc)
        else:
            raise AssertionError("no URL answered, yet the call succeeded")
    finally:
        await w3.provider.disconnect()
        await first.stop()
        await second.stop()


async def test_the_listener_reads_through_its_fallback_when_the_first_node_is_gone(
    topics: CommonSettings, anvil: Anvil, listeners: list[ListenerProcess]
) -> None:
    loader = ChainLoader(anvil.url)
    contract = loader.deploy()
    made = loader.requested([loader.request(f"song {i}") for i in range(3)])
    anvil.rpc("anvil_mine", hex(1))
    gone = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proc = ListenerProcess(topics, gone, contract, confirmations=1)
    proc.env["ACESTEPS_RPC_FALLBACK_URLS"] = anvil.url
    listeners.append(proc.start())
    await wait_checkpoint(topics, made[-1].block_number, proc)
    emitted = [r.request_id for r in of_type(await requests_topic(topics), GenerationRequest)]
    assert sorted(emitted) == sorted(r.request_id for r in made)
    assert proc.mentions("now using " + anvil.url)
