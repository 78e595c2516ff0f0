"""A small generated grounding dataset whose target moments are visible: the training gain test and bench use it.

Each video shows a drifting random texture; during its target moment a large square of one colour covers the
middle of the frame, and its query names the colour ("a red square appears"). With ``moments_per_video=2`` a
video has two such moments of different colours and one query each, so a model must tell them apart by the
query (harder: the tiny CLIP of the tests learns it slowly). Windows lie on the 2 s clip grid, videos are short
and small (decoding is not what is measured), and everything follows from the seed.

Files: ``videos/v{i:03d}.mp4``, ``train.jsonl`` and ``val.jsonl`` in the QVHighlights format (qid, vid, query,
duration, relevant_windows).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30), "green": (30, 200, 60), "blue": (40, 70, 235), "yellow": (245, 225, 40),
    "white": (250, 250, 250), "purple": (150, 40, 190),
}


@dataclass(frozen=True)
class MarkedDataset:
    root: Path
    videos: Path
    train: Path
    val: Path
    num_videos: int
    seconds_per_video: float

    @property
    def hours(self) -> float:
        return self.num_videos * self.seconds_per_video / 3600


def _windows(rng: random.Random, clips: int, count: int) -> list[tuple[int, int]]:
    """``count`` disjoint windows of 3..6 clips, in clip units, at least one clip apart."""
    while True:
        spans = []
        for _ in range(count):
            length = rng.randint(3, 6)
            start = rng.randint(0, clips - length)
            spans.append((start, start + length))
        ordered = sorted(spans)
        if all(b[0] > a[1] for a, b in zip(ordered, ordered[1:], strict=False)):
            return spans


def write_video(path: Path, seconds: float, fps: int, size: tuple[int, int],
                marks: list[tuple[float, float, tuple[int, int, int]]], seed: int) -> None:
    width, height = size
    rng = np.random.default_rng(seed)
    texture = rng.integers(40, 200, size=(height // 8 + 2, width // 8 + 2, 3)).repeat(8, 0).repeat(8, 1)
    side = int(min(width, height) * 0.6)
    y0, x0 = (height - side) // 2, (width - side) // 2
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for i in range(int(round(seconds * fps))):
            t = (i + 0.5) / fps
            shift = i % 8
            frame = np.ascontiguousarray(texture[shift: shift + height, shift: shift + width]).astype(np.uint8)
            for start, end, rgb in marks:
                if start <= t < end:
                    frame[y0: y0 + side, x0: x0 + side] = rgb
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_marked_dataset(root: str | Path, *, num_videos: int = 48, val_videos: int = 16, seconds: float = 40.0,
                        fps: int = 4, size: tuple[int, int] = (96, 96), clip_s: float = 2.0,
                        moments_per_video: int = 1, seed: int = 0) -> MarkedDataset:
    """Write (or reuse, when the same settings wrote it before) the dataset under ``root``."""
    root = Path(root)
    videos = root / "videos"
    settings = dict(num_videos=num_videos, val_videos=val_videos, seconds=seconds, fps=fps, size=list(size),
                    clip_s=clip_s, moments=moments_per_video, seed=seed, version=2)
    stamp = root / "settings.json"
    dataset = MarkedDataset(root, videos, root / "train.jsonl", root / "val.jsonl", num_videos, seconds)
    if stamp.is_file() and json.loads(stamp.read_text()) == settings and dataset.val.is_file():
        return dataset
    videos.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    names = list(COLOURS)
    clips = int(seconds / clip_s)
    rows = []
    for v in range(num_videos):
        vid = f"v{v:03d}"
        colours = rng.sample(names, moments_per_video)
        spans = _windows(rng, clips, moments_per_video)
        marks = [(s * clip_s, e * clip_s, COLOURS[c]) for (s, e), c in zip(spans, colours, strict=True)]
        write_video(videos / f"{vid}.mp4", seconds, fps, size, marks, seed * 1000 + v)
        for j, ((s, e), colour) in enumerate(zip(spans, colours, strict=True)):
            rows.append(dict(qid=v * moments_per_video + j, vid=vid, query=f"a {colour} square appears",
                             duration=seconds, relevant_windows=[[s * clip_s, e * clip_s]]))
    split = (num_videos - val_videos) * moments_per_video
    dataset.train.write_text("".join(json.dumps(r) + "\n" for r in rows[:split]))
    dataset.val.write_text("".join(json.dumps(r) + "\n" for r in rows[split:]))
    stamp.write_text(json.dumps(settings))
    return dataset
