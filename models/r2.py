"""The R2-Tuning side network: R2 block, temporal pyramid, heads, boundary decoding and saliency.

The model is split at the seam the service caches on: :meth:`R2Tuning.prepare_video` does every piece of
video-side work that does not depend on the query (the video mapping of all k layers, the attention key
projection, temporal channels, positional encoding) once per video; :meth:`R2Tuning.forward` then answers a
batch of queries against that state. Module and parameter names mirror the official checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import TemporalDecoderLayer, sine_positional_encoding


@dataclass(frozen=True)
class R2Config:
    """Architecture of one R2-Tuning checkpoint (see :func:`models.checkpoint.infer_config`)."""

    video_width: int  # channels of a CLIP video token (768 for ViT-B/32)
    query_width: int  # channels of a CLIP text token (512 for ViT-B/32)
    dims: int = 256  # width of the side network
    k: int = 4  # how many of the last CLIP layers the R2 block refines
    strides: tuple[int, ...] = (1, 2, 4, 8)  # temporal pyramid levels
    use_tef: bool = True  # append the two temporal channels t/T, (t+1)/T to every video token
    coord_head: bool = True  # False for highlight-only checkpoints (no moments)
    merge_cls_sal: bool = True  # saliency = class score x cosine similarity (False: class score alone)
    heads: int = 8  # attention heads of the temporal layer (not recoverable from tensors)
    ffn_hidden: int = 1024  # hidden width of the temporal layer's FFN
    head_kernel: int = 3  # temporal kernel of the class / coordinate heads
    max_num_moment: int = 50  # rows kept in the raw boundary output


class Transpose(nn.Module):
    """Swap the time and channel axes so Conv1d can run along time."""

    def forward(self, x: Tensor) -> Tensor:
        return x.transpose(-1, -2)


def _mapping(in_dims: int, dims: int) -> nn.Sequential:
    # Identity stands where the official block has dropout, keeping the checkpoint's layer indices.
    return nn.Sequential(nn.LayerNorm(in_dims), nn.Identity(), nn.Linear(in_dims, dims), nn.ReLU(),
                         nn.LayerNorm(dims), nn.Identity(), nn.Linear(dims, dims))


@dataclass
class VideoState:
    """Query-independent R2 work for one video under one checkpoint."""

    values: Tensor  # (K, T, P, D) video_map of every token, layers shallow -> deep
    keys: Tensor  # (K, T, P, D) v_map(values): the attention keys of the query-guided pooling
    pe: Tensor  # (T, D) positional encoding
    mask: Tensor  # (T,) 1 for valid frames

    @property
    def num_frames(self) -> int:
        return self.values.shape[1]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.values, self.keys, self.pe, self.mask))


class R2Block(nn.Module):
    """Recurrent, coarse-to-fine refinement over the last k CLIP layers (deepest first)."""

    def __init__(self, cfg: R2Config) -> None:
        super().__init__()
        d = cfg.dims
        self.video_map = _mapping(cfg.video_width + (2 if cfg.use_tef else 0), d)
        self.query_map = _mapping(cfg.query_width, d)
        if cfg.k > 1:
            self.gate = nn.Parameter(torch.zeros(cfg.k - 1))
        self.v_map = nn.Linear(d, d)
        self.q_map = nn.Linear(d, d)
        self.scale = nn.Parameter(torch.zeros(cfg.k))
        self.tem = TemporalDecoderLayer(d, cfg.heads, cfg.ffn_hidden)
        self.cfg = cfg

    def prepare_video(self, features: Tensor) -> VideoState:
        """features (K, T, P, C) of the last k CLIP layers -> cached state."""
        k, t, p, _ = features.shape
        if k != self.cfg.k:
            raise ValueError(f"video features have {k} layers but the checkpoint uses k={self.cfg.k}")
        features = features.float()
        mask = features[0, :, 0, 0].isfinite().long()
        features = torch.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0)
        if self.cfg.use_tef:
            # float arange(0, 1, 1/T) has T+1 entries for some T; the reference keeps the first T.
            start = torch.arange(0, 1, 1 / t, device=features.device)[:t]
            tef = torch.stack((start, start + 1.0 / t), dim=1)  # (T, 2)
            tef = tef[None, :, None, :].expand(k, t, p, 2)
            features = torch.cat((features, tef), dim=-1)
        values = torch.stack([self.video_map(features[i]) for i in range(k)])  # (K, T, P, D)
        keys = self.v_map(values)
        pe = sine_positional_encoding(t, self.cfg.dims, features.device)
        return VideoState(values=values, keys=keys, pe=pe, mask=mask)

    def forward(self, state: VideoState, query: Tensor, query_mask: Tensor,
                pool_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Refine the video for B queries.

        query (B, K, L, Cq); query_mask (B, L) marks tokens that attention and pooling may use;
        pool_mask (B, L) marks tokens that enter the max over query tokens (the official end-to-end path
        includes padding there, the features path has no padding at all).
        Returns the video embedding (B, T, D) and the shallowest layer's query embedding (B, L, D).
        """
        b = query.shape[0]
        t = state.num_frames
        video_mask = state.mask[None].expand(b, t)
        tokens = _PackedTokens(pool_mask)
        last = q_emb = None
        for i in range(self.cfg.k - 1, -1, -1):
            q_emb = self.query_map(query[:, i])  # (B, L, D)
            pooled = self._pool(state, i, q_emb, tokens)  # (B, T, D)
            v_emb = state.values[i][:, 0] + pooled * self.scale[i].tanh()
            if i < self.cfg.k - 1:
                gate = self.gate[i].sigmoid()
                v_emb = gate * v_emb + (1 - gate) * last
            last = self.tem(v_emb, q_emb, state.pe, video_mask, query_mask)
        return last, q_emb


    def _pool(self, state: VideoState, layer: int, q_emb: Tensor, tokens: _PackedTokens) -> Tensor:
        """Query-guided spatial pooling of layer ``layer``: every query token attends over each frame's P
        patches, and each frame keeps the max over a query's tokens -> (B, T, D).

        The tokens of all B queries are packed into one axis of N = sum of their lengths (no padding), so a
        batch costs its real tokens, not B x the longest query: per block of frames, one (F*P, D) x (D, N)
        matmul for the logits and one batched (N, P) x (P, D) with the token added in the same call. Blocks
        of frames keep the (F, N, D) intermediate small enough to stay in cache.
        """
        keys, values = state.keys[layer], state.values[layer]  # (T, P, D)
        t, p, d = keys.shape
        packed = q_emb[tokens.select]  # (N, D)
        queries_t = self.q_map(packed).T.contiguous()  # (D, N)
        block = max(1, _POOL_BLOCK_ELEMENTS // (packed.shape[0] * d))
        out = []
        for start in range(0, t, block):
            k, v = keys[start: start + block], values[start: start + block]
            f = k.shape[0]
            logits = (k.reshape(f * p, d) @ queries_t).view(f, p, -1)  # (F, P, N)
            att = (logits / self.cfg.dims**0.5).softmax(1)
            pooled = torch.baddbmm(packed.expand(f, -1, -1), att.transpose(1, 2), v)  # (F, N, D)
            out.append(tokens.max_per_query(pooled))
        return torch.cat(out, dim=1) if len(out) > 1 else out[0]


# Elements of one block's (frames, tokens, D) pooling intermediate: ~4 MB of float32.
_POOL_BLOCK_ELEMENTS = 1 << 20


class _PackedTokens:
    """Which query tokens enter the pooling max, packed query-major, and the max over each query's run."""

    def __init__(self, pool_mask: Tensor) -> None:
        self.select = pool_mask.bool()  # (B, L)
        self.lengths = self.select.sum(1)  # (B,) every query has at least one token
        self.uniform = bool((self.lengths == self.lengths[0]).all())

    def max_per_query(self, pooled: Tensor) -> Tensor:
        """(T, N, D) packed -> (B, T, D): the max over each query's own tokens."""
        t, _, d = pooled.shape
        b = self.lengths.shape[0]
        if self.uniform:  # equal lengths (single queries, the end-to-end path): a plain reshape
            return pooled.view(t, b, -1, d).amax(2).transpose(0, 1)
        return torch.stack([part.amax(1) for part in pooled.split(self.lengths.tolist(), dim=1)])


class ConvPyramid(nn.Module):
    """Temporal feature pyramid; the stride-1 level is a ReLU that later levels and the saliency see."""

    def __init__(self, dims: int, strides: tuple[int, ...]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        for s in strides:
            layers: list[nn.Module] = []
            for _ in range(int(math.log2(s))):
                layers += [Transpose(), nn.Conv1d(dims, dims, 2, stride=2), Transpose(), nn.LayerNorm(dims),
                           nn.ReLU()]
            self.blocks.append(nn.Sequential(*layers) if layers else nn.ReLU())
        self.strides = strides

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[int], Tensor]:
        """x (B, T, D) -> (levels [(B, n_i, D)], their strides, x as later consumers see it)."""
        levels, strides = [], []
        for s, block in zip(self.strides, self.blocks, strict=True):
            if x.shape[1] < s:
                continue  # a level exists only if the video has at least `stride` clips
            out = block(x)
            if s == 1:
                x = out  # the official level is an in-place ReLU: everything after sees ReLU(x)
            levels.append(out)
            strides.append(s)
        return levels, strides, x


class ConvHead(nn.Module):
    def __init__(self, dims: int, out_dims: int, kernel: int) -> None:
        super().__init__()
        self.module = nn.Sequential(Transpose(), nn.Conv1d(dims, dims, kernel, padding=kernel // 2), nn.ReLU(),
                                    nn.Conv1d(dims, out_dims, kernel, padding=kernel // 2), Transpose())

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x)


class AdaPooling(nn.Module):
    """Attention pooling of the query tokens into one vector, padded tokens excluded."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.att = nn.Linear(dims, 1, bias=False)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        logits = self.att(x)[..., 0] + torch.where(mask > 0, 0.0, float("-inf"))  # (B, L)
        return (logits.softmax(-1)[:, :, None] * x).sum(1)  # (B, D)


@dataclass
class RawOutput:
    """Model output before post-processing, for B queries on one video."""

    saliency: Tensor  # (B, T)
    boundary: Tensor | None  # (B, N, 3) [start_sec, end_sec, score] sorted by score; None if highlight-only


class R2Tuning(nn.Module):
    """Side network of R2-Tuning on top of frozen CLIP features (no CLIP weights inside)."""

    def __init__(self, cfg: R2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.adapter = R2Block(cfg)
        self.pyramid = ConvPyramid(cfg.dims, cfg.strides)
        self.pooling = AdaPooling(cfg.dims)
        self.class_head = ConvHead(cfg.dims, 1, cfg.head_kernel)
        self.coord_head = ConvHead(cfg.dims, 2, cfg.head_kernel) if cfg.coord_head else None
        self.coef = nn.Parameter(torch.ones(len(cfg.strides)))

    @torch.inference_mode()
    def prepare_video(self, features: Tensor) -> VideoState:
        """Query-independent work on (K, T, P, C) CLIP features; reuse the result for every query."""
        return self.adapter.prepare_video(features)

    @torch.inference_mode()
    def forward(self, state: VideoState, query: Tensor, query_mask: Tensor, fps: float,
                pool_mask: Tensor | None = None) -> RawOutput:
        """Answer B queries: query (B, K, L, Cq) float, query_mask (B, L) (1 = real token)."""
        query = query.float()
        pool_mask = query_mask if pool_mask is None else pool_mask
        video, q_emb = self.adapter(state, query, query_mask, pool_mask)
        levels, strides, video = self.pyramid(video)
        pooled_query = self.pooling(q_emb, query_mask)  # (B, D)
        scores = torch.cat([self.class_head(x) for x in levels], dim=1)[..., 0].sigmoid()  # (B, Npts)

        t = state.num_frames
        sizes = [x.shape[1] for x in levels]
        per_level = []
        for n, level_scores in zip(sizes, scores.split(sizes, dim=1), strict=True):
            # nearest-repeat upsampling to T, padded with the last value (not interpolation)
            up = level_scores.repeat_interleave(t // n, dim=1)
            per_level.append(torch.cat((up, up[:, -1:].expand(-1, t - up.shape[1])), dim=1))
        saliency = torch.stack(per_level).amax(dim=0)  # (B, T)
        if self.cfg.merge_cls_sal:
            saliency = saliency * F.cosine_similarity(video, pooled_query[:, None], dim=-1)

        boundary = None
        if self.coord_head is not None:
            offsets = torch.cat([self.coord_head(x).exp() * self.coef[i] for i, x in enumerate(levels)], dim=1)
            position = torch.cat([torch.arange(n, device=video.device) * s for n, s in zip(sizes, strides,
                                                                                          strict=True)])
            stride = torch.cat([torch.full((n,), s, device=video.device) for n, s in zip(sizes, strides,
                                                                                        strict=True)])
            bounds = offsets * torch.tensor([-1.0, 1.0], device=video.device)
            bounds = (bounds * stride[:, None] + position[:, None]) / fps  # (B, Npts, 2) seconds
            order = scores.sort(dim=1, descending=True).indices[:, : self.cfg.max_num_moment]
            boundary = torch.cat((bounds, scores[..., None]), dim=-1)
            boundary = boundary.gather(1, order[..., None].expand(-1, -1, 3))
        return RawOutput(saliency=saliency, boundary=boundary)
