"""Where a registry was deployed: the file ``acesteps contracts deploy`` writes.

Settings read it to find the contract (when ``ACESTEPS_CONTRACT_ADDRESS`` is unset) and the
block it was deployed in (where log scans start).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict

__all__ = ["Deployment"]


class Deployment(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    chain_id: int
    address: str
    block_number: int
    tx_hash: str
    deployer: str
    publisher: str
    request_fee_wei: int
    bytecode_hash: str | None = None
    """keccak256 of the creation bytecode deployed (absent in files of older versions)."""
    reclaim_after_blocks: int | None = None
    """The registry's ``reclaimAfterBlocks`` (absent in files of older versions, whose
    contract has no ``reclaim``)."""

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=2) + "\n")
        tmp.replace(path)  # readers never see half a file

    @classmethod
    def load(cls, path: Path) -> Deployment:
        """Raises OSError or ValueError (pydantic's ValidationError is one)."""
        return cls.model_validate(json.loads(path.read_text()))
