"""The models this deployment serves, as the live workers describe them in their heartbeats.

The API never reads weights or the model zoo: a model exists when ``R2_MODELS`` names it or a live worker
announces it in its heartbeat (models trained through ``POST /v1/models/{name}/train``), and what it can do
(moments or saliency only, its domain, its fps) comes from the :class:`ModelCard` a worker loading it reports.
Heartbeats are read at most once per ``refresh_s`` on the request path, so a warm query costs no Redis round
trip here (:meth:`Catalog.snapshot` answers the event loop from memory); readiness always reads them fresh.
"""

from __future__ import annotations

import threading
import time

from service.contract.errors import NotFound, Unavailable
from service.contract.schemas import ModelCard, ModelInfo, Readiness, WorkerInfo, WorkerModel
from service.contract.settings import Settings
from service.store.records import Records


class Catalog:
    def __init__(self, settings: Settings, records: Records, refresh_s: float = 1.0) -> None:
        self.settings, self.records, self.refresh_s = settings, records, refresh_s
        self._lock = threading.Lock()
        self._workers: list[WorkerInfo] = []
        self._read_at = -float("inf")

    def workers(self, fresh: bool = False) -> list[WorkerInfo]:
        """Live workers (fresh heartbeat), from a copy at most ``refresh_s`` old unless ``fresh``."""
        with self._lock:
            if fresh or time.monotonic() - self._read_at >= self.refresh_s:
                self._workers = self.records.live_workers()
                self._read_at = time.monotonic()
            return self._workers

    def snapshot(self) -> list[WorkerInfo] | None:
        """The copy of the live workers while it is fresh, else None: never a Redis read."""
        with self._lock:
            return self._workers if time.monotonic() - self._read_at < self.refresh_s else None

    def _views(self, name: str, workers: list[WorkerInfo]) -> list[WorkerModel]:
        return [w.models[name] for w in workers if name in w.models]

    def served(self, fresh: bool = False, workers: list[WorkerInfo] | None = None) -> list[str]:
        """The configured models, then the trained ones live workers announce (in heartbeat order)."""
        workers = self.workers(fresh) if workers is None else workers
        trained = [n for w in workers for n in w.models if n not in self.settings.models]
        return [*self.settings.models, *dict.fromkeys(trained)]

    def name(self, requested: str | None) -> str:
        """The model a request means (the default when it names none); 404 when it is not served here."""
        name = requested or self.settings.model_name
        # A model trained a moment ago may be newer than the cached heartbeats: read them again before a 404.
        if name not in self.settings.models and name not in self.served() and name not in self.served(fresh=True):
            raise NotFound(f"model {name[:100]!r} is not served here; served: {', '.join(self.served())} "
                           "(GET /v1/models)", code="unknown_model")
        return name

    def card(self, name: str, workers: list[WorkerInfo] | None = None) -> ModelCard | None:
        """What the model can do, or None while no live worker has described it."""
        workers = self.workers() if workers is None else workers
        return next((v.card for v in self._views(name, workers) if v.card is not None), None)

    def infos(self) -> list[ModelInfo]:
        workers = self.workers(fresh=True)  # the listing is not a hot path: a model trained a moment ago is in it
        out = []
        for name in self.served():
            views = self._views(name, workers)
            card = next((v.card for v in views if v.card is not None), None)
            missing = sorted({f for v in views if not v.loaded for f in v.missing_files})
            described = card.model_dump(include={"dataset", "domain", "clip", "fps", "outputs"}) if card else {}
            out.append(ModelInfo(name=name, **{k: described.get(k) for k in ("dataset", "domain", "clip", "fps",
                                                                              "outputs")},
                                 default=name == self.settings.model_name, loaded=any(v.loaded for v in views),
                                 missing_files=missing, preprocess=card.preprocess if card else None,
                                 preprocess_options=list(card.preprocess_options) if card else []))
        return out

    def require_available(self, name: str) -> None:
        """503 when live workers exist but none can run the model (weights missing); with no live worker the
        job waits in the queue for one."""
        workers = self.workers()
        if not workers:
            return
        views = self._views(name, workers)
        if any(v.loaded for v in views):
            return
        broken = [v for v in views if not v.loading]
        if broken:
            raise Unavailable(unavailable_message(name, broken[0].missing_files, broken[0].message),
                              code="weights_missing" if broken[0].missing_files else "model_unavailable",
                              headers={"Retry-After": "60"})
        if not views:
            raise Unavailable(f"no live worker serves model {name!r}", code="model_not_loaded",
                              headers={"Retry-After": "60"})

    def readiness(self) -> Readiness:
        self.records.ping()
        workers = self.workers(fresh=True)
        if not workers:
            raise Unavailable("no live worker: no worker heartbeat in the last "
                              f"{self.settings.heartbeat_ttl_s:g} s; start one with `r2tuning worker` "
                              "(same REDIS_URL and R2_ settings)", code="no_worker", headers={"Retry-After": "5"})
        problems = []
        for name in self.settings.models:
            views = self._views(name, workers)
            if any(v.loaded for v in views):
                continue
            view = next((v for v in views if v.missing_files), views[0] if views else None)
            if view is None:
                problems.append(("model_not_loaded", f"no live worker serves model {name!r}"))
            elif not view.loading:
                problems.append(("weights_missing" if view.missing_files else "model_unavailable",
                                 unavailable_message(name, view.missing_files, view.message)))
            else:
                problems.append(("model_loading", f"model {name!r} is still loading"))
        if problems:
            raise Unavailable("\n".join(message for _, message in problems), code=problems[0][0],
                              headers={"Retry-After": "5"})
        return Readiness(workers=len(workers), models=list(self.settings.models))


def unavailable_message(name: str, missing: list[str], how: str | None) -> str:
    text = f"model {name!r} is not available on the workers"
    if missing:
        text += ": missing weight files: " + ", ".join(missing)
    if how:
        text += ". " + how
    return text
