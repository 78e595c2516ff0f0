"""Rendering a highlight reel within its limits (PyAV, no model): frames cut at any time, not only at keyframes;
too large or too slow fails with its code."""

from __future__ import annotations

import av
import pytest

from service.contract.errors import ServiceError
from service.worker.reels import render_reel

from service_helpers import make_video


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("reel") / "v.mp4", 8, fps=10, size=(320, 240))


def test_cuts_between_keyframes_keep_every_frame_and_scale_down(source, tmp_path) -> None:
    target = tmp_path / "r.mp4"
    seconds = render_reel(source, [(0.3, 1.1), (5.5, 7.0)], target, max_height=120, max_bytes=1 << 24, timeout_s=60)
    assert seconds == pytest.approx(2.3)
    with av.open(str(target)) as reel:
        stream = reel.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (160, 120)
        assert reel.duration / 1e6 == pytest.approx(2.3, abs=0.05)
        assert sum(1 for _ in reel.decode(video=0)) == 23


@pytest.mark.parametrize("limits, code", [(dict(max_bytes=64 << 10, timeout_s=60), "reel_too_large"),
                                          (dict(max_bytes=1 << 24, timeout_s=1e-6), "reel_timeout")])
def test_limits(source, tmp_path, limits, code) -> None:
    with pytest.raises(ServiceError) as caught:
        render_reel(source, [(0.0, 8.0)], tmp_path / "r.mp4", max_height=240, **limits)
    assert caught.value.code == code
