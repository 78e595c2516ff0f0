"""One small JPEG per clip, made from the frames the encoder already has (no second decode)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.io import encode_jpeg

from models.video import FrameSpec


class Thumbnails:
    """Collects the JPEGs of a video's clips while it is encoded (``add`` is the encoder's ``on_frames``)."""

    def __init__(self, spec: FrameSpec, side: int, quality: int) -> None:
        assert spec.mean is not None and spec.std is not None
        self.mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(spec.std).view(1, 3, 1, 1)
        self.side, self.quality = side, quality
        self.jpegs: list[bytes] = []

    def add(self, frames: torch.Tensor) -> None:
        """frames: (n, 3, size, size) float, normalised as the CLIP input is."""
        pixels = frames.detach().to("cpu", torch.float32) * self.std + self.mean  # back to 0..1, (n, 3, S, S)
        if max(pixels.shape[-2:]) > self.side:
            pixels = F.interpolate(pixels, size=(self.side, self.side), mode="bilinear", antialias=True,
                                   align_corners=False)
        images = (pixels.clamp(0, 1) * 255).round().to(torch.uint8)  # (n, 3, side, side)
        self.jpegs.extend(bytes(j.numpy().tobytes()) for j in encode_jpeg(list(images), quality=self.quality))
