"""The training loop (models/training/trainer.py) on a tiny random model and pre-extracted features: seeded
reproducibility, exact resume after a crash, the nncore checkpoint format, and the highlight-only objective."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.checkpoint import load_r2_checkpoint
from models.datasets import parse_annotations
from models.postprocess import NmsConfig
from models.r2 import R2Config
from models.training import collate
from models.training.checkpoints import SAL_SCALE_KEY, load_training
from models.training.data import FolderFeatures, build_examples, make_highlight_sample
from models.training.forward import forward_train
from models.training.init import fresh_model
from models.training.losses import bce_loss
from models.training.objective import LossConfig, compute_losses
from models.training.presets import get_preset
from models.training.trainer import TrainConfig, Trainer

from fixture_sets import fixture_path

MOMENT = R2Config(video_width=16, query_width=8, dims=16, k=2, strides=(1, 2, 4, 8), heads=2, ffn_hidden=32)
HIGHLIGHT = R2Config(video_width=16, query_width=8, dims=16, k=2, strides=(1,), use_tef=False, coord_head=False,
                     merge_cls_sal=False, heads=2, ffn_hidden=32)
TOKENS = 3


def write_features(folder, vids: list[str], clips: int, queries: list[str], seed: int = 0) -> FolderFeatures:
    rng = np.random.default_rng(seed)
    (folder / "v").mkdir()
    (folder / "q").mkdir()
    for vid in vids:
        np.save(folder / "v" / f"{vid}.npy", rng.normal(size=(clips, 2 * TOKENS * 16)).astype(np.float16))
    for key in queries:
        np.save(folder / "q" / f"{key}.npy", rng.normal(size=(4, 2 * 8)).astype(np.float16))
    return FolderFeatures(folder / "v", 2, 16, 8, query_dir=folder / "q")


def moment_setup(tmp_path, epochs: int = 3, save_every: int = 0):
    rows = [dict(qid=i, vid=f"v{i % 6}", query=f"q{i}", duration=20.0, relevant_windows=[[2.0 * (i % 5), 8.0]])
            for i in range(12)]
    annotations = parse_annotations("".join(json.dumps(r) + "\n" for r in rows))
    source = write_features(tmp_path, [f"v{i}" for i in range(6)], 10, [str(i) for i in range(12)])
    preset = get_preset("qvhighlights")
    examples = build_examples(annotations, source, preset.label, train=True)
    config = TrainConfig(preset=preset, epochs=epochs, batch_size=4, seed=3, save_every=save_every, lr=1e-3)
    return examples, source, config


def trainer(tmp_path, work, examples, source, config, **kwargs) -> Trainer:
    return Trainer(fresh_model(MOMENT, config.seed), config, examples, source, tmp_path / work, val=examples[:4],
                   fps=0.5, unit=2.0, nms=NmsConfig("normal", 0.7), **kwargs)


@pytest.mark.slow  # about 40 s here
def test_same_seed_same_weights_and_a_crash_resumes_exactly(tmp_path) -> None:
    examples, source, config = moment_setup(tmp_path, epochs=3, save_every=2)
    whole = trainer(tmp_path, "a", examples, source, config).fit()
    assert whole.iterations == 3 * math.ceil(12 * 4 / 4) and whole.epochs == 3
    reference = load_training(whole.checkpoint_path)["state_dict"]

    class Crash(Exception):
        pass

    def crash(progress) -> None:
        if progress.iteration == 17:  # one iteration after the checkpoint at 16: its work is lost
            raise Crash

    with pytest.raises(Crash):
        trainer(tmp_path, "b", examples, source, config, on_progress=crash).fit()
    assert load_training(tmp_path / "b" / "checkpoint.pth")["r2tuning"]["iteration"] == 16
    resumed = trainer(tmp_path, "b", examples, source, config).fit()  # a new process would build a new model
    assert resumed.iterations == whole.iterations
    final = load_training(resumed.checkpoint_path)
    assert final["state_dict"].keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(final["state_dict"][key], value), key
    assert [h["losses"] for h in resumed.history] == [h["losses"] for h in whole.history]
    again = trainer(tmp_path, "c", examples, source, config).fit()
    assert all(torch.equal(load_training(again.checkpoint_path)["state_dict"][k], v) for k, v in reference.items())
    other = trainer(tmp_path, "d", examples, source, TrainConfig(**{**config.__dict__, "seed": 4})).fit()
    assert not torch.equal(load_training(other.checkpoint_path)["state_dict"]["coef"], reference["coef"])


def test_checkpoints_are_in_the_official_format(tmp_path) -> None:
    examples, source, config = moment_setup(tmp_path, epochs=1)
    result = trainer(tmp_path, "w", examples, source, config).fit()
    released = torch.load(result.model_path, map_location="cpu", weights_only=True)
    assert set(released) == {"meta", "state_dict"}
    meta = released["meta"]
    assert {"epoch", "iter", "stages", "nncore_version", "create_time"} <= set(meta)
    assert meta["stages"][0]["optimizer"] == {"type": "AdamW", "lr": 1e-3, "weight_decay": 1e-4}
    assert released["state_dict"][SAL_SCALE_KEY].item() == pytest.approx(math.log(1 / 0.07))
    # Our loader reads the architecture from the tensors (TEF and heads of this toy width need telling).
    model = load_r2_checkpoint(result.model_path, video_width=16, use_tef=True, heads=2)
    assert model.cfg == MOMENT
    # Same key set, shapes and order as an official checkpoint of this architecture family (r2_head.pth).
    official = torch.load(fixture_path("r2_head", "r2_head.pth"), map_location="cpu", weights_only=True)
    assert list(released["state_dict"]) == list(official["state_dict"])
    resume = load_training(result.checkpoint_path)
    params = [p for p in model.parameters() if p.requires_grad]
    assert len(resume["optimizer"]["param_groups"][0]["params"]) == len(params)
    assert result.initial_metrics is not None and "MR-full-R1@0.5" in result.initial_metrics


def test_resume_refuses_other_settings(tmp_path) -> None:
    from models.training.checkpoints import TrainingCheckpointError

    examples, source, config = moment_setup(tmp_path, epochs=1)
    trainer(tmp_path, "w", examples, source, config).fit()
    changed = TrainConfig(**{**config.__dict__, "batch_size": 3})
    with pytest.raises(TrainingCheckpointError, match="other settings"):
        trainer(tmp_path, "w", examples, source, changed).fit()
    longer = TrainConfig(**{**config.__dict__, "epochs": 2})  # more epochs continue the same run
    assert trainer(tmp_path, "w", examples, source, longer).fit().epochs == 2


def test_time_limit_stops_with_a_model(tmp_path) -> None:
    examples, source, config = moment_setup(tmp_path, epochs=50)
    result = trainer(tmp_path, "w", examples, source, TrainConfig(**{**config.__dict__, "max_seconds": 0.0})).fit()
    assert result.stopped == "time limit" and result.iterations == 1
    assert result.model_path.is_file() and load_training(result.checkpoint_path)["r2tuning"]["iteration"] == 1


# ------------------------------------------------------------------------------------------------ highlights


def highlight_batch(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    doc = {"a": {"match": [-1, 1, 1, -1, -1, 1], "query": "dog"}, "b": {"match": [1, -1, -1, 1], "query": "dog"}}
    items = parse_annotations(json.dumps(doc)).highlights
    samples = []
    for i, item in enumerate(items):
        video = torch.randn(item.num_clips, 2, TOKENS, 16, generator=gen).half()
        query = torch.randn(4, 2, 8, generator=gen).half()
        samples.append(make_highlight_sample(video, query, item, random.Random(i), 0.5))
    return collate(samples)


def test_highlight_model_trains_with_the_saliency_as_bce_target() -> None:
    model = fresh_model(HIGHLIGHT, 0)
    batch = highlight_batch()
    out = forward_train(model, batch)
    assert out.out_coord is None and out.strides == [1] and out.out_class.shape == batch.saliency.shape
    losses = compute_losses(out, batch, HIGHLIGHT.strides, LossConfig.highlight())
    assert list(losses) == ["loss_cls", "loss_sal", "loss_video_cal", "loss_layer_cal", "loss"]
    mask = batch.video_mask.float()
    manual = (F.binary_cross_entropy_with_logits(out.out_class, batch.saliency, reduction="none") * mask).sum()
    assert losses["loss_cls"].item() == pytest.approx((manual / mask.sum()).item(), rel=1e-6)
    with pytest.raises(ValueError, match="coordinate head"):
        compute_losses(out, batch, HIGHLIGHT.strides, LossConfig())


def test_bce_ignores_padded_clips() -> None:
    logits = torch.randn(2, 5, requires_grad=True)
    target = torch.rand(2, 5)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    loss = bce_loss(logits, target, mask)
    loss.backward()
    assert torch.all(logits.grad[1, 3:] == 0)
    moved = logits.detach().clone()
    moved[1, 3:] += 100
    assert bce_loss(moved, target, mask).item() == pytest.approx(loss.item())


def test_highlight_nce_runs_in_the_row_direction_only() -> None:
    model = fresh_model(HIGHLIGHT, 0)
    batch = highlight_batch()
    out = forward_train(model, batch)
    row = compute_losses(out, batch, HIGHLIGHT.strides, LossConfig.highlight())["loss_sal"]
    both = compute_losses(out, batch, HIGHLIGHT.strides, LossConfig.highlight(sal_directions=("row", "col")))
    assert row.item() != pytest.approx(both["loss_sal"].item())


def test_highlight_training_lowers_the_loss() -> None:
    model = fresh_model(HIGHLIGHT, 1)
    batch = highlight_batch(2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first = None
    for _ in range(40):
        optimizer.zero_grad()
        loss = compute_losses(forward_train(model, batch), batch, HIGHLIGHT.strides, LossConfig.highlight())["loss"]
        loss.backward()
        optimizer.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.8 * first


def test_highlight_positive_clips_follow_the_dataset_rules() -> None:
    doc = {"t": {"anno": [[1] * 20, [5] * 20, [2] * 20, [4] * 20], "title": "x"}}
    item = parse_annotations(json.dumps(doc)).highlights[0]
    sample = make_highlight_sample(torch.zeros(4, 2, TOKENS, 16).half(), torch.zeros(3, 2, 8).half(), item,
                                   random.Random(0), 0.5)
    assert sample.saliency.tolist() == pytest.approx([0.0, 1.0, 0.25, 0.75])
    assert sample.pos_clip in (1, 3)  # above the (lower) median 0.25
    flat = parse_annotations(json.dumps({"y": {"match": [-1, -1], "query": "q"}})).highlights[0]
    from models.training import TrainingLabelError

    with pytest.raises(TrainingLabelError, match="no clip is positive"):
        make_highlight_sample(torch.zeros(2, 2, TOKENS, 16).half(), torch.zeros(3, 2, 8).half(), flat,
                              random.Random(0), 0.5)


def test_highlight_validation_scores_youtube_map(tmp_path) -> None:
    doc = {f"v{i}": {"match": [1, -1, -1, 1, -1], "query": "dog"} for i in range(4)}
    annotations = parse_annotations(json.dumps(doc))
    source = write_features(tmp_path, list(doc), 5, list(doc))
    preset = get_preset("youtube")
    examples = build_examples(annotations, source, preset.label, train=True)
    config = TrainConfig(preset=preset, epochs=2, batch_size=2, lr=1e-3)
    result = Trainer(fresh_model(HIGHLIGHT, 0), config, examples, source, tmp_path / "w", val=examples, fps=0.5,
                     unit=None, nms=NmsConfig("normal")).fit()
    assert set(result.best_metrics) == {"mAP"} and 0 <= result.best_metrics["mAP"] <= 1
    assert load_r2_checkpoint(result.model_path, heads=2).cfg == HIGHLIGHT
