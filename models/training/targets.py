"""Classification and regression targets of the pyramid points (official ``PointGenerator`` + ``get_target``).

A point is one temporal position of one pyramid level: (position in clips, regression range low, high, stride).
A point is positive for a GT window if it lies within ``sample_radius`` strides of the window's centre (and
inside the window) and the window's larger distance fits the level's regression range; among several such
windows it regresses the shortest one.
"""

from __future__ import annotations

import torch
from torch import Tensor


def point_grid(level_sizes: list[int], strides: list[int], all_strides: tuple[int, ...]) -> Tensor:
    """(Npts, 4) [position, range_low, range_high, stride] for the levels that exist.

    Regression ranges come from the configured strides: level i covers (s_i, s_{i+1}] distances, the first
    from 0 and the last to infinity, whether or not the coarse levels exist for this batch.
    """
    bounds = [0.0, *map(float, all_strides[1:]), float("inf")]
    rows = []
    for level, (size, stride) in enumerate(zip(level_sizes, strides, strict=True)):
        position = torch.arange(size, dtype=torch.float32) * stride
        rows.append(torch.stack((position, torch.full_like(position, bounds[level]),
                                 torch.full_like(position, bounds[level + 1]), torch.full_like(position, stride)), 1))
    return torch.cat(rows)


def moment_targets(points: Tensor, boundary: Tensor, fps: list[float], sample_radius: float) -> tuple[Tensor, Tensor]:
    """cls (B, Npts) in {0, 1} and reg (B, Npts, 2) distances to start/end in strides.

    ``boundary`` (B, N, 2) seconds with +inf rows for padding. Padded windows can never be assigned: their
    length is masked to +inf like any window a point does not fit. A point that fits no window regresses
    window 0 (``min`` returns the first index among equal +inf lengths); it is weighted out of the loss, but
    window 0 is always real, so its target stays finite and ``0 * target`` cannot turn into NaN.
    """
    position, low, high, stride = (points[:, j, None] for j in range(4))  # (Npts, 1) each
    cls_rows, reg_rows = [], []
    for gt, rate in zip(boundary, fps, strict=True):
        gt = gt * rate  # (N, 2) clips
        start, end = gt[None, :, 0], gt[None, :, 1]  # (1, N)
        lens = (end - start).expand(points.shape[0], -1).clone()  # (Npts, N)
        dist = torch.stack((position - start, end - position), dim=-1)  # (Npts, N, 2)

        if sample_radius > 0:
            center = (start + end) / 2
            near_start = position - torch.maximum(center - stride * sample_radius, start)
            near_end = torch.minimum(center + stride * sample_radius, end) - position
            inside_centre = torch.minimum(near_start, near_end) >= 0  # (Npts, N)
        else:
            inside_centre = dist.min(-1)[0] >= 0  # anywhere inside the window
        farthest = dist.max(-1)[0]
        fits_level = (farthest >= low) & (farthest <= high)

        lens.masked_fill_(~inside_centre, float("inf"))
        lens.masked_fill_(~fits_level, float("inf"))
        shortest, choice = lens.min(dim=1)  # (Npts,)
        ties = (lens <= shortest[:, None] + 1e-3) & (lens < float("inf"))
        cls_rows.append(ties.any(dim=1).to(dist.dtype))
        reg_rows.append(dist[torch.arange(points.shape[0]), choice] / stride)
    return torch.stack(cls_rows), torch.stack(reg_rows)
