"""Library search on the model side: CLIP embeddings for the first stage, R2 grounding over many videos.

The first stage compares a query's projected CLIP text embedding with each clip's projected CLIP frame
embedding (the image tower's final layer: class token -> ``ln_post`` -> ``proj``, what CLIP itself uses for
retrieval). Both come from tensors the service has anyway: the frame embedding from the last entry of the
cached (K, T, P, C) features, so a video needs no second pass through the image tower.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .clip import ClipTowers
from .engine import Grounder
from .r2 import VideoState


def frame_embeddings(clip: ClipTowers, features: Tensor) -> Tensor:
    """(K, T, P, C) cached features (last entry = final block) -> (T, D) unit-norm float32 clip embeddings."""
    visual = clip.clip.visual
    with torch.inference_mode():
        cls = features[-1, :, 0].to(clip.device, torch.float32)  # (T, C) final-layer class tokens
        emb = visual.ln_post(cls) @ visual.proj  # (T, D)
        return torch.nn.functional.normalize(emb, dim=-1).cpu()


def text_embedding(clip: ClipTowers, query: str) -> Tensor:
    """One query -> (D,) unit-norm float32 projected CLIP text embedding (end-of-text token, as CLIP does)."""
    model = clip.clip
    tokens = clip.tokenize([query]).to(clip.device)  # (1, 77)
    with torch.inference_mode():
        stack = clip.encode_text(tokens, last_k=1)  # (1, 1, 77, Ct)
        x = model.ln_final(stack[0])  # (1, 77, Ct)
        eot = x[torch.arange(1), tokens.argmax(dim=-1)]  # (1, Ct): the highest id is the end-of-text token
        return torch.nn.functional.normalize(eot @ model.text_projection, dim=-1)[0].cpu()


@dataclass
class LibraryVideo:
    """One candidate video for the second stage: its adapter state (or features) and its duration."""

    video_id: str
    source: Tensor | VideoState  # (K, T, P, C) features or the query-independent adapter state
    duration: float
    key: str | None = None  # the grounder's in-memory state key, so repeated searches reuse the state


def ground_library(grounder: Grounder, videos: Sequence[LibraryVideo], query: str,
                   top_k: int) -> list[tuple[str, list[tuple[float, float, float]]]]:
    """The query grounded on every video, in one worker trip: per video its moments (best first, ``top_k``).

    Videos differ in length, so each is one adapter call; the query's text features are encoded once and come
    from the grounder's text cache for the others.
    """
    return [(v.video_id, grounder.ground(v.source, [query], video_key=v.key, duration=v.duration,
                                         top_k=top_k)[0].moments) for v in videos]
