"""``python -m listener`` whose webhooks see test DNS and can reach 127.0.0.1 only.

The same service from the same environment (`acesteps.service.main` runs
`listener.service.run_listener`); two differences, both in the API's webhooks: host names
resolve through `tests.webhookfakes.MapResolver`, from the JSON file ``WEBHOOKTEST_HOSTS``
(read at every lookup, so a test can change an answer; no DNS server is ever asked), and the
deliverer's connector is `tests.webhookfakes.LoopbackOnlyConnector`, which connects to
127.0.0.1 only and writes any other address it is asked for to ``WEBHOOKTEST_VIOLATIONS``
(the test fails on it). The seams live here, not in the library.

    WEBHOOKTEST_HOSTS=/tmp/h.json WEBHOOKTEST_VIOLATIONS=/tmp/v ACESTEPS_... \\
        python -m tests.integration.webhook_worker
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import listener.api.service
from acesteps.service import main
from listener.api.webhooks.deliverer import Deliverer
from listener.api.webhooks.targets import TargetPolicy
from listener.service import run_listener
from listener.settings import ListenerSettings
from tests.webhookfakes import MapResolver, loopback_connector

HOSTS = Path(os.environ["WEBHOOKTEST_HOSTS"])
VIOLATIONS = Path(os.environ["WEBHOOKTEST_VIOLATIONS"])


def table_targets(**kwargs: Any) -> TargetPolicy:
    """The service's target rules, with the test's DNS table."""
    return TargetPolicy(resolver=MapResolver(path=HOSTS), **kwargs)


class FencedDeliverer(Deliverer):
    """The service's deliverer with the loopback-only connector (and a quicker poll)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, connector=loopback_connector(VIOLATIONS), poll_s=0.1, **kwargs)


listener.api.service.TargetPolicy = table_targets  # type: ignore[misc,assignment]
listener.api.service.Deliverer = FencedDeliverer  # type: ignore[misc]

if __name__ == "__main__":
    raise SystemExit(main("listener", ListenerSettings, run_listener))
