"""Which of the generator's requests must stop: canceled, or past their deadline.

`acesteps.cancels.why_stop` over the cancels the `CancelView` has read and the deadlines of
the requests this generator has read (their records carry them). Asked before the model
work of a request and, through `generator.pipeline`, between denoising steps, from the
model's thread (plain dictionary reads).
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime

from acesteps.cancels import CancelView, Stop, why_stop
from acesteps.messages import GenerationRequest

__all__ = ["Stops"]

MAX_WATCHED = 10_000


class Stops:
    def __init__(self, view: CancelView | None = None) -> None:
        self.view = view
        self._deadlines: OrderedDict[str, datetime | None] = OrderedDict()

    def watch(self, request: GenerationRequest) -> None:
        """Remember the request's deadline until `done`."""
        self._deadlines[request.request_id] = request.deadline
        while len(self._deadlines) > MAX_WATCHED:  # records prefetched but never handled
            self._deadlines.popitem(last=False)

    def done(self, request_id: str) -> None:
        self._deadlines.pop(request_id, None)

    def why(self, request_id: str) -> Stop | None:
        return why_stop(self.view, request_id, self._deadlines.get(request_id))
