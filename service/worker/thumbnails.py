"""One small JPEG per clip, made from the frames the encoder already has (no second decode)."""

from __future__ import annotations

import io
import logging
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from models.video import FrameSpec
from service.contract.schemas import Job, Mode

log = logging.getLogger(__name__)


class Thumbnails:
    """Collects the JPEGs of a video's clips while it is encoded (``add`` is the encoder's ``on_frames``).

    Best effort: a frame that cannot be made into a JPEG leaves the video without thumbnails (``jpegs`` is then
    None), never without its features.
    """

    def __init__(self, spec: FrameSpec, side: int, quality: int) -> None:
        assert spec.mean is not None and spec.std is not None
        self.mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(spec.std).view(1, 3, 1, 1)
        self.side, self.quality = side, quality
        self.jpegs: list[bytes] | None = []

    def add(self, frames: torch.Tensor) -> None:
        """frames: (n, 3, size, size) float, normalised as the CLIP input is."""
        if self.jpegs is None:
            return
        try:
            pixels = frames.detach().to("cpu", torch.float32) * self.std + self.mean  # back to 0..1, (n, 3, S, S)
            if max(pixels.shape[-2:]) > self.side:
                pixels = F.interpolate(pixels, size=(self.side, self.side), mode="bilinear", antialias=True,
                                       align_corners=False)
            images = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (n, s, s, 3)
            for image in images:
                out = io.BytesIO()
                Image.fromarray(image).save(out, format="JPEG", quality=self.quality)
                self.jpegs.append(out.getvalue())
        except (ValueError, OSError, RuntimeError) as err:
            log.warning("no thumbnails for this video: %s", err)
            self.jpegs = None


def name_thumbnails(body: dict[str, Any], job: Job, video_id: str, count: int, clip_seconds: float) -> dict[str, Any]:
    """Name the thumbnail of each moment / highlight / segment of an answer (the clip it starts in) when the
    video has ``count`` of them for the job's model (``GET /v1/videos/{id}/thumbnails/{clip}?model=...``)."""
    if count <= 0:
        return body
    base = f"/v1/videos/{video_id}/thumbnails/{{}}?model={job.model}"

    def name(items: list[dict[str, Any]]) -> None:
        for item in items:
            item["thumbnail"] = base.format(min(count - 1, max(0, int(item["start"] / clip_seconds + 1e-6))))

    if job.mode == Mode.moments:
        for result in body["results"]:
            name(result["moments"])
    else:
        name(body["highlights"] if job.mode == Mode.highlights else body["segments"])
    return body
