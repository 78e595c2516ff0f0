"""Library search for ``r2tuning bench`` (section ``search``): the two-stage search against the exhaustive one.

A generated library of short videos (1,000 of 6-10 clips = 12-20 s at 0.5 fps; ``--quick``: 100) with the tiny
random CLIP + R2 of the fixtures (e2e_tiny; ViT-B/32 widths make the exhaustive reference minutes per query on
a shared 2-core machine). Features are generated, not decoded (as
bench/warm_service.py does for its 40-min video): each video's (K, T, P, C) float16 features come from its own
seed, regenerated whenever a search grounds the video, which stands in for the feature-cache read the worker
does per grounded video (both paths pay it per video they ground). The clip embeddings are computed from the
features once, as the worker does at encode time.

Per query: the exhaustive search (R2 on every video, the reference) and the two-stage search (CLIP text
embedding, NumPy first stage, R2 on the ``candidates`` best videos), the code service/worker/search.py runs
minus the store round trips. Reported: p50 latency of each, their ratio, and recall@10: the share of the
exhaustive top-10 videos (by best moment) that the two-stage top-10 holds, for several candidate counts.

With random weights the R2 adapter's scores have no relation to CLIP similarity, so the first stage cannot
predict them and recall@10 is about candidates / videos; with trained weights both rank by the query's
content. Target rows (stable ids): ``search_recall10`` and ``search_speedup_vs_exhaustive``.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

QUERIES = ["a dog catches a frisbee in the park", "a man cooks pasta in a small kitchen",
           "children play football on the beach", "a red car drives along a mountain road",
           "a woman talks to the camera in her car"]
CANDIDATES = 32  # the service's default (R2_SEARCH_CANDIDATES)


def _features(seed: int, clips: int, k: int, tokens: int, width: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, clips, tokens, width, generator=g).half()  # (K, T, P, C)


def _tiny_registry(folder: Path) -> Path:
    """A registry naming the fixtures' tiny model (as bench/training.py does)."""
    root = Path(os.environ.get("R2_FIXTURES_DIR", Path(__file__).resolve().parents[2] / "shared" / "fixtures"
                               / "reference"))
    listing = json.loads((root / "e2e_tiny" / "cases.json").read_text())
    r2 = root / "e2e_tiny" / listing["checkpoint"]
    path = folder / "tiny.json"
    path.write_text(json.dumps({"models": [dict(name="bench-search-tiny", checkpoint_path=str(r2), clip="tiny",
                                                clip_path=str((r2.parent / listing["clip"]).resolve()),
                                                fps=0.5, unit=2.0)]}))
    return path


def run(device: str, quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one small adapter call per video: on a busy machine more threads only contend
    try:
        return _run(device, quick, log)
    finally:
        torch.set_num_threads(threads)


def _run(device: str, quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    from models import zoo
    from models.engine import Grounder
    from models.search import frame_embeddings
    from service.store.vectors import NumpyIndex

    videos, queries = (100, QUERIES[:2]) if quick else (1000, QUERIES)
    with tempfile.TemporaryDirectory() as folder:
        zoo.load_registry_file(_tiny_registry(Path(folder)), overwrite=True)
        grounder = Grounder.from_spec(zoo.get_model("bench-search-tiny"), device=device, download=False)
    clip = grounder.clip
    shape = dict(k=grounder.k, tokens=clip.num_patches_tokens, width=clip.vision_width)
    lengths = [6 + (i * 7) % 5 for i in range(videos)]  # 6-10 clips: 12-20 s at 0.5 fps
    index = NumpyIndex()
    started = time.perf_counter()
    for i, clips in enumerate(lengths):
        index.add(f"v{i:04d}", frame_embeddings(clip, _features(i, clips, **shape)).numpy())
    log(f"search: {videos} videos indexed in {time.perf_counter() - started:.1f} s")

    return _measure(grounder, index, lengths, shape, queries, log)


def _measure(grounder: Any, index: Any, lengths: list[int], shape: dict[str, int], queries: list[str],
             log: Callable[[str], None]) -> dict[str, Any]:
    from models.search import LibraryVideo, ground_library, text_embedding

    clip, videos, quick = grounder.clip, len(lengths), len(lengths) < 1000

    def grounded(ids: list[str], query: str) -> list[tuple[str, float]]:
        lib = [LibraryVideo(v, _features(int(v[1:]), lengths[int(v[1:])], **shape), lengths[int(v[1:])] * 2.0)
               for v in ids]
        best = [(v, max((m[2] for m in ms), default=-1.0)) for v, ms in ground_library(grounder, lib, query, 10)]
        return sorted(best, key=lambda b: (-b[1], b[0]))

    every = sorted(index.ids())
    exhaustive_s, two_stage_s, recalls = [], [], {}
    counts = [CANDIDATES, 100] if quick else [CANDIDATES, 100, 300]
    for query in queries:
        t0 = time.perf_counter()
        reference = grounded(every, query)
        exhaustive_s.append(time.perf_counter() - t0)
        top10 = {v for v, _ in reference[:10]}
        for n in counts:
            t0 = time.perf_counter()
            q = text_embedding(clip, query).numpy()
            picked = [v for v, _ in index.search(q, n)]
            found = grounded(picked, query)
            if n == CANDIDATES:
                two_stage_s.append(time.perf_counter() - t0)
            recalls.setdefault(n, []).append(len(top10 & {v for v, _ in found[:10]}) / 10)
        log(f"search: {query[:30]!r} exhaustive {exhaustive_s[-1]:.2f} s, two-stage {two_stage_s[-1] * 1000:.0f} ms")
    p50_ex, p50_two = statistics.median(exhaustive_s), statistics.median(two_stage_s)
    return dict(videos=videos, clips_per_video=[min(lengths), max(lengths)], queries=len(queries),
                candidates=CANDIDATES, weights="random (tiny fixture CLIP + R2)", index="numpy",
                exhaustive_p50_s=round(p50_ex, 4), two_stage_p50_s=round(p50_two, 4),
                speedup=round(p50_ex / p50_two, 2),
                recall10=round(float(np.mean(recalls[CANDIDATES])), 3),
                recall10_by_candidates={str(n): round(float(np.mean(r)), 3) for n, r in recalls.items()})


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    s = report.get("search") or {}
    what = (f"{s.get('videos')} videos, {s.get('candidates')} candidates, {s.get('weights')}; by candidates: "
            f"{s.get('recall10_by_candidates')}")
    recall, speedup = s.get("recall10"), s.get("speedup")
    return [
        dict(id="search_recall10", name="two-stage search top-10 videos vs exhaustive top-10 (recall@10)",
             target=">= 0.95", measured=recall, unit="", met=None if recall is None else recall >= 0.95, note=what),
        dict(id="search_speedup_vs_exhaustive", name="exhaustive search p50 / two-stage search p50",
             target=">= 20", measured=speedup, unit="x", met=None if speedup is None else speedup >= 20,
             note=f"p50 {s.get('two_stage_p50_s')} s vs {s.get('exhaustive_p50_s')} s over {s.get('queries')} "
                  "queries; features regenerated per grounded video (stands in for the cache read)"),
    ]
