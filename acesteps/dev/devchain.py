"""anvil's well-known development accounts, for local use and tests only.

They derive from anvil's default mnemonic, are funded on every fresh anvil, and are public:
`dev_key` refuses any chain id other than anvil's default 31337.
"""

from __future__ import annotations

from eth_account import Account

__all__ = ["ANVIL_CHAIN_ID", "dev_key"]

ANVIL_CHAIN_ID = 31337
_MNEMONIC = "test test test test test test test test test test test junk"


def dev_key(index: int, chain_id: int = ANVIL_CHAIN_ID) -> str:
    """The private key (0x-hex) of anvil's account ``index``."""
    if chain_id != ANVIL_CHAIN_ID:
        raise ValueError(f"development keys are for anvil (chain {ANVIL_CHAIN_ID}), not {chain_id}")
    Account.enable_unaudited_hdwallet_features()
    account = Account.from_mnemonic(_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return "0x" + bytes(account.key).hex()
