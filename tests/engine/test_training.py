"""Unit tests of the training package on a tiny random model: the NaN guard of the saliency loss, the lr
schedule, one train_step, label binding, and agreement of the training forward with the inference path."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F

from models.r2 import R2Config, R2Tuning
from models.training import (
    GroundingSample,
    LabelConfig,
    OptimConfig,
    ReplayedRegularization,
    TrainBatch,
    TrainingLabelError,
    build_optimizer,
    build_scheduler,
    collate,
    forward_train,
    lr_factor,
    make_sample,
    objective,
    train_step,
)
from models.training.labels import bind_boundary, bind_saliency, is_trainable
from models.training.losses import sampled_nce_loss
from models.training.targets import point_grid

TINY = R2Config(video_width=16, query_width=8, dims=16, k=2, strides=(1, 2, 4), heads=2, ffn_hidden=32)
TOKENS = 3


def tiny_model(seed: int = 0) -> R2Tuning:
    torch.manual_seed(seed)
    model = R2Tuning(TINY)
    with torch.no_grad():  # zero-initialised scale/gate would hide the pooling and gate paths
        model.adapter.scale.normal_()
        model.adapter.gate.normal_()
    return model


def tiny_batch(lengths: list[int], saliency: list[list[float]], pos_clip: list[int], seed: int = 1) -> TrainBatch:
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for t, sal, pos in zip(lengths, saliency, pos_clip, strict=True):
        video = torch.randn(t, TINY.k, TOKENS, TINY.video_width, generator=gen).half()
        query = torch.randn(3, TINY.k, TINY.query_width, generator=gen).half()
        boundary = bind_boundary([[2.0, 2.0 * t - 2]], t, fps=0.5)
        samples.append(GroundingSample(video=video, query=query, boundary=boundary, saliency=torch.tensor(sal),
                                       pos_clip=pos, fps=0.5))
    return collate(samples)


def official_col_direction(sim: torch.Tensor, pos_clip: torch.Tensor) -> torch.Tensor:
    """The official 'col' term: log_softmax over every clip index of the transposed similarity."""
    batch = torch.arange(sim.shape[0])
    return -F.log_softmax(sim.t(), dim=1)[pos_clip, batch].sum() / sim.shape[0]


# Clips 4 and 5 are padding in video 1 and more salient than the positive in video 0: masked in every video.
ALL_MASKED_LENGTHS = [6, 4]
ALL_MASKED_SALIENCY = [[0.5, 0.5, 0.5, 0.5, 0.9, 0.9], [0.2, 0.4, 0.1, 0.3]]
ALL_MASKED_POS = [1, 1]


def test_all_masked_clip_index_gives_finite_gradients() -> None:
    model = tiny_model()
    batch = tiny_batch(ALL_MASKED_LENGTHS, ALL_MASKED_SALIENCY, ALL_MASKED_POS)
    losses = objective(model, batch)
    losses["loss"].backward()
    assert all(torch.isfinite(v) for v in losses.values())
    for name, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


def test_the_same_batch_breaks_the_official_col_direction() -> None:
    """The batch above does trigger the official defect: the official 'col' term on the same forward has a
    finite value equal to ours but NaN in the gradient of every parameter it reaches."""
    model = tiny_model()
    batch = tiny_batch(ALL_MASKED_LENGTHS, ALL_MASKED_SALIENCY, ALL_MASKED_POS)
    out = forward_train(model, batch)
    pos = batch.pos_clip[:, 0]
    allowed = (batch.saliency <= batch.saliency[torch.arange(2), pos][:, None]) * out.video_mask
    assert (allowed.sum(0) == 0).any(), "the batch must mask some clip index in every video"
    scale = torch.tensor([math.log(1 / 0.07)]).exp()
    sim = F.cosine_similarity(out.video_emb, out.query_emb[:, None], dim=-1) * scale
    sim = sim + torch.where(allowed > 0, 0.0, float("-inf"))
    official = official_col_direction(sim, pos)
    ours = sampled_nce_loss(out.video_emb, out.query_emb, out.video_mask, batch.saliency, pos, 0.07, 100.0, ("col",))
    assert torch.isfinite(official) and ours.item() == pytest.approx(official.item(), abs=1e-6)
    official.backward()
    reached = [(n, p.grad) for n, p in model.named_parameters() if p.grad is not None]
    assert reached and all(torch.isnan(g).any() for _, g in reached)


def test_guarded_nce_equals_the_official_formula_where_finite() -> None:
    gen = torch.Generator().manual_seed(3)
    video = torch.randn(3, 5, 8, generator=gen, requires_grad=True)
    query = torch.randn(3, 8, generator=gen, requires_grad=True)
    mask = torch.tensor([[1] * 5, [1] * 5, [1, 1, 1, 0, 0]])
    saliency = torch.rand(3, 5, generator=gen) * mask
    pos = torch.tensor([0, 2, 1])
    ours = sampled_nce_loss(video, query, mask, saliency, pos, 0.07, 100.0, ("row", "col"))
    grads = torch.autograd.grad(ours, (video, query))

    scale = torch.tensor([math.log(1 / 0.07)]).exp()
    allowed = (saliency <= saliency[torch.arange(3), pos][:, None]) * mask
    sim = F.cosine_similarity(video, query[:, None], dim=-1) * scale + torch.where(allowed > 0, 0.0, float("-inf"))
    assert torch.isfinite(sim).any(dim=0).all(), "test batch must avoid the all-masked case"
    row = -F.log_softmax(sim, dim=1)[torch.arange(3), pos].sum() / 3
    official = row + official_col_direction(sim, pos)
    official_grads = torch.autograd.grad(official, (video, query))
    assert ours.item() == pytest.approx(official.item(), abs=1e-6)
    for a, b in zip(grads, official_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_warmup_is_linear_from_ratio_to_one() -> None:
    cfg = OptimConfig(warmup_iters=500, warmup_ratio=0.001)
    assert lr_factor(0, 1000, cfg) == pytest.approx(0.001, rel=1e-12)
    assert lr_factor(250, 1000, cfg) == pytest.approx(0.5005, rel=1e-12)
    assert lr_factor(499, 1000, cfg) == pytest.approx(1 - 0.999 / 500, rel=1e-12)
    assert lr_factor(500, 1000, cfg) == 1.0
    factors = [lr_factor(i, 1000, cfg) for i in range(501)]
    assert all(b > a for a, b in zip(factors, factors[1:], strict=False))


def test_step_decay_and_the_reset_after_warmup() -> None:
    cfg = OptimConfig(warmup_iters=500, lr_steps=(20,), lr_gamma=0.1)
    assert lr_factor(19 * 100, 100, cfg) == 1.0
    assert lr_factor(20 * 100, 100, cfg) == pytest.approx(0.1)
    # Epochs of 20 iterations: epoch 20 starts at iteration 400 < 500, so the official hook resets the lr to
    # the undecayed base at iteration 500 and keeps it until epoch 25 starts.
    assert lr_factor(450, 20, cfg) < 1.0
    assert lr_factor(510, 20, cfg) == 1.0
    assert lr_factor(520, 20, cfg) == pytest.approx(0.1)


def test_scheduler_follows_lr_factor_per_iteration() -> None:
    cfg = OptimConfig(warmup_iters=4, warmup_ratio=0.01)
    model = tiny_model()
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, iters_per_epoch=3, cfg=cfg, start_iteration=2)
    batch = tiny_batch([6, 4], [[0.1, 0.9, 0, 0, 0.3, 0.2], [0.4, 0.5, 0.1, 0.0]], [1, 1])
    seen = [train_step(model, batch, optimizer, scheduler).lr for _ in range(3)]
    assert seen == pytest.approx([cfg.lr * lr_factor(i, 3, cfg) for i in (2, 3, 4)], rel=1e-12)


def test_train_step_clips_and_updates() -> None:
    cfg = OptimConfig(max_grad_norm=1e-3)
    model = tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = build_optimizer(model, cfg)
    batch = tiny_batch([6, 4], [[0.1, 0.9, 0, 0, 0.3, 0.2], [0.4, 0.5, 0.1, 0.0]], [1, 1])
    result = train_step(model, batch, optimizer, optim_cfg=cfg)
    assert set(result.losses) == {"loss_reg", "loss_cls", "loss_sal", "loss_video_cal", "loss_layer_cal", "loss"}
    assert result.losses["loss"] == pytest.approx(sum(v for k, v in result.losses.items() if k != "loss"), rel=1e-6)
    assert result.grad_norm > cfg.max_grad_norm
    clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert clipped.item() == pytest.approx(cfg.max_grad_norm, rel=1e-4)
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())


def test_training_forward_agrees_with_inference() -> None:
    """For one unpadded video the training forward (eval) gives the inference path's scores and saliency."""
    model = tiny_model().eval()
    batch = tiny_batch([8], [[0.0, 0.1, 0.9, 0.2, 0, 0, 0, 0]], [2])
    out = forward_train(model, batch)
    video = batch.video.float().view(1, 8, TINY.k, TOKENS, TINY.video_width)[0].permute(1, 0, 2, 3)
    query = batch.query.float().view(1, -1, TINY.k, TINY.query_width).permute(0, 2, 1, 3)  # (1, K, L, Cq)
    raw = model(model.prepare_video(video), query, batch.query_mask, fps=0.5)
    scores, order = out.out_class.detach().sigmoid().sort(dim=1, descending=True)
    n = raw.boundary.shape[1]
    torch.testing.assert_close(raw.boundary[0, :, 2], scores[0, :n], rtol=0, atol=1e-6)
    points = point_grid(out.level_sizes, out.strides, TINY.strides)  # (Npts, 4)
    bounds = (out.out_coord.detach()[0] * torch.tensor([-1.0, 1.0]) * points[:, 3:] + points[:, :1]) / 0.5
    torch.testing.assert_close(raw.boundary[0, :, :2], bounds[order[0, :n]], rtol=1e-5, atol=1e-5)


