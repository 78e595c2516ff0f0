"""Read the ``train_step`` fixture folder (one official training step) into training inputs."""

from __future__ import annotations

import random
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F

from models.checkpoint import load_r2_checkpoint
from models.r2 import R2Tuning
from models.training import (
    GroundingSample,
    LabelConfig,
    OptimConfig,
    RegularizationConfig,
    ReplayedRegularization,
    TrainBatch,
    make_sample,
)

from fixture_sets import fixture_path, read_listing

FOLDER = "train_step"


def listing() -> dict:
    return read_listing(FOLDER, "cases.json")


def case_files() -> list[str]:
    return [case["file"] for case in listing()["cases"]]


def case(file: str) -> dict:
    return next(c for c in listing()["cases"] if c["file"] == file)


@cache
def arrays(file: str) -> dict[str, np.ndarray]:
    with np.load(fixture_path(FOLDER, file)) as z:
        return {key: z[key] for key in z.files}


def model() -> R2Tuning:
    """A fresh copy of the fixture's initial weights (each optimiser step needs its own)."""
    return load_r2_checkpoint(fixture_path(FOLDER, "train_step.pth"))


def batch_size() -> int:
    return len(arrays("inputs.npz")["video_len"])


def sample_features(index: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Video (T, K, P, C) and query (L, K, Cq) float16 of one sample, in the official cache layout."""
    z = arrays("inputs.npz")
    base = z[f"video_b{index}_base"].astype(np.float32)  # (K, P, C)
    patch = z[f"video_b{index}_frame_patch"].astype(np.float32)  # (T, K, P)
    chan = z[f"video_b{index}_frame_chan"].astype(np.float32)  # (T, K, C)
    video = base[None] + patch[..., None] + chan[:, :, None, :]  # (T, K, P, C)
    # The factors are multiples of 1/64 chosen so that the float16 sum is exact.
    assert np.array_equal(video.astype(np.float16).astype(np.float32), video), "video factors not float16-exact"
    query = z[f"query_b{index}"]  # (L, K*Cq)
    return torch.from_numpy(video.astype(np.float16)), torch.from_numpy(query).reshape(query.shape[0], k, -1)


def rebuilt_samples(k: int) -> list[GroundingSample]:
    """The samples rebuilt from the listing's labels, drawing pos_clip as the fixture run did: one
    ``random.seed(py_seed)``, then the samples in order."""
    meta = listing()
    rng = random.Random(meta["seeds"]["py_seed"])
    cfg = LabelConfig(fps=meta["fps"])
    return [make_sample(*sample_features(i, k), meta["labels"][i], rng, cfg) for i in range(batch_size())]


def _pad(rows: list[torch.Tensor], value: float) -> torch.Tensor:
    longest = max(r.shape[0] for r in rows)
    return torch.stack([F.pad(r, (0, 0, 0, longest - r.shape[0]), value=value) for r in rows])


def stored_batch(k: int) -> TrainBatch:
    """The collated batch exactly as ``inputs.npz`` stores it (independent of our collation code)."""
    z = arrays("inputs.npz")
    features = [sample_features(i, k) for i in range(batch_size())]
    inf = float("inf")
    return TrainBatch(
        video=_pad([v.reshape(v.shape[0], -1) for v, _ in features], inf),
        query=_pad([q.reshape(q.shape[0], -1) for _, q in features], inf),
        boundary=torch.from_numpy(z["boundary"]),
        saliency=torch.from_numpy(z["saliency"]),
        pos_clip=torch.from_numpy(z["pos_clip"]),
        fps=[float(listing()["fps"])] * batch_size(),
    )


def regularization_config() -> RegularizationConfig:
    """Drop probabilities from the listing's ``dropout_modules``."""
    modules = listing()["dropout_modules"]
    dropout = {p for _, kind, p in modules if kind == "Dropout"}
    drop_path = {p for _, kind, p in modules if kind == "DropPath"}
    assert len(dropout) == 1 and len(drop_path) == 1, modules
    return RegularizationConfig(dropout=dropout.pop(), drop_path=drop_path.pop())


def drop_path_site() -> str:
    return next(name for name, kind, _ in listing()["dropout_modules"] if kind == "DropPath")


def replayed_regularizer(file: str) -> ReplayedRegularization:
    """The stored keep-masks of a case (unpacked with the shapes the listing gives)."""
    masks, z = case(file)["masks"], arrays(file)
    path_site = drop_path_site()
    dropout = {}
    for site, spec in masks.items():
        if site == path_site:
            continue
        shape = tuple(spec["shape"])
        dropout[site] = [torch.from_numpy(np.unpackbits(z[f"mask/{site}/call{j}"], count=int(np.prod(shape)))
                                          .reshape(shape)) for j in range(spec["calls"])]
    path_keep = torch.from_numpy(z[f"mask/{path_site}"]).reshape(masks[path_site]["shape"])  # (calls, B)
    return ReplayedRegularization(dropout, path_keep, regularization_config())


def optim_config() -> OptimConfig:
    """The official schedule as the listing records it."""
    opt = listing()["optimizer"]
    warmup, clip = opt["warmup"], opt["grad_clip"]
    assert opt["type"] == "AdamW" and warmup["type"] == "iter" and warmup["policy"] == "linear", opt
    return OptimConfig(lr=opt["cfg"]["lr"], weight_decay=opt["cfg"]["weight_decay"], warmup_iters=warmup["steps"],
                       warmup_ratio=warmup["ratio"], max_grad_norm=clip["max_norm"], grad_norm_type=clip["norm_type"])


def zero_gradient_tensors(file: str, names: list[str]) -> set[str]:
    """Tensors whose true gradient is exactly zero (softmax shift invariance: v_map.bias, attention key biases).

    Found from the data: their float64 gradient norm is rounding-level (~1e-18) while float32 leaves ~1e-9.
    """
    norms = arrays(file)["grad_norms_fp64"]
    return {name for name, norm in zip(names, norms, strict=True) if norm <= 1e-12 * norms.max()}
