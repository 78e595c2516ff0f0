"""The "extract" pipeline against the official extract_frames.py + extract_feat.py (fixture section 8).

One test per case of ``extract/extract.json``: N and the picked source frames exact, frames exact uint8, the
normalised frames within 1e-6, through the in-process source and the isolated decoder. Sizes, rates and videos come
from the listing and the arrays (a case's video may sit in ``extract/`` or elsewhere, e.g. ``../preprocess/``).
"""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from models.extract import ExtractSource
from models.video import FrameSpec, decode_in_subprocess

from fixture_sets import fixture_path, read_listing

pytestmark = pytest.mark.reference

NORMALIZED_ATOL = 1e-6
PTS_ATOL = 1e-6  # the listed pts are printed with 6 decimals
CHUNK = 4  # smaller than most N: several chunks per video

LISTING = read_listing("extract", "extract.json")
CASES = LISTING["cases"]


def presentation_pts(video) -> list[float]:
    """Every frame's pts (seconds) in presentation order: what a source index counts."""
    with av.open(str(video)) as container:
        return sorted(float(frame.time) for frame in container.decode(video=0))


def test_extract_constants_are_the_listed_ones():
    spec = FrameSpec(fps=1.0, preprocess="extract")
    assert spec.mean == tuple(LISTING["mean"]) and spec.std == tuple(LISTING["std"])


@pytest.mark.parametrize("case", CASES, ids=[case["file"].removesuffix(".npz") for case in CASES])
def test_extract_case(case):
    ref = np.load(fixture_path("extract", case["file"]))
    video = fixture_path("extract", case["video"])
    frames_ref = ref["frames"]
    n, _, size, _ = frames_ref.shape
    assert n == case["N"] and list(frames_ref.shape) == case["frames_shape"]
    spec = FrameSpec(fps=case["fps"], size=size, preprocess="extract")

    # The official tool's uint8 frames, byte for byte, and which source frame each one took.
    source = ExtractSource(video, spec, chunk_size=CHUNK)
    assert list(source.geometry) == case["scale_to_wh"] + case["crop_xy"]
    parts = list(source.frames())
    frames = np.concatenate([f for f, _ in parts])
    times = [t for _, ts in parts for t in ts]
    assert frames.shape == frames_ref.shape and frames.dtype == np.uint8
    assert np.array_equal(frames, frames_ref)
    np.testing.assert_allclose(times, ref["pts_seconds"], rtol=0, atol=PTS_ATOL)
    pts = presentation_pts(video)
    src_index = [min(range(len(pts)), key=lambda i: abs(pts[i] - t)) for t in times]
    assert src_index == ref["src_index"].tolist() == case["src_index"]

    # The CLIP input, through the killable child process; the info carries every clip's timestamp.
    isolated = list(decode_in_subprocess(video, spec, timeout_s=120.0, chunk_size=CHUNK))
    normalized = torch.cat([chunk for _, chunk in isolated])
    torch.testing.assert_close(normalized, torch.from_numpy(ref["normalized"]), rtol=0, atol=NORMALIZED_ATOL)
    info = isolated[-1][0]
    assert list(info.clip_times) == times
    assert spec.fps * info.duration == pytest.approx(case["fps_times_duration"], abs=1e-6)
