"""Video preprocessing parity with the official ``tools/inference.py`` ``load_video`` (fixture section 4).

One test per run listed in ``preprocess/preprocess.json``: frame indices and decoded frames exact, float32 output
frames within 1e-5, the whole output (stored as float16) within 2e-3, the same values whatever the chunk size and
through the isolated decoder, and each clip's timestamp is the pts of its frame.
"""

from __future__ import annotations

from dataclasses import replace

import av
import decord
import numpy as np
import pytest
import torch

from models.video import FrameSpec, decode_in_subprocess, iter_frames, probe_video, sample_indices

from fixture_sets import fixture_path, read_listing

pytestmark = pytest.mark.reference

FLOAT32_ATOL = 1e-5
FLOAT16_ATOL = 2e-3

RUNS = [(video, run) for video in read_listing("preprocess", "preprocess.json")["videos"] for run in video["runs"]]


@pytest.mark.parametrize(("video", "run"), RUNS, ids=[run["tag"] for _, run in RUNS])
def test_preprocess_run(video, run):
    mp4 = fixture_path("preprocess", video["file"])
    ref = np.load(fixture_path("preprocess", f"{run['tag']}.npz"))
    expected_indices = ref["indices"].tolist()
    assert expected_indices == run["indices"]

    # Indices: from the listed decord numbers and from our own probe.
    info = probe_video(mp4)
    assert (info.num_frames, info.avg_fps) == (run["decord_len"], run["decord_avg_fps"])
    assert (info.width, info.height) == (video["width"], video["height"])
    assert sample_indices(run["decord_len"], run["decord_avg_fps"], run["target_fps"]) == expected_indices
    assert sample_indices(info.num_frames, info.avg_fps, run["target_fps"]) == expected_indices

    # Raw frames: decord at those indices, byte for byte.
    raw = decord.VideoReader(str(mp4)).get_batch(expected_indices).asnumpy()
    assert raw.dtype == np.uint8 and np.array_equal(raw, ref["raw_frames"])

    # Output: size from the stored tensor, the script's default (short) constants.
    full = torch.from_numpy(ref["output_full_fp16"]).float()
    n, _, size, _ = full.shape
    assert [1, n, 3 * size * size] == run["output_shape"]
    spec = FrameSpec(fps=run["target_fps"], size=size)
    whole = torch.cat(list(iter_frames(mp4, spec, chunk_size=n)))
    assert whole.shape == full.shape and whole.dtype == torch.float32
    sel = ref["output_frames_sel"].tolist()
    torch.testing.assert_close(whole[sel], torch.from_numpy(ref["output_sel"]), rtol=0, atol=FLOAT32_ATOL)
    torch.testing.assert_close(whole, full, rtol=0, atol=FLOAT16_ATOL)

    # Chunked decoding and the isolated decoder give the very same tensor.
    assert torch.equal(torch.cat(list(iter_frames(mp4, spec, chunk_size=2))), whole)
    isolated = list(decode_in_subprocess(mp4, spec, timeout_s=120.0, chunk_size=3))
    assert all(replace(got_info, clip_times=()) == info for got_info, _ in isolated)
    assert torch.equal(torch.cat([chunk for _, chunk in isolated]), whole)

    # Each clip's real timestamp: the pts of the frame at its index (frames counted in presentation order by PyAV;
    # decord's timestamps are float32).
    with av.open(str(mp4)) as container:
        pts = sorted(float(frame.time) for frame in container.decode(video=0))
    assert isolated[-1][0].clip_times == pytest.approx([pts[i] for i in expected_indices], abs=1e-4)
