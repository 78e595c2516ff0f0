"""One official R2-Tuning training step (fixture folder ``train_step``): batch collation, every loss term, the
gradients, the pre-clip gradient norm and the parameters after one AdamW step.

Cases, sizes, seeds, mask shapes and subsets come from ``train_step/cases.json``; tolerances follow its README:
losses abs 1e-6; gradients per tensor ``|g - ref| <= 1e-3 * max|ref| + 1e-8`` (tensors with an exactly-zero true
gradient abs 1e-6); total gradient norm rel 1e-5; parameters after the warm-up step abs 1.1e-6 (= 2 * lr, the
size of an Adam sign flip), not compared for zero-gradient tensors; after a base-lr step only where |g| > 1e-6.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import torch

from models.training import (
    LossConfig,
    SampledRegularization,
    build_optimizer,
    build_scheduler,
    collate,
    compute_losses,
    forward_train,
    lr_factor,
    objective,
    train_step,
)
from models.training.targets import moment_targets, point_grid

from train_cases import (
    arrays,
    batch_size,
    case,
    case_files,
    listing,
    model,
    optim_config,
    rebuilt_samples,
    regularization_config,
    replayed_regularizer,
    stored_batch,
    zero_gradient_tensors,
)

pytestmark = pytest.mark.reference

LOSS_KEYS = ("loss_reg", "loss_cls", "loss_sal", "loss_video_cal", "loss_layer_cal", "loss")
LOSS_ATOL = 1e-6
GRAD_RTOL_OF_MAX, GRAD_ATOL, ZERO_GRAD_ATOL = 1e-3, 1e-8, 1e-6
GRAD_NORM_RTOL = 1e-5
PARAM_AFTER_ATOL = 1.1e-6
BASE_STEP_MIN_GRAD = 1e-6
DEBUG_RTOL_OF_MAX = 2e-5  # forward intermediates (optional debug arrays): observed <= 4e-6 abs at O(1) values


def _regularizer(file: str):
    return replayed_regularizer(file) if case(file)["masks"] else None


@cache
def _backward(file: str):
    """Forward + loss + backward of a fresh model: (losses, {name: grad}, output)."""
    net = model()
    batch = stored_batch(net.cfg.k)
    out = forward_train(net, batch, _regularizer(file))
    losses = compute_losses(out, batch, net.cfg.strides)
    losses["loss"].backward()
    grads = {name: p.grad.numpy().copy() for name, p in net.named_parameters()}
    return {k: v.item() for k, v in losses.items()}, grads, out


def _steps() -> list[tuple[str, str]]:
    return [(file, tag) for file in case_files() for tag in ("warm", "base")
            if case(file).get(f"lr_{tag}") is not None and any(k.startswith(f"param_after_{tag}/")
                                                               for k in arrays(file))]


def test_trainable_parameters_match_listing() -> None:
    net = model()
    trainable = [(n, list(p.shape)) for n, p in net.named_parameters() if p.requires_grad]
    assert trainable == [(p["name"], p["shape"]) for p in listing()["trainable_params"]]
    assert sum(p.numel() for _, p in net.named_parameters()) == listing()["n_trainable"]


def test_collate_rebuilds_the_stored_batch() -> None:
    k = model().cfg.k
    rebuilt, stored = collate(rebuilt_samples(k)), stored_batch(k)
    for field in ("video", "query", "boundary", "saliency", "pos_clip"):
        ours, ref = getattr(rebuilt, field), getattr(stored, field)
        assert ours.dtype == ref.dtype and torch.equal(ours, ref), field
    assert rebuilt.fps == stored.fps
    z = arrays("inputs.npz")
    assert rebuilt.video_mask.sum(1).tolist() == z["video_len"].tolist()
    assert rebuilt.query_mask.sum(1).tolist() == z["query_len"].tolist()


@pytest.mark.parametrize("file", case_files())
def test_points_targets_and_masks(file: str) -> None:
    z = arrays(file)
    _, _, out = _backward(file)
    assert out.level_sizes == z["dbg_level_sizes"].tolist()
    points = point_grid(out.level_sizes, out.strides, model().cfg.strides)
    np.testing.assert_array_equal(points.numpy(), z["dbg_points"])
    batch = stored_batch(model().cfg.k)
    cls_tgt, reg_tgt = moment_targets(points, batch.boundary, batch.fps, LossConfig().sample_radius)
    np.testing.assert_array_equal(cls_tgt.numpy(), z["dbg_cls_tgt"])
    np.testing.assert_allclose(reg_tgt.numpy(), z["dbg_reg_tgt"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(out.pyramid_mask.numpy(), z["dbg_pymid_msk"])
    np.testing.assert_array_equal(out.video_mask.numpy(), z["dbg_video_msk"])


@pytest.mark.parametrize("file", case_files())
def test_forward_intermediates(file: str) -> None:
    z = arrays(file)
    _, _, out = _backward(file)
    pairs = {"out_class": out.out_class, "out_coord": out.out_coord, "video_emb": out.video_emb,
             "query_emb": out.query_emb, "coll_v": out.coll_v, "coll_q": out.coll_q}
    for name, ours in pairs.items():
        ref = z[f"dbg_{name}"]
        ours = ours.detach().numpy().reshape(ref.shape)
        np.testing.assert_allclose(ours, ref, rtol=0, atol=DEBUG_RTOL_OF_MAX * max(1.0, np.abs(ref).max()),
                                   err_msg=name)


@pytest.mark.parametrize("key", LOSS_KEYS)
@pytest.mark.parametrize("file", case_files())
def test_loss(file: str, key: str) -> None:
    losses, _, _ = _backward(file)
    assert abs(losses[key] - float(arrays(file)[key])) <= LOSS_ATOL, (losses[key], float(arrays(file)[key]))
    assert abs(losses[key] - case(file)["losses"][key]) <= LOSS_ATOL


@pytest.mark.parametrize("file", case_files())
def test_gradients(file: str) -> None:
    _, grads, _ = _backward(file)
    z = arrays(file)
    zero = zero_gradient_tensors(file, list(grads))
    stored = [k.removeprefix("grad/") for k in z if k.startswith("grad/")]
    expected = [p["name"] for p in listing()["trainable_params"]] if case(file)["full_grads"] == "all" \
        else case(file)["full_grads"]
    assert sorted(stored) == sorted(expected)
    failures = []
    for name in stored:
        ours, ref = grads[name], z[f"grad/{name}"]
        assert np.isfinite(ours).all(), name
        bound = ZERO_GRAD_ATOL if name in zero else GRAD_RTOL_OF_MAX * np.abs(ref).max() + GRAD_ATOL
        worst = np.abs(ours - ref).max()
        if worst > bound:
            failures.append(f"{name}: max|diff| {worst:.3g} > {bound:.3g}")
    assert not failures, failures


@pytest.mark.parametrize("file", case_files())
def test_gradient_norms(file: str) -> None:
    """Total pre-clip norm, and the norm of every tensor (covers the tensors whose full gradient is not stored)."""
    _, grads, _ = _backward(file)
    z = arrays(file)
    total = np.sqrt(sum(float(np.square(g.astype(np.float64)).sum()) for g in grads.values()))
    assert abs(total - float(z["grad_norm_total"])) <= GRAD_NORM_RTOL * float(z["grad_norm_total"])
    assert abs(total - case(file)["grad_norm_total_preclip"]) <= GRAD_NORM_RTOL * case(file)["grad_norm_total_preclip"]
    zero = zero_gradient_tensors(file, list(grads))
    for (name, g), ref in zip(grads.items(), z["grad_norms"], strict=True):
        norm = float(np.linalg.norm(g.astype(np.float64)))
        bound = ZERO_GRAD_ATOL if name in zero else GRAD_RTOL_OF_MAX * ref + GRAD_ATOL
        assert abs(norm - ref) <= bound, (name, norm, ref)


@pytest.mark.parametrize(("file", "tag"), _steps())
def test_parameters_after_step(file: str, tag: str) -> None:
    cfg = optim_config()
    # 'warm' is the first iteration (lr = ratio * base); 'base' the first iteration after the warm-up.
    start = 0 if tag == "warm" else cfg.warmup_iters
    # Any epoch length longer than the warm-up gives these two iterations the same lr (no decay yet).
    expected_lr = case(file)[f"lr_{tag}"]
    assert lr_factor(start, iters_per_epoch=10**6, cfg=cfg) * cfg.lr == pytest.approx(expected_lr, rel=1e-12)

    net = model()
    optimizer = build_optimizer(net, cfg)
    scheduler = build_scheduler(optimizer, iters_per_epoch=10**6, cfg=cfg, start_iteration=start)
    result = train_step(net, stored_batch(net.cfg.k), optimizer, scheduler, _regularizer(file), optim_cfg=cfg)
    assert result.lr == pytest.approx(expected_lr, rel=1e-12)
    assert abs(result.grad_norm - case(file)["grad_norm_total_preclip"]) <= GRAD_NORM_RTOL * result.grad_norm

    z = arrays(file)
    _, grads, _ = _backward(file)
    zero = zero_gradient_tensors(file, list(grads))
    params = dict(net.named_parameters())
    subset = listing()["subset_after_step"]
    assert sorted(k.removeprefix(f"param_after_{tag}/") for k in z if k.startswith(f"param_after_{tag}/")) \
        == sorted(subset)
    failures = []
    for name in subset:
        if name in zero:
            continue  # Adam turns their rounding-noise gradients into +-lr updates
        ours, ref = params[name].detach().numpy(), z[f"param_after_{tag}/{name}"]
        if tag == "base":
            grad = z[f"grad/{name}"] if f"grad/{name}" in z else grads[name]
            keep = np.abs(grad) > BASE_STEP_MIN_GRAD
            ours, ref = ours[keep], ref[keep]
        worst = float(np.abs(ours - ref).max(initial=0.0))
        if worst > PARAM_AFTER_ATOL:
            failures.append(f"{name}: max|diff| {worst:.3g}")
    assert not failures, failures


@pytest.mark.parametrize("file", [f for f in case_files() if case(f)["masks"]])
def test_sampled_dropout_draws_the_official_masks(file: str) -> None:
    """Seeded like the fixture run, our sampled dropout / drop-path draw the official masks (same calls, shapes
    and order on the same torch CPU build), so the losses equal the replayed case."""
    assert torch.__version__.split("+")[0] == listing()["torch"].split("+")[0], \
        "the CPU dropout stream is build-specific: run with the torch version the fixtures name"
    net = model().train()
    torch.manual_seed(listing()["seeds"]["drop_seed"])
    losses = objective(net, stored_batch(net.cfg.k), SampledRegularization(regularization_config()))
    for key in LOSS_KEYS:
        assert abs(losses[key].item() - float(arrays(file)[key])) <= LOSS_ATOL, key


def test_batch_has_the_listed_size() -> None:
    assert batch_size() == len(listing()["labels"]) == len(listing()["seeds"]["T"])
