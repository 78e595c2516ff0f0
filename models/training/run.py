"""One training run from plain settings, as ``r2tuning train`` and the service's training jobs start it.

:class:`TrainJob` names everything by path or name (JSON-able, so a job can cross a process boundary);
:func:`run_training` resolves it: the base model (its CLIP, its frame pipeline, its architecture), the
annotations and their split, the features (pre-extracted folders, or videos encoded by the serving pipeline),
the official preset of the dataset; then trains and writes the trained model's registry entry next to its
weights (``model.json``), so ``--registry work_dir/model.json`` serves it at once.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import zoo
from ..checkpoint import load_r2_checkpoint
from ..datasets import AnnotationError, AnnotationSet, read_split_file, select
from ..datasets import read_annotation_set as read_annotations
from ..postprocess import NmsConfig
from ..r2 import R2Config, R2Tuning
from .data import EncodedFeatures, FeatureSource, FolderFeatures, build_examples
from .init import fresh_model
from .presets import TrainPreset, get_preset, preset_for_format
from .trainer import Progress, TrainConfig, Trainer, TrainResult


@dataclass(frozen=True)
class TrainJob:
    """Everything one training run needs, by name and path."""

    name: str  # the trained model's registry name
    annotations: str  # annotation file (see models.datasets for the formats)
    work_dir: str  # checkpoints, the trained model and its registry entry go here
    base_model: str = "qvhighlights"  # registered model whose CLIP, frames and architecture are used
    registry: str | None = None  # a registry file to load before looking up base_model
    format: str = "auto"
    val_annotations: str | None = None
    splits: str | None = None  # YouTube / TVSum split file; "train" trains, "val" validates
    domain: str | None = None  # key in the split file (official: dog, BK, ...)
    videos: str | None = None  # folder of {vid}.mp4 (encoded with the base model's pipeline, cached)
    video_features: str | None = None  # folder of pre-extracted {vid}.npy
    query_features: str | None = None  # folder of pre-extracted {qid}.npy (else the CLIP text tower)
    cache_dir: str | None = None  # where encoded features are cached (default work_dir/features)
    preset: str | None = None  # official training config (default: from the annotation format)
    init: str = "fresh"  # "fresh" (official initialisation) or "base" (fine-tune the base model's weights)
    fps: float | None = None  # feature clips per second (default: the base model's for videos, else the preset's)
    epochs: int | None = None
    max_epochs: int | None = None  # cap on the epochs (the service's R2_TRAIN_MAX_EPOCHS)
    batch_size: int | None = None
    lr: float | None = None
    warmup_iters: int | None = None  # default: the preset's (500 for moment datasets: long for a small set)
    seed: int = 0
    save_every: int = 0
    val_interval: int = 1
    max_seconds: float | None = None
    device: str = "cpu"
    threads: int | None = None
    resume: bool = True
    download: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainOutcome:
    result: TrainResult
    spec: zoo.ModelSpec  # the trained model, registered in this process
    registry_file: Path  # work_dir/model.json
    train_examples: int
    val_examples: int


def _split(job: TrainJob, annotations: AnnotationSet) -> tuple[AnnotationSet, AnnotationSet | None]:
    if job.val_annotations:
        return annotations, read_annotations(job.val_annotations, job.format)
    if job.splits:
        splits = read_split_file(job.splits, job.domain)
        train = select(annotations, splits["train"])
        return train, select(annotations, splits["val"]) if splits["val"] else None
    return annotations, None


def model_config(base: R2Config, preset: TrainPreset) -> R2Config:
    """The base checkpoint's widths and sizes with the preset's heads and pyramid (highlight or moment model)."""
    return dataclasses.replace(base, strides=preset.strides, use_tef=preset.use_tef, coord_head=preset.coord_head,
                               merge_cls_sal=preset.merge_cls_sal)


def trained_spec(job: TrainJob, base: zoo.ModelSpec, preset: TrainPreset, fps: float, weights: Path,
                 domain: str | None) -> zoo.ModelSpec:
    return zoo.ModelSpec(
        name=job.name, dataset=preset.dataset, domain=domain, filename=weights.name, url=None, hash_prefix=None,
        clip=base.clip, clip_pretrained=base.clip_pretrained if base.clip_path is None else None,
        clip_path=base.clip_path, path=str(weights.resolve()), fps=fps, unit=preset.unit,
        nms_type=preset.nms_type,  # type: ignore[arg-type]
        nms_thres=preset.nms_thres, outputs=preset.outputs,  # type: ignore[arg-type]
        query_path="features", preprocess=base.preprocess,
        notes=f"trained from {base.name!r} on {Path(job.annotations).name} (preset {preset.name}, seed {job.seed})")


def registry_entry(spec: zoo.ModelSpec, folder: Path) -> dict[str, Any]:
    """The spec as a registry file entry, its checkpoint path relative to ``folder`` (the file's folder)."""
    entry = {k: v for k, v in spec.to_dict().items() if v is not None and k not in ("url", "hash_prefix")}
    entry["checkpoint_path"] = os.path.relpath(entry.pop("path"), folder.resolve())
    return entry


def _write_json(path: Path, document: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def write_registry_entry(spec: zoo.ModelSpec, path: Path) -> Path:
    """``{"models": [entry]}`` with the checkpoint relative to the file, so the folder can be moved."""
    return _write_json(path, {"models": [registry_entry(spec, path.parent)]})


def merge_registry_entry(spec: zoo.ModelSpec, path: Path) -> Path:
    """Add (or replace, by name) the model's entry in a registry file, creating it if needed."""
    entries: list[Any] = []
    if path.is_file():
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise zoo.RegistryError(f"cannot read model registry {path}: {err}") from err
        found = document.get("models") if isinstance(document, dict) else document
        if not isinstance(found, list):
            raise zoo.RegistryError(f'model registry {path}: expected a list of models or {{"models": [...]}}')
        entries = [e for e in found if not (isinstance(e, dict) and e.get("name") == spec.name)]
    return _write_json(path, {"models": [*entries, registry_entry(spec, path.parent)]})


def run_training(job: TrainJob, *, on_progress: Callable[[Progress], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 on_stage: Callable[[str, float], None] | None = None) -> TrainOutcome:
    """Resolve a job, train, register the result (in this process) and write its registry entry.

    ``on_stage(stage, fraction)`` reports the preparation ("features") before training starts.
    """
    if job.threads:
        torch.set_num_threads(job.threads)
    if job.registry:
        zoo.load_registry_file(job.registry, overwrite=True)
    if bool(job.videos) == bool(job.video_features):
        raise AnnotationError("give exactly one of videos (a folder of video files) or video_features (a folder "
                              "of pre-extracted .npy features)")
    base = zoo.get_model(job.base_model)
    annotations = read_annotations(job.annotations, job.format)
    preset = get_preset(job.preset) if job.preset else preset_for_format(annotations.format)
    if preset.kind != annotations.kind:
        raise AnnotationError(f"preset {preset.name!r} trains {preset.kind} models but {job.annotations} holds "
                              f"{annotations.kind} annotations ({annotations.format})")
    train_set, val_set = _split(job, annotations)
    checkpoint_file, _ = zoo.ensure_weights(base, download=job.download)
    work_dir = Path(job.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)

    grounder = None
    if job.videos or not job.query_features:  # the CLIP towers are needed to encode videos or texts
        from ..engine import Grounder

        grounder = Grounder.from_spec(base, device=job.device, download=job.download)
        base_cfg = grounder.model.cfg
    else:
        base_cfg = load_r2_checkpoint(checkpoint_file).cfg
    source: FeatureSource
    if job.videos:
        assert grounder is not None
        if job.fps is not None and job.fps != base.fps:
            raise AnnotationError(f"videos are encoded at the base model's rate ({base.fps:g} fps); register a base "
                                  f"model with fps {job.fps:g} to train at that rate")
        source = EncodedFeatures(grounder, job.videos, job.cache_dir or work_dir / "features")
        fps = base.fps
    else:
        text = grounder._text_features if grounder is not None else None
        source = FolderFeatures(job.video_features, base_cfg.k, base_cfg.video_width,  # type: ignore[arg-type]
                                base_cfg.query_width, query_dir=job.query_features,
                                clip_seconds=1.0 / job.fps if job.fps else None,
                                text_encoder=(lambda texts: text(list(texts), False)) if text else None)
        fps = job.fps or preset.label.fps
    preset = preset.with_fps(fps)
    if job.warmup_iters is not None:
        preset = dataclasses.replace(preset, optim=dataclasses.replace(preset.optim, warmup_iters=job.warmup_iters))

    def stage(done: int, total: int) -> None:
        if on_stage is not None:
            on_stage("features", done / max(1, total))

    train_examples = build_examples(train_set, source, preset.label, train=True, progress=stage)
    val_examples = build_examples(val_set, source, preset.label, train=False) if val_set is not None else []

    cfg = model_config(base_cfg, preset)
    epochs = job.epochs or preset.optim.epochs
    if job.max_epochs is not None:
        epochs = min(epochs, job.max_epochs)
    config = TrainConfig(preset=preset, epochs=epochs, batch_size=job.batch_size, lr=job.lr, seed=job.seed,
                         save_every=job.save_every, val_interval=job.val_interval, max_seconds=job.max_seconds)
    model: R2Tuning
    if job.init == "base":
        model = load_r2_checkpoint(checkpoint_file)
        if model.cfg != cfg:
            raise AnnotationError(f"--init base: the base model {base.name!r} is a {model.cfg} model, the preset "
                                  f"{preset.name!r} trains {cfg}; use --init fresh or a matching preset")
        model.train()
    elif job.init == "fresh":
        model = fresh_model(cfg, job.seed)
    else:
        raise ValueError(f"init must be 'fresh' or 'base', got {job.init!r}")
    model = model.to(job.device)

    trainer = Trainer(model, config, train_examples, source, work_dir, val=val_examples, fps=fps, unit=preset.unit,
                      nms=NmsConfig(type=preset.nms_type, thres=preset.nms_thres),  # type: ignore[arg-type]
                      on_progress=on_progress, should_stop=should_stop)
    result = trainer.fit(resume=job.resume)
    domain = None
    if annotations.kind == "highlights":
        domain = job.domain or train_set.highlights[0].domain or train_set.highlights[0].query
    spec = trained_spec(job, base, preset, fps, result.model_path, domain)
    zoo.register_model(spec, overwrite=True)
    registry_file = write_registry_entry(spec, work_dir / "model.json")
    return TrainOutcome(result=result, spec=spec, registry_file=registry_file, train_examples=len(train_examples),
                        val_examples=len(val_examples))
