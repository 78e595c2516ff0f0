"""Read the R2 fixture cases (r2_head / r2_highlight / e2e_tiny layouts) into model inputs."""

from __future__ import annotations

import numpy as np
import torch

from fixture_sets import fixture_path, read_listing


def listing(folder: str) -> dict:
    return read_listing(folder, "cases.json")


def case_ids(folder: str) -> list[str]:
    return [case["name"] for case in listing(folder)["cases"]]


def load_case(folder: str, name: str) -> tuple[dict, dict[str, np.ndarray]]:
    case = next(c for c in listing(folder)["cases"] if c["name"] == name)
    with np.load(fixture_path(folder, f"{name}.npz")) as z:
        return case, {key: z[key] for key in z.files}


def video_rows(arrays: dict[str, np.ndarray]) -> torch.Tensor:
    """(T, row) float32 video features, rebuilt exactly from the dense or the factored storage."""
    if "video" in arrays:
        return torch.from_numpy(arrays["video"][0].astype(np.float32))
    base = torch.from_numpy(arrays["video_base"].astype(np.float32))  # (K, P, C)
    frame_patch = torch.from_numpy(arrays["video_frame_patch"].astype(np.float32))  # (T, K, P)
    frame_chan = torch.from_numpy(arrays["video_frame_chan"].astype(np.float32))  # (T, K, C)
    video = base[None] + frame_patch[..., None] + frame_chan[:, :, None, :]  # (T, K, P, C)
    return video.reshape(video.shape[0], -1)


def features_layout(rows: torch.Tensor, k: int, width: int) -> torch.Tensor:
    """Official feature rows (layer-major, then token, then channel) -> (K, N, tokens, C)."""
    n = rows.shape[0]
    return rows.reshape(n, k, -1, width).permute(1, 0, 2, 3)
