"""Every served model of one generator: routed by name, loaded on first use, evicted LRU.

One topic carries the requests of every model (``PREFIX.requests.v1``); each request names
its model (the ``model`` option, absent: the operator's default, `acesteps.models`), and a
generator serves every model of ``ACESTEPS_MODELS``:

- `resolve` turns a request's model into a served name; a name this generator does not serve
  raises `UnknownModelError` (a `GenerationFailed` with code ``unknown_model``, never a
  crash; the API refuses such names before they are queued, so this is for records written
  by other producers, a chain request naming a model, or a generator configured with fewer
  models than the API);
- `model` gives the loaded `Model` for a name (loading it first, in the caller's thread: the
  worker calls it through ``asyncio.to_thread``), or, when the weights were evicted since, the
  evicted shell, which still tokenizes and describes (what validation and the manifest need);
- `loaded` gives it with its weights in memory: a model that is not loaded is located
  (downloaded if it must be), its size estimated from its safetensors headers, and the least
  recently used models are evicted until it fits ``ACESTEPS_GENERATOR_MEMORY_BUDGET`` (their
  weights dropped, `Model.release`); a model larger than the budget alone is loaded anyway,
  after evicting every other, with a warning;
- `plan` groups jobs by model first, then as that model allows (`Model.plan`), so jobs of
  different models never share a pipeline call; `generate` runs one group on its model.

Loading and model calls hold one lock: a load never runs beside a model call on the device.
Fetching a model's files (a first download) happens before, outside that lock, so the other
models keep generating meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from acesteps.models import Catalog, ServedModel, UnknownModel
from generator.errors import PermanentGeneratorError
from generator.hub import human
from generator.jobs import Job
from generator.model import Model, OnStep, estimate_bytes, load_located, locate
from generator.settings import GeneratorSettings

__all__ = ["ModelLoadFailed", "ServedModels", "UnknownModelError"]

log = logging.getLogger(__name__)


class UnknownModelError(PermanentGeneratorError):
    """The request names a model this generator does not serve."""

    code = "unknown_model"


class ModelLoadFailed(PermanentGeneratorError):
    """A served model could not be loaded (its files, its digest pin, the hub)."""

    code = "model_unavailable"


RETRY_LOAD_AFTER_S = 60.0
"""A model that failed to load is not tried again for this long: its requests fail at once."""

Loader = Callable[[ServedModel], Model]
"""Loads a served model; its estimate of the bytes it needs comes from ``estimate``."""


class ServedModels:
    def __init__(
        self,
        catalog: Catalog,
        load: Loader,
        *,
        budget_bytes: int | None = None,
        estimate: Callable[[ServedModel], int] | None = None,
        fetch: Callable[[ServedModel], object] | None = None,
    ) -> None:
        self.catalog = catalog
        self._load = load
        self._estimate = estimate or (lambda _served: 0)
        self._fetch = fetch or (lambda _served: None)
        """Brings a model's files here (a download), outside the device lock."""
        self._fetching: dict[str, threading.Lock] = {}
        self.budget_bytes = budget_bytes
        self._loaded: OrderedDict[str, Model] = OrderedDict()  # least recently used first
        self._shells: dict[str, Model] = {}
        self._failed: dict[str, tuple[str, float]] = {}
        self._state = threading.Lock()  # the dicts above
        self._device = threading.RLock()  # loads and model calls, one at a time
        self.evictions: list[str] = []
        """Names in the order their weights were dropped (for metrics and tests)."""

    @classmethod
    def from_settings(cls, settings: GeneratorSettings) -> ServedModels:
        """Every model of the settings, loaded by the production loader."""
        from generator.model import _prepare_device, resolve_dtype

        device = _prepare_device(settings)
        dtype = resolve_dtype(settings.generator_dtype, device)
        located: dict[str, Any] = {}

        def where(served: ServedModel) -> Any:
            if served.name not in located:
                located[served.name] = locate(settings, served, device)
            return located[served.name]

        def load(served: ServedModel) -> Model:
            return load_located(settings, served, where(served), device)

        return cls(
            settings.served(),
            load,
            budget_bytes=settings.generator_memory_budget,
            estimate=lambda served: estimate_bytes(where(served).path, dtype),
            fetch=where,
        )

    @classmethod
    def of(cls, *models: Model) -> ServedModels:
        """Already loaded models, by their names (the first is the default); for tests."""
        catalog = Catalog({m.name: ServedModel(m.name, m.spec) for m in models}, models[0].name)

        def reload(served: ServedModel) -> Model:
            raise ModelLoadFailed(f"model {served.name!r} cannot be loaded again here")

        served = cls(catalog, reload)
        served._loaded.update((model.name, model) for model in models)
        return served

    # -------------------------------------------------------------- names

    @property
    def default(self) -> str:
        return self.catalog.default

    def resolve(self, requested: str | None) -> str:
        """The served name of a request's ``model`` (None: the default)."""
        try:
            return self.catalog.resolve(requested).name
        except UnknownModel as exc:
            raise UnknownModelError(str(exc)) from None

    # -------------------------------------------------------------- loading

    def model(self, name: str) -> Model:
        """The model ``name`` for validation and description: loaded, or its evicted shell."""
        found = self.known(name)
        return found if found is not None else self.loaded(name)

    def known(self, name: str) -> Model | None:
        """The model ``name`` if it was loaded (its shell, if evicted since); never loads."""
        with self._state:
            return self._loaded.get(name) or self._shells.get(name)

    def loaded(self, name: str) -> Model:
        """The model ``name`` with its weights in memory, made most recently used."""
        served = self.catalog.resolve(name)
        with self._state:
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return self._loaded[name]
            failed = self._failed.get(name)
            fetching = self._fetching.setdefault(name, threading.Lock())
        if failed is not None and time.monotonic() - failed[1] < RETRY_LOAD_AFTER_S:
            raise ModelLoadFailed(failed[0])
        # 1. Its files (a download may take minutes): other models keep running meanwhile.
        with fetching:
            self._guarded(name, lambda: self._fetch(served))
        # 2. Room, then the weights onto the device: no model call runs meanwhile.
        with self._device:
            with self._state:
                if name in self._loaded:  # loaded by another thread meanwhile
                    self._loaded.move_to_end(name)
                    return self._loaded[name]
            self._guarded(name, lambda: self._make_room(name, self._estimate(served)))
            model: Model = self._guarded(name, lambda: self._load(served))
            with self._state:
                self._failed.pop(name, None)
                self._loaded[name] = model
                self._shells.pop(name, None)
            self._fit(name)
            return model

    def _guarded(self, name: str, step: Callable[[], Any]) -> Any:
        """``step()``; a failure becomes `ModelLoadFailed`, remembered for a while."""
        try:
            return step()
        except PermanentGeneratorError:
            raise
        except Exception as exc:  # its files, its digest pin, the hub: the operator's part
            message = f"model {name!r} cannot be loaded: {exc}"
            log.error("%s", message)
            with self._state:
                self._failed[name] = (message, time.monotonic())
            raise ModelLoadFailed(message) from exc

    def loaded_names(self) -> list[str]:
        """Loaded models, least recently used first."""
        with self._state:
            return list(self._loaded)

    def used_bytes(self) -> int:
        with self._state:
            models = list(self._loaded.values())
        return sum(m.memory_bytes() for m in models)

    def _make_room(self, name: str, needed: int) -> None:
        """Evict least recently used models until ``needed`` more bytes fit the budget."""
        if self.budget_bytes is None:
            return
        while (names := self.loaded_names()) and self.used_bytes() + needed > self.budget_bytes:
            self._evict(names[0])
        if needed > self.budget_bytes:
            log.warning(
                "model %r needs about %s, more than ACESTEPS_GENERATOR_MEMORY_BUDGET (%s) "
                "alone: loading it with no other model",
                name,
                human(needed),
                human(self.budget_bytes),
            )

    def _fit(self, keep: str) -> None:
        """After a load (the estimate may have been low): evict others until within budget."""
        if self.budget_bytes is None:
            return
        while len(names := self.loaded_names()) > 1 and self.used_bytes() > self.budget_bytes:
            self._evict(next(name for name in names if name != keep))

    def _evict(self, name: str) -> None:
        """Drop ``name``'s weights (under the device lock: no model call runs)."""
        with self._state:
            model = self._loaded.pop(name)
        size = human(model.memory_bytes())
        log.info("evicting model %r (%s) to stay within the memory budget", name, size)
        model.release()
        with self._state:
            self._shells[name] = model
            self.evictions.append(name)

    # -------------------------------------------------------------- running (the pipeline's)

    def plan(self, jobs: Sequence[Job]) -> list[list[int]]:
        """Groups of job indices: by model first, then as that model batches them."""
        by_model: dict[str, list[int]] = {}
        for i, job in enumerate(jobs):
            by_model.setdefault(job.model, []).append(i)
        groups: list[list[int]] = []
        for name, indices in by_model.items():
            model = self.known(name)
            if model is None:  # not prepared through `model` (tests): one job per call
                groups += [[i] for i in indices]
                continue
            groups += [[indices[i] for i in g] for g in model.plan([jobs[i] for i in indices])]
        return groups

    def generate(self, jobs: Sequence[Job], on_step: OnStep | None = None) -> list[Any]:
        """Run one group (all of one model) on that model, loading it first if need be."""
        names = {job.model for job in jobs}
        if len(names) != 1:
            raise ValueError(f"one pipeline call runs one model, got {sorted(names)}")
        (name,) = names
        while True:
            model = self.loaded(name)  # fetched, if need be, outside the device lock
            with self._device:
                if not model.released:  # not evicted by another load meanwhile
                    return model.generate(jobs, on_step)
