"""The worker's models: loaded once at start, described in its heartbeat, retried while weights are missing."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import torch

from models import zoo
from models.engine import PREPROCESS_VERSIONS, Grounder, Precision, UnknownPreprocessError
from service.contract.errors import InvalidRequest, Unavailable, classify
from service.contract.schemas import ModelCard, WorkerModel
from service.contract.settings import Settings

log = logging.getLogger("service.worker")


def resolve_device(setting: str) -> str:
    if setting != "auto":
        return setting
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_precision(setting: str, device: str) -> Precision:
    if setting != "auto":
        return cast(Precision, setting)
    return "fp16" if device.startswith("cuda") else "fp32"


def card_of(spec: zoo.ModelSpec) -> ModelCard:
    """What the API needs to know about a model: it never reads the zoo itself."""
    return ModelCard(name=spec.name, dataset=spec.dataset, domain=spec.domain, clip=spec.clip, fps=spec.fps,
                     outputs=spec.outputs, unit=spec.unit, preprocess=spec.preprocess,
                     preprocess_options=list(PREPROCESS_VERSIONS))


class Models:
    """The configured models of one worker: the loaded ones, and why the others are not."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.precision = resolve_precision(settings.precision, self.device)
        self.grounders: dict[str, Grounder] = {}
        self.status: dict[str, WorkerModel] = {
            name: WorkerModel(loaded=False, loading=True, message="the worker is loading this model")
            for name in settings.models}
        self._trained: dict[str, str] = {}  # trained model name -> checkpoint path it was loaded from

    @property
    def complete(self) -> bool:
        return all(self.status[name].loaded for name in self.settings.models)

    def load(self, names: Sequence[str] | None = None) -> None:
        """Load (fetching weights when allowed) each configured model; failures are reported, not raised."""
        if self.settings.registry_file is not None:
            zoo.load_registry_file(self.settings.registry_file, overwrite=True)
        for name in names or self.settings.models:
            spec = zoo.get_model(name)  # an unknown configured model is a configuration error: raise
            failures: list[BaseException] = []
            try:  # one call fetches (or reports) both the checkpoint and the CLIP weights
                zoo.ensure_weights(spec, download=self.settings.download_weights, progress=True)
            except Exception as err:  # missing/corrupt weights, no network: keep running, report it
                failures.append(err)
            grounder = None
            if not failures:
                try:
                    grounder = Grounder.from_spec(spec, device=self.device, precision=self.precision,
                                                  download=False)
                except Exception as err:
                    failures.append(err)
            if grounder is None:
                message = "\n".join(classify(err)[2] for err in failures)
                missing = [f for err in failures for f in _missing(spec, err)]
                log.error("model %s is not available: %s", name, message)
                self.status[name] = WorkerModel(loaded=False, card=card_of(spec),
                                                missing_files=list(dict.fromkeys(missing)), message=message)
                continue
            self.grounders[name] = grounder
            self.status[name] = WorkerModel(loaded=True, card=card_of(spec), feature_id=grounder.feature_id)
            log.info("model %s loaded on %s (%s), feature id %s", name, self.device, self.precision,
                     grounder.feature_id)
        self.discover_trained()

    # ------------------------------------------------------------------------------------------------ trained

    def trained_root(self) -> Path:
        return Path(self.settings.training_dir) if self.settings.training_dir else zoo.checkpoint_dir() / "trained"

    def add_trained(self, spec: zoo.ModelSpec) -> None:
        """Load (or reload, after a new training) a model trained by the service and announce it."""
        zoo.register_model(spec, overwrite=True)
        grounder = Grounder.from_spec(spec, device=self.device, precision=self.precision, download=False)
        self.grounders[spec.name] = grounder
        self.status[spec.name] = WorkerModel(loaded=True, card=card_of(spec), feature_id=grounder.feature_id)
        self._trained[spec.name] = spec.path or ""
        log.info("trained model %s loaded from %s", spec.name, spec.path)

    def discover_trained(self) -> None:
        """Load the models trained by the service (``<training dir>/<name>/model.json``) this worker lacks or holds
        in an older version; one that cannot be loaded is reported, not raised."""
        root = self.trained_root()
        if not root.is_dir():
            return
        for entry in sorted(root.glob("*/model.json")):
            try:
                specs = zoo.load_registry_file(entry, overwrite=True)
            except Exception as err:
                log.warning("cannot read trained model %s: %s", entry, err)
                continue
            for spec in specs:
                if spec.name in self.settings.models or self._trained.get(spec.name) == spec.path:
                    continue
                try:
                    self.add_trained(spec)
                except Exception as err:
                    log.warning("cannot load trained model %s: %s", spec.name, err)
                    self.status[spec.name] = WorkerModel(loaded=False, card=card_of(spec), message=classify(err)[2])

    def get(self, name: str, preprocess: str | None = None) -> Grounder:
        """The loaded model (with frames made by ``preprocess``; None: its default pipeline), the 503 that says
        why it is not loaded, or the 422 for a pipeline that does not exist."""
        if name in self.grounders:
            try:
                return self.grounders[name].variant(preprocess=preprocess)
            except UnknownPreprocessError as err:
                raise InvalidRequest(str(err), code="unknown_preprocess") from None
        if name not in self.settings.models:  # perhaps trained since this worker started (by another worker)
            self.discover_trained()
            if name in self.grounders:
                return self.get(name, preprocess)
        status = self.status.get(name)
        if status is None:
            raise Unavailable(f"this worker does not serve model {name!r}", code="model_not_loaded")
        code = "weights_missing" if status.missing_files else "model_unavailable"
        raise Unavailable(status.message or f"model {name!r} is not loaded", code=code)


def _missing(spec: zoo.ModelSpec, err: BaseException) -> list[str]:
    try:
        found = zoo.missing_files(spec)
    except Exception:
        found = []
    if not found and isinstance(err, zoo.WeightsUnavailableError):
        found = [str(Path(err.target_dir) / name) for name in err.missing]
    return found