def test_replayed_mask_of_another_batch_is_refused() -> None:
    model = tiny_model()
    batch = tiny_batch([6, 4], [[0.1, 0.9, 0, 0, 0.3, 0.2], [0.4, 0.5, 0.1, 0.0]], [1, 1])
    wrong = {site: [torch.ones(1, 1)] * TINY.k for site in
             ("adapter.video_map.1", "adapter.video_map.5", "adapter.query_map.1", "adapter.query_map.5")}
    with pytest.raises(ValueError, match="another batch"):
        forward_train(model, batch, ReplayedRegularization(wrong, torch.ones(3 * TINY.k, 2)))


def test_bind_boundary_clamps_swaps_and_widens() -> None:
    boundary = bind_boundary([[-4.0, 6.0], [30.0, 10.0], [7.0, 7.5], [19.6, 19.9]], num_clips=10, fps=0.5)
    # clamped to [0, 20]; reversed swapped; shorter than 2 s widened to 2 s around the centre, kept inside.
    assert boundary.tolist() == [[0.0, 6.0], [10.0, 20.0], [6.25, 8.25], [18.0, 20.0]]


def test_saliency_is_mean_rating_and_length_is_checked() -> None:
    label = {"qid": 1, "duration": 12.0, "relevant_clip_ids": [1, 4], "saliency_scores": [[4, 4, 4], [1, 2, 3]]}
    saliency = bind_saliency(label, num_clips=6, boundary=None, cfg=LabelConfig())
    assert saliency.tolist() == [0.0, 1.0, 0.0, 0.0, 0.5, 0.0]
    with pytest.raises(TrainingLabelError, match="duration"):
        bind_saliency(label, num_clips=9, boundary=None, cfg=LabelConfig())


