"""Development tooling, for a checkout of this repository: the local stack, the demo run, the
development chain's keys, and building the contract's artifacts with solc-js.

The services never import this package; the ``acesteps`` command imports it only for its
development commands (``up``, ``down``, ``demo``, ``contracts build|check``).
"""

from pathlib import Path
from typing import Final

CHECKOUT: Final = Path(__file__).resolve().parents[2]
"""The repository this package runs from (its tools need ``scripts/`` and ``contracts/``)."""
