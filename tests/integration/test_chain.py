"""anvil answers JSON-RPC, and solc-js compiles a contract offline that anvil then runs."""

from __future__ import annotations

import pytest
from eth_account import Account
from web3 import AsyncHTTPProvider, AsyncWeb3

from acesteps.dev.solc import SolcError, compile_sources, solc_version
from acesteps.settings import CommonSettings

# anvil's first default account (a well-known development key, funded on every anvil).
DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"

COUNTER = """
// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;
contract Counter {
    event Bumped(address indexed by, uint256 value);
    uint256 public value;
    function bump(uint256 by) external { value += by; emit Bumped(msg.sender, value); }
}
"""


@pytest.fixture
async def w3(stack: CommonSettings):  # type: ignore[no-untyped-def]
    web3 = AsyncWeb3(AsyncHTTPProvider(stack.rpc_url))
    yield web3
    await web3.provider.disconnect()


async def test_anvil_answers_json_rpc(w3: AsyncWeb3) -> None:
    assert await w3.is_connected()
    assert await w3.eth.chain_id == 31337
    before = await w3.eth.block_number
    await w3.provider.make_request("evm_mine", [])
    assert await w3.eth.block_number == before + 1


def test_solc_version_is_pinned() -> None:
    assert solc_version().startswith("0.8.37+")


def test_solc_reports_errors() -> None:
    with pytest.raises(SolcError, match="Undeclared identifier"):
        compile_sources(
            {"Bad.sol": "pragma solidity ^0.8.0; contract B { function f() public { x = 1; } }"}
        )


async def test_compiled_contract_runs_on_anvil(w3: AsyncWeb3) -> None:
    out = compile_sources({"Counter.sol": COUNTER})["Counter.sol"]["Counter"]
    acct = Account.from_key(DEV_KEY)
    factory = w3.eth.contract(abi=out["abi"], bytecode="0x" + out["evm"]["bytecode"]["object"])

    async def send(tx_builder) -> dict:  # type: ignore[no-untyped-def,type-arg]
        tx = await tx_builder.build_transaction(
            {"from": acct.address, "nonce": await w3.eth.get_transaction_count(acct.address)}
        )
        signed = acct.sign_transaction(tx)
        tx_hash = await w3.eth.send_raw_transaction(signed.raw_transaction)
        return dict(await w3.eth.wait_for_transaction_receipt(tx_hash))

    receipt = await send(factory.constructor())
    counter = w3.eth.contract(address=receipt["contractAddress"], abi=out["abi"])
    await send(counter.functions.bump(7))
    receipt = await send(counter.functions.bump(5))

    assert await counter.functions.value().call() == 12
    (event,) = counter.events.Bumped().process_receipt(receipt)
    assert event["args"]["value"] == 12
    assert event["args"]["by"] == acct.address
