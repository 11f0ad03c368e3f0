"""Putting requests on a chain for the tests: deploy a registry, request in bulk, raw calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_account import Account
from web3 import HTTPProvider, Web3

from acesteps import registry
from acesteps.chain import DEFAULT_RECLAIM_AFTER_BLOCKS
from acesteps.dev.devchain import dev_key
from acesteps.dev.solc import compile_sources

__all__ = ["ChainLoader", "Requested"]


@dataclass(frozen=True)
class Requested:
    request_id: str
    block_number: int
    log_index: int


class ChainLoader:
    """Synchronous helper around one anvil: signs with a dev account, tracks the nonce."""

    def __init__(self, url: str, account: int = 0) -> None:
        self.w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": 30}))
        self.account = Account.from_key(dev_key(account))
        self.nonce = self.w3.eth.get_transaction_count(self.account.address, "pending")
        self.registry: Any = None
        self.raw: dict[str, str] = {}
        """tx hash -> the signed transaction (0x-hex), to re-include it in a reorg."""

    def rpc(self, method: str, *params: object) -> Any:
        answer = self.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def _send(self, tx: dict[str, Any]) -> str:
        tx = {
            "chainId": 31337,
            "gas": 1_000_000,
            "maxFeePerGas": 10**11,
            "maxPriorityFeePerGas": 10**9,
            "nonce": self.nonce,
            **tx,
        }
        self.nonce += 1
        signed = self.account.sign_transaction(tx)
        tx_hash = "0x" + self.w3.eth.send_raw_transaction(
            signed.raw_transaction
        ).hex().removeprefix("0x")
        self.raw[tx_hash] = "0x" + bytes(signed.raw_transaction).hex()
        return tx_hash

    def wait(self, tx_hash: str) -> Any:
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
        assert receipt["status"] == 1, f"transaction {tx_hash} reverted"
        return receipt

    def deploy(
        self,
        abi: list[Any] | None = None,
        bytecode: str | None = None,
        args: tuple[Any, ...] | None = None,
    ) -> str:
        factory = self.w3.eth.contract(
            abi=abi or registry.abi(), bytecode=bytecode or registry.bytecode()
        )
        default = (self.account.address, 0, DEFAULT_RECLAIM_AFTER_BLOCKS)
        ctor_args = args if args is not None else default
        data = factory.constructor(*ctor_args).data_in_transaction
        receipt = self.wait(self._send({"data": data, "gas": 5_000_000}))
        address = str(receipt["contractAddress"])
        if abi is None:
            self.registry = self.w3.eth.contract(address=address, abi=registry.abi())
        return address

    def resync(self) -> None:
        """Take the nonce from the node again (a reorg dropped transactions of ours)."""
        self.nonce = self.w3.eth.get_transaction_count(self.account.address, "pending")

    def attach(self, address: str) -> ChainLoader:
        """Use the registry at ``address`` (deployed by another loader)."""
        self.registry = self.w3.eth.contract(address=address, abi=registry.abi())
        return self

    def registry_abi(self) -> list[Any]:
        return registry.abi()

    def request_data(self, prompt: str, lyrics: str = "", duration: int = 30) -> bytes:
        return bytes.fromhex(
            self.registry.encode_abi("requestGeneration", args=[prompt, lyrics, duration])[2:]
        )

    def raw_request(self, prompt: bytes, lyrics: bytes, duration: int) -> str:
        """requestGeneration with arbitrary bytes for the strings (Solidity never checks UTF-8)."""
        selector = self.request_data("x")[:4]
        data = selector + abi_encode(["bytes", "bytes", "uint32"], [prompt, lyrics, duration])
        return self._send({"to": self.registry.address, "data": data})

    def request(self, prompt: str = "a calm piano piece", duration: int = 30) -> str:
        return self._send(
            {"to": self.registry.address, "data": self.request_data(prompt, "", duration)}
        )

    def options_data(
        self, prompt: str, duration: int, options: tuple[Any, ...], lyrics: str = ""
    ) -> bytes:
        """Calldata of requestGenerationWithOptions; ``options`` is the 12-tuple of the
        contract's ``Options`` in its order: (hasSeed, seed, format, bpm, key, timeSignature,
        vocalLanguage, instrumental, tags, model, preset, variations), as `encode_options`
        makes it."""
        args = [prompt, lyrics, duration, tuple(options)]
        return bytes.fromhex(
            self.registry.encode_abi("requestGenerationWithOptions", args=args)[2:]
        )

    def request_with_options(
        self,
        prompt: str,
        duration: int,
        options: tuple[Any, ...],
        lyrics: str = "",
        value: int = 0,
    ) -> str:
        """requestGenerationWithOptions paying ``value`` (``requestFeeFor(model)`` per track);
        the tx hash."""
        data = self.options_data(prompt, duration, options, lyrics)
        return self._send({"to": self.registry.address, "data": data, "value": value})

    def requested(self, tx_hashes: list[str]) -> list[Requested]:
        out = []
        for tx_hash in tx_hashes:
            receipt = self.wait(tx_hash)
            # From the raw log: process_receipt would refuse strings that are not UTF-8. The
            # first GenerationRequested: the request's own (an options request also emits
            # RequestOptions, and one with variations their requests after its own).
            topic = registry.event_topic("GenerationRequested")
            log, *_ = [
                x
                for x in receipt["logs"]
                if x["address"] == self.registry.address and x["topics"][0].to_0x_hex() == topic
            ]
            out.append(
                Requested("0x" + log["topics"][1].hex(), receipt["blockNumber"], log["logIndex"])
            )
        return out

    def bulk(self, requests: int, per_block: int, empty_blocks_between: int) -> list[Requested]:
        """``requests`` requests, ``per_block`` to a block, empty blocks in between.

        One JSON-RPC batch per block group (anvil's dev accounts are unlocked, so
        ``eth_sendTransaction`` needs no signing here): seconds for thousands of requests.
        """
        self.rpc("evm_setAutomine", False)
        hashes: list[str] = []
        try:
            while len(hashes) < requests:
                batch = [
                    (
                        "eth_sendTransaction",
                        [
                            {
                                "from": self.account.address,
                                "to": self.registry.address,
                                "data": "0x"
                                + self.request_data(f"request number {len(hashes) + i}").hex(),
                                "gas": hex(300_000),
                                "nonce": hex(self.nonce + i),
                            }
                        ],
                    )
                    for i in range(min(per_block, requests - len(hashes)))
                ]
                batch.append(("evm_mine", []))
                if empty_blocks_between:
                    batch.append(("anvil_mine", [hex(empty_blocks_between)]))
                answers = self.w3.provider.make_batch_request(batch)  # type: ignore[arg-type]
                for answer in answers[: len(batch)]:
                    if "error" in answer:
                        raise RuntimeError(f"batch call failed: {answer['error']}")
                sent = [
                    a["result"] for a in answers[: len(batch) - (2 if empty_blocks_between else 1)]
                ]
                self.nonce += len(sent)
                hashes += sent
        finally:
            self.rpc("evm_setAutomine", True)
        logs = self.w3.eth.get_logs({"address": self.registry.address, "fromBlock": 0})
        assert len(logs) >= len(hashes)
        return [
            Requested("0x" + x["topics"][1].hex(), x["blockNumber"], x["logIndex"])
            for x in logs
            if "0x" + x["transactionHash"].hex() in set(hashes)
        ]

    def reorg(self, depth: int) -> None:
        """Replace the last ``depth`` blocks with empty ones; their transactions are dropped."""
        self.rpc("anvil_reorg", depth, [])
        self.nonce = self.w3.eth.get_transaction_count(self.account.address, "pending")

    def mine(self, blocks: int = 1) -> None:
        self.rpc("anvil_mine", hex(blocks))

    def head(self) -> int:
        return int(self.w3.eth.block_number)

    def impostor(self) -> Any:
        """A contract at another address emitting the same event with out-of-range data."""
        source = """
        // SPDX-License-Identifier: Apache-2.0
        pragma solidity ^0.8.24;
        contract Impostor {
            event GenerationRequested(bytes32 indexed requestId, address indexed requester,
                                      string prompt, string lyrics, uint32 durationSeconds);
            function fire(bytes32 id) external {
                emit GenerationRequested(id, msg.sender, "", "", 100000);
            }
        }
        """
        out = compile_sources({"Impostor.sol": source})["Impostor.sol"]["Impostor"]
        address = self.deploy(out["abi"], "0x" + out["evm"]["bytecode"]["object"], ())
        return self.w3.eth.contract(address=address, abi=out["abi"])

    def call(self, fn: Any) -> str:
        return self._send({"to": fn.address, "data": fn._encode_transaction_data()})