def test_saliency_without_ratings_marks_the_windows() -> None:
    saliency = bind_saliency({"qid": 2}, 6, torch.tensor([[1.0, 5.0]]), LabelConfig())
    assert saliency.tolist() == [0.0, 1.0, 1.0, 0.0, 0.0, 0.0]


def test_a_query_without_positive_clip_is_refused() -> None:
    label = {"qid": 3, "duration": 8.0, "relevant_windows": [[0, 4]], "relevant_clip_ids": [0],
             "saliency_scores": [[0, 0, 0]]}
    video, query = torch.zeros(4, 2, 3, 16).half(), torch.zeros(2, 2, 8).half()
    with pytest.raises(TrainingLabelError, match="no clip with saliency"):
        make_sample(video, query, label, random.Random(0))


def test_short_annotations_are_left_out_like_the_official_train_split() -> None:
    assert not is_trainable({"duration": 4.0}, LabelConfig())
    assert is_trainable({"duration": 5.0}, LabelConfig())
    assert not is_trainable({"duration": 200.0}, LabelConfig(max_video_len=150.0))


class _Recorder:
    """A regularizer that keeps everything and notes where it was asked."""

    def __init__(self) -> None:
        self.dropout_calls: list[tuple[str, int, tuple[int, ...]]] = []
        self.path_calls: list[int] = []

    def dropout(self, x, site, call):
        self.dropout_calls.append((site, call, tuple(x.shape)))
        return x

    def drop_path(self, x, call):
        self.path_calls.append(call)
        return x


def test_every_official_dropout_site_is_visited_in_order() -> None:
    """Guards the coupling to the Identity placeholders of models.r2._mapping: if they move, dropout would
    silently vanish from training."""
    recorder = _Recorder()
    batch = tiny_batch([6, 4], [[0.1, 0.9, 0, 0, 0.3, 0.2], [0.4, 0.5, 0.1, 0.0]], [1, 1])
    forward_train(tiny_model(), batch, recorder)
    sites = ["adapter.video_map.1", "adapter.video_map.5", "adapter.query_map.1", "adapter.query_map.5"]
    assert [(s, c) for s, c, _ in recorder.dropout_calls] == [(s, c) for c in range(TINY.k) for s in sites]
    assert recorder.dropout_calls[0][2] == (2, 6, TOKENS, TINY.video_width + 2)  # (B, Tmax, P, C + TEF)
    assert recorder.path_calls == list(range(3 * TINY.k))
