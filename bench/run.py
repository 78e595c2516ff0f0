"""``r2tuning bench``: the benchmark harness (issue 4).

Measures, on whatever machine it runs, with generated 720p H.264 videos, real decoding and the real ViT-B/32
and R2 architectures with random weights:

1. the cold path per video (isolated decode + CLIP encode + Redis store), split into decode and encode;
2. warm queries on the encoded 150 s video (p50/p95, batches of 1/8/32, 32 singles vs one batch of 32,
   repeated texts through the text cache, the first query after a Redis hit);
3. the naive per-request pipeline of the official script, side by side, and the ratios;
4. reduced precision (bf16 on the CPU, fp16 on CUDA): speed and effect on the outputs;
5. memory: Redis bytes per video-minute, peak RSS of a fresh process encoding the 10 min video
   (and of the naive pipeline on it), GPU peak allocation on CUDA;
6. the service under load: API + worker + Redis on loopback, N concurrent clients;
7. training: official training steps per epoch per hour of video, and the R1@0.5 gain on generated marked
   moments (bench/training.py).

Prints a table and one JSON document (also written to ``--out``). ``--quick``: small videos, few runs (a CI
smoke test; its numbers are not meaningful).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"
DEFAULT_REDIS = os.environ.get("R2_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
SECTIONS = ("cold", "naive", "warm", "precision", "memory", "service", "training", "search")
SCHEMA_VERSION = 1


@dataclass
class Plan:
    """How much to run. ``full()`` is the issue's benchmark, ``quick()`` the smoke test."""

    quick: bool
    short: Any  # VideoSpec: the 30 s video
    medium: Any  # VideoSpec: the 150 s video (warm queries, naive ratio, the service)
    long: Any  # VideoSpec: the 10 min video (one run, in a child process, with its peak RSS)
    cold_runs: int
    naive_runs: int
    warm_queries: int  # single-query latency samples (each for new and for repeated texts)
    batch_reps: int  # repetitions of each batch size
    batch_sizes: tuple[int, ...]  # throughput per batch size
    compare_n: int  # n single requests vs one batch of n
    warmup: bool  # one unmeasured encode first (starts the decoder's forkserver)
    reduced_frames: int  # frames for the fp32 vs reduced precision encode throughput
    effect_queries: int  # queries compared between fp32 and reduced-precision features
    naive_long: bool  # also run the naive pipeline on the long video (in a child, with its RSS)
    clients: int
    requests_per_client: int
    sequential_requests: int  # one-at-a-time requests to measure the API overhead
    long_clips: int  # clips of the long video whose features are stored directly (1200 = 40 min at 0.5 fps)
    long_requests: int
    affinity_videos: int  # videos queried again and again with 2 workers
    affinity_clips: int
    affinity_rounds: int
    notes: list[str] = field(default_factory=list)

    @classmethod
    def full(cls) -> Plan:
        from bench.videos import VideoSpec

        return cls(quick=False, short=VideoSpec(30), medium=VideoSpec(150), long=VideoSpec(600), cold_runs=3,
                   naive_runs=3, warm_queries=60, batch_reps=5, batch_sizes=(1, 8, 32), compare_n=32,
                   warmup=True, reduced_frames=16, effect_queries=16,
                   naive_long=True, clients=32, requests_per_client=8, sequential_requests=40,
                   long_clips=1200, long_requests=20, affinity_videos=8, affinity_clips=75, affinity_rounds=6,
                   notes=["10 min video: one run (cold path and naive pipeline each in a fresh child process, "
                          "which also measures their peak RSS)"])

    @classmethod
    def quick_plan(cls) -> Plan:
        from bench.videos import VideoSpec

        small = dict(width=640, height=360)
        return cls(quick=True, short=VideoSpec(6, **small), medium=VideoSpec(12, **small),
                   long=VideoSpec(12, **small), cold_runs=1, naive_runs=1, warm_queries=8, batch_reps=1,
                   batch_sizes=(1, 8), compare_n=8, warmup=False, reduced_frames=2, effect_queries=4,
                   naive_long=False, clients=8, requests_per_client=2, sequential_requests=5,
                   long_clips=120, long_requests=5, affinity_videos=3, affinity_clips=6, affinity_rounds=3,
                   notes=["--quick: 360p videos of 6 s and 12 s, single runs, batches up to 8, no warm-up "
                          "(the first cold run includes starting the decoder's forkserver); a smoke test, not a "
                          "measurement"])


# ------------------------------------------------------------------------------------------------------ queries

_SUBJECTS = ("a man", "a woman", "two kids", "a dog", "an old couple", "a chef", "a cyclist", "a girl in red")
_VERBS = ("walks along", "talks about", "runs towards", "cooks next to", "waves at", "sits near", "looks at",
          "opens")
_OBJECTS = ("the fridge", "a white car", "the camera", "a wooden boat", "the tall tree", "a blue door",
            "the crowd", "a birthday cake")
_PLACES = ("on the beach", "in the kitchen", "at night", "in the rain", "in a busy street", "in the park",
           "inside a shop", "near the river")


class Queries:
    """Deterministic, realistic query texts; ``new()`` never repeats within one run (4096 combinations)."""

    def __init__(self, salt: int = 0) -> None:
        import itertools
        import random

        combos = list(itertools.product(_SUBJECTS, _VERBS, _OBJECTS, _PLACES))
        random.Random(salt).shuffle(combos)
        self._iter = iter(combos)

    def new(self, n: int = 1) -> list[str]:
        return [" ".join(next(self._iter)) for _ in range(n)]


# ------------------------------------------------------------------------------------------------------ machine


def machine_info(device: str) -> dict[str, Any]:
    import torch

    model, flags = "unknown", set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    mem_total = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_total = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1]) / (1 << 20)
    info: dict[str, Any] = dict(
        cpu_model=model, cpu_count=os.cpu_count(),
        cpu_affinity=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        cpu_native_bf16=bool(flags & {"avx512_bf16", "amx_bf16"}),
        memory_gib=mem_total, torch=torch.__version__, torch_threads=torch.get_num_threads(),
        python=platform.python_version(), platform=platform.platform(), device=device,
        gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        cuda=torch.version.cuda if torch.cuda.is_available() else None,
        loadavg_start=list(os.getloadavg()),
    )
    with contextlib.suppress(ImportError):
        import av
        import decord
        import open_clip

        info.update(decord=decord.__version__, pyav=av.__version__, open_clip=open_clip.__version__)
    return info


# ------------------------------------------------------------------------------------------------------ the run


class Bench:
    def __init__(self, plan: Plan, args: argparse.Namespace) -> None:
        self.plan, self.args = plan, args
        self.device = args.device
        self.report: dict[str, Any] = {}
        self.errors: list[dict[str, str]] = []
        self.queries = Queries()
        self.prefix = f"r2bench-{uuid.uuid4().hex[:8]}"
        self.redis_url: str | None = args.redis_url
        self.features: dict[str, Any] = {}  # label -> (info, fp16 features) from the cold runs
        self.tmp = Path(tempfile.mkdtemp(prefix="r2bench-"))

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[dict[str, Any]]:
        out: dict[str, Any] = {}
        self.report[name] = out
        if name not in self.args.sections:
            out["skipped"] = "not selected (--sections)"
            yield out
            return
        self.log(f"--- {name}")
        out["loadavg_at_start"] = os.getloadavg()[0]  # other work on the machine skews timings: say so
        started = time.perf_counter()
        try:
            yield out
        except Exception as err:
            self.log(f"section {name} failed: {err!r}")
            out["error"] = f"{type(err).__name__}: {err}"
            self.errors.append(dict(section=name, error=out["error"], traceback=traceback.format_exc()[-4000:]))
        out["section_wall_s"] = round(time.perf_counter() - started, 2)

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    # -------------------------------------------------------------------------------------------- setup

    def setup(self) -> None:
        import torch

        from bench import fixtures
        from bench.videos import ensure_video
        from models.allocator import keep_freed_blocks

        if self.args.threads:
            torch.set_num_threads(self.args.threads)
        self.report["machine"] = machine_info(self.device)
        plan = self.plan
        self.videos = {}
        cache = Path(self.args.cache_dir) if self.args.cache_dir else None
        for role in ("short", "medium", "long"):
            spec = getattr(plan, role)
            self.videos[role] = ensure_video(spec, cache, log=self.log)
        self.report["videos"] = {
            role: dict(asdict(getattr(plan, role)), label=getattr(plan, role).label, file=path.name,
                       size_mb=round(path.stat().st_size / 1e6, 2),
                       bitrate_mbps=round(path.stat().st_size * 8 / 1e6 / getattr(plan, role).seconds, 2))
            for role, path in self.videos.items()}
        started = time.perf_counter()
        self.clip = fixtures.random_clip(self.device)
        self.model = fixtures.random_r2(self.clip)
        self.grounder = fixtures.build_grounder(self.device, "fp32", clip=self.clip, model=self.model)
        # The engine measured here runs under the worker's malloc settings, so that the ratios compare like with like.
        self.report["machine"]["malloc_tuned"] = keep_freed_blocks()
        self.reduced = "fp16" if self.device.startswith("cuda") else "bf16"
        self.report["model"] = dict(clip="ViT-B-32 (random init)", r2="R2Config(video_width=768, query_width=512)",
                                    k=self.grounder.k, fps=self.grounder.spec.fps, unit=self.grounder.spec.unit,
                                    nms=f"{self.grounder.spec.nms_type} {self.grounder.spec.nms_thres}",
                                    build_s=round(time.perf_counter() - started, 2))
        if self.redis_url:
            import redis

            try:
                client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=2)
                client.ping()
                client.close()
            except redis.RedisError as err:
                self.log(f"Redis at {self.redis_url} is not reachable ({err}): the store step and the service "
                         f"section are skipped")
                self.report["redis_unavailable"] = str(err)
                self.redis_url = None
        if self.plan.warmup:  # starts the decoder's forkserver (it imports torch), warms the allocator
            self.log("warm-up encode")
            self.grounder.encode_file(self.videos["short"], timeout_s=1800)

    def cleanup(self) -> None:
        import shutil

        if self.redis_url:
            import redis

            client = redis.Redis.from_url(self.redis_url)
            with contextlib.suppress(redis.RedisError):
                keys = list(client.scan_iter(match=f"{self.prefix}:*", count=1000))
                for start in range(0, len(keys), 500):
                    client.delete(*keys[start:start + 500])
            client.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -------------------------------------------------------------------------------------------- 1. cold

    def cold(self, out: dict[str, Any]) -> None:
        """Cold runs, each followed by a naive run on the same video when the naive section is selected too:
        interleaved, so a change of load on the machine hits both sides of the ratio alike."""
        from bench.naive import run_naive
        from bench.store import store_features
        from bench.timing import timed_encode_file

        interleave = "naive" in self.args.sections
        self.naive_query = self.queries.new()[0]
        self.naive_runs: dict[str, list[dict]] = {}
        for role in ("short", "medium"):
            path = self.videos[role]
            runs = []
            for r in range(max(self.plan.cold_runs, self.plan.naive_runs if interleave else 0)):
                if interleave and r < self.plan.naive_runs:
                    result = run_naive(self.grounder, path, self.naive_query)
                    self.naive_runs.setdefault(role, []).append(dict(result.seconds, frames=result.frames))
                    self.log(f"naive {role} run {r + 1}: {result.seconds['total']:.2f} s")
                if r >= self.plan.cold_runs:
                    continue
                timing, features, info = timed_encode_file(self.grounder, path)
                if self.redis_url:
                    timing.update(store_features(self.redis_url, self.prefix, f"{role}-{r}", self.grounder,
                                                 features, info))
                else:
                    timing.update(store_s=0.0)
                timing["total_with_store_s"] = timing["total_s"] + timing["store_s"]
                runs.append(timing)
                self.log(f"cold {role} run {r + 1}: {timing['total_with_store_s']:.2f} s "
                         f"(encode {timing['encode_s']:.2f} s)")
            self.features[role] = (info, features)
            out[role] = self._cold_summary(runs, info)
        out["long"] = dict(note="measured in the memory section (fresh child process, one run)")

    def _cold_summary(self, runs: list[dict], info: Any) -> dict[str, Any]:
        from bench.timing import median_of

        total = median_of(runs, "total_with_store_s")
        frames = runs[0]["frames"]
        return dict(runs=len(runs), video_seconds=round(info.duration, 2), frames=frames,
                    total_s=total, decode_wait_s=median_of(runs, "decode_wait_s"),
                    encode_s=median_of(runs, "encode_s"), store_s=median_of(runs, "store_s"),
                    frames_per_s=frames / total, encode_frames_per_s=frames / median_of(runs, "encode_s"),
                    realtime_factor=info.duration / total,
                    payload_bytes=runs[-1].get("payload_bytes"), redis_bytes=runs[-1].get("redis_bytes"),
                    all_runs=runs)

    # -------------------------------------------------------------------------------------------- 3. naive

    def naive(self, out: dict[str, Any]) -> None:
        from bench.naive import run_naive
        from bench.timing import median_of

        done = getattr(self, "naive_runs", {})  # interleaved with the cold runs
        query = getattr(self, "naive_query", None) or self.queries.new()[0]
        out["interleaved_with_cold_runs"] = bool(done)
        for role in ("short", "medium"):
            runs = done.get(role, [])
            while len(runs) < self.plan.naive_runs:
                result = run_naive(self.grounder, self.videos[role], query)
                runs.append(dict(result.seconds, frames=result.frames))
                self.log(f"naive {role} run {len(runs)}: {result.seconds['total']:.2f} s")
            out[role] = dict(runs=len(runs), frames=runs[0]["frames"], query=query,
                             **{f"{k}_s": median_of(runs, k) for k in ("decode", "encode_video", "text", "adapter",
                                                                         "total")},
                             all_runs=runs)
            out[role]["decode_encode_s"] = out[role]["decode_s"] + out[role]["encode_video_s"]
        # What the script also pays on every run: loading CLIP and the checkpoint from disk.
        try:
            out["model_load_s"] = self._model_load_seconds()
        except Exception as err:  # informative only
            out["model_load_s"] = None
            out["model_load_error"] = repr(err)

    def _model_load_seconds(self) -> float:
        from models.checkpoint import load_r2_checkpoint
        from models.clip import load_clip

        folder = self.model_files()
        started = time.perf_counter()
        load_clip(str(folder / "clip-vit-b-32-random.pt"))
        load_r2_checkpoint(folder / "r2-random.pth")
        return time.perf_counter() - started

    def model_files(self) -> Path:
        from bench.fixtures import write_model_files
        from bench.videos import cache_dir

        folder = (Path(self.args.cache_dir) if self.args.cache_dir else cache_dir()) / "models-seed0"
        write_model_files(folder, self.clip, self.model)
        return folder

    # -------------------------------------------------------------------------------------------- 2. warm

    def warm(self, out: dict[str, Any]) -> None:
        import torch

        from bench.timing import summary_ms

        g = self.grounder
        if "medium" not in self.features:  # cold section not run: encode once here
            _, features, info = self._encode_once("medium")
        else:
            info, features = self.features["medium"]
        key = "warm-medium"
        out["video"] = dict(seconds=round(info.duration, 2), clips=int(features.shape[1]))

        # First query after a Redis hit: fetch the bytes, rebuild the tensor, build the video state, answer.
        if self.redis_url:
            out["first_query_after_redis_hit"] = self._first_query_after_hit(features, info)

        g.ground(features, self.queries.new(2), video_key=key, duration=info.duration)  # video state in the LRU
        hits0, enc0 = g.stats["text_cache_hits"], g.stats["text_encodes"]
        singles = []
        for q in self.queries.new(self.plan.warm_queries):
            t = time.perf_counter()
            g.ground(features, [q], video_key=key, duration=info.duration)
            self.sync()
            singles.append(time.perf_counter() - t)
        out["single_new_text"] = summary_ms(singles)
        prompts = self.queries.new(8)  # a few highlight prompts asked again and again (8 distinct texts)
        g.ground(features, prompts, video_key=key, duration=info.duration)
        repeated = []
        for i in range(self.plan.warm_queries):
            t = time.perf_counter()
            g.ground(features, [prompts[i % len(prompts)]], video_key=key, duration=info.duration)
            self.sync()
            repeated.append(time.perf_counter() - t)
        out["single_repeated_text"] = summary_ms(repeated)
        out["text_cache"] = dict(hits=g.stats["text_cache_hits"] - hits0, encodes=g.stats["text_encodes"] - enc0,
                                 speedup_p50=out["single_new_text"]["p50_ms"] / out["single_repeated_text"]["p50_ms"])

        # Where the time of one new-text query goes (text tower vs adapter + post-processing).
        texts = self.queries.new(self.plan.warm_queries)
        t_text = []
        for q in texts[: max(3, len(texts) // 2)]:
            t = time.perf_counter()
            g._text_features([q], False)
            t_text.append(time.perf_counter() - t)
        out["text_tower_one_query_ms"] = statistics.median(t_text) * 1000

        # Throughput per batch size, new texts (text tower + adapter) and repeated texts (adapter only).
        batches: dict[str, Any] = {}
        for size in self.plan.batch_sizes:
            for kind in ("new_text", "repeated_text"):
                times = []
                for _ in range(self.plan.batch_reps):
                    qs = self.queries.new(size) if kind == "new_text" else (prompts * (size // 8 + 1))[:size]
                    t = time.perf_counter()
                    g.ground(features, qs, video_key=key, duration=info.duration)
                    self.sync()
                    times.append(time.perf_counter() - t)
                med = statistics.median(times)
                batches[f"{size}_{kind}"] = dict(batch=size, texts=kind, median_ms=med * 1000, queries_per_s=size / med)
        out["batches"] = batches

        # n single requests vs one batch of n (new texts both ways; n = 32 except in --quick).
        n = self.plan.compare_n
        singles_s, batch_s = [], []
        for _ in range(max(1, self.plan.batch_reps // 2 + 1)):
            qs = self.queries.new(n)
            t = time.perf_counter()
            for q in qs:
                g.ground(features, [q], video_key=key, duration=info.duration)
            self.sync()
            singles_s.append(time.perf_counter() - t)
            qs = self.queries.new(n)
            t = time.perf_counter()
            g.ground(features, qs, video_key=key, duration=info.duration)
            self.sync()
            batch_s.append(time.perf_counter() - t)
        s, b = statistics.median(singles_s), statistics.median(batch_s)
        out["singles_vs_batch"] = dict(n=n, singles_s=s, batch_s=b, singles_qps=n / s, batch_qps=n / b,
                                       throughput_ratio=s / b, runs=len(singles_s))

        # The engine's max_batch (queries per model call): one request of n new texts cut into chunks of each size.
        sweep = {}
        default_max_batch = g.max_batch
        try:
            for size in sorted({max(1, n // 4), max(1, n // 2), n}):
                g.max_batch = size
                qs = self.queries.new(n)
                t = time.perf_counter()
                g.ground(features, qs, video_key=key, duration=info.duration)
                self.sync()
                sweep[str(size)] = n / (time.perf_counter() - t)
        finally:
            g.max_batch = default_max_batch
        out["max_batch_queries_per_s"] = dict(n=n, default=default_max_batch, by_max_batch=sweep)
        out["stats"] = dict(g.stats)
        out["torch_threads"] = torch.get_num_threads()

    def _encode_once(self, role: str) -> tuple[dict, Any, Any]:
        from bench.timing import timed_encode_file

        timing, features, info = timed_encode_file(self.grounder, self.videos[role])
        self.features[role] = (info, features)
        return timing, features, info

    def _first_query_after_hit(self, features: Any, info: Any) -> dict[str, Any]:
        import redis
        import torch

        from bench.store import feature_cache, to_cached

        client = redis.Redis.from_url(self.redis_url, socket_timeout=60)
        cache = feature_cache(client, self.prefix)
        fid = self.grounder.feature_id
        cache.put("warm-hit", fid, to_cached(features, info))
        fetch, first = [], []
        for i in range(3):
            t0 = time.perf_counter()
            cached = cache.get("warm-hit", fid)
            tensor = torch.frombuffer(bytearray(cached.data), dtype=torch.float16).reshape(cached.shape)
            t1 = time.perf_counter()
            self.grounder.ground(tensor, self.queries.new(), video_key=f"hit-{i}", duration=info.duration)
            self.sync()
            t2 = time.perf_counter()
            self.grounder.forget_video(f"hit-{i}")
            fetch.append(t1 - t0)
            first.append(t2 - t0)
        client.close()
        return dict(redis_fetch_ms=statistics.median(fetch) * 1000, total_ms=statistics.median(first) * 1000,
                    payload_mb=len(cached.data) / 1e6, **{"runs": len(first)})

    # -------------------------------------------------------------------------------------------- 4. precision

    def precision(self, out: dict[str, Any]) -> None:
        import torch

        from bench import fixtures
        from bench.timing import timed_encode_file
        from models.video import iter_frames

        reduced = self.reduced
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[reduced]
        out["reduced"] = reduced
        out["cpu_native_bf16"] = self.report["machine"]["cpu_native_bf16"]
        # Encode throughput on the same decoded frames.
        frames = next(iter_frames(self.videos["short"], self.grounder.frame_spec,
                                  chunk_size=self.plan.reduced_frames))
        fps = {}
        for name, dt in (("fp32", torch.float32), (reduced, dtype)):
            self.clip.encode_frames(frames[:2], last_k=4, dtype=dt)  # warm-up (autocast caches, kernels)
            t = time.perf_counter()
            self.clip.encode_frames(frames, last_k=4, dtype=dt)
            self.sync()
            fps[name] = frames.shape[0] / (time.perf_counter() - t)
        out["encode_frames_per_s"] = fps
        out["encode_speedup"] = fps[reduced] / fps["fp32"]

        # Cold path of the 30 s video in reduced precision (one run: it is slow on CPUs without bf16 units).
        low = fixtures.build_grounder(self.device, reduced, clip=self.clip, model=self.model)
        timing, low_features, info = timed_encode_file(low, self.videos["short"])
        out["cold_short"] = timing
        if "short" in self.features:
            ref_info, ref_features = self.features["short"]
        else:
            _, ref_features, ref_info = self._encode_once("short")
        out["effect"] = self._effect(ref_features, low_features, info.duration)

    def _effect(self, ref: Any, low: Any, duration: float) -> dict[str, Any]:
        """Compare answers on fp32-encoded vs reduced-precision-encoded features for the same queries."""
        qs = self.queries.new(self.plan.effect_queries)
        a = self.grounder.ground(ref, qs, duration=duration, top_k=5)
        b = self.grounder.ground(low, qs, duration=duration, top_k=5)
        sal = max(max(abs(x - y) for x, y in zip(ra.saliency, rb.saliency, strict=True))
                  for ra, rb in zip(a, b, strict=True))
        sal_range = max(max(r.saliency) - min(r.saliency) for r in a)
        top1, top5 = [], []
        for ra, rb in zip(a, b, strict=True):
            if not ra.moments or not rb.moments:
                continue
            top1.append(temporal_iou(ra.moments[0][:2], rb.moments[0][:2]))
            # each of fp32's top 5 matched with its best counterpart among the reduced top 5
            top5.extend(max(temporal_iou(m[:2], n[:2]) for n in rb.moments) for m in ra.moments)
        feat = (ref.float() - low.float()).abs()
        return dict(queries=len(qs), max_saliency_diff=sal, saliency_range=sal_range,
                    top1_iou_mean=statistics.fmean(top1) if top1 else math.nan,
                    top1_iou_min=min(top1, default=math.nan),
                    top5_best_match_iou_mean=statistics.fmean(top5) if top5 else math.nan,
                    top1_identical=sum(1 for v in top1 if v > 0.999), feature_max_abs_diff=float(feat.max()),
                    feature_mean_abs_diff=float(feat.mean()))

    # -------------------------------------------------------------------------------------------- 5. memory

    def memory(self, out: dict[str, Any]) -> None:
        from bench import memory
        from bench.store import ALT_CHUNK_BYTES, CHUNK_BYTES, store_features

        # Redis bytes per minute of video, from the cold runs (or the long child below).
        k, p, c = self.grounder.k, self.clip.num_patches_tokens, self.clip.vision_width
        raw_per_min = k * int(60 * self.grounder.spec.fps) * p * c * 2
        out["raw_float16_bytes_per_min"] = raw_per_min
        per_min = {}
        cold = self.report.get("cold", {})
        for role in ("short", "medium"):
            entry = cold.get(role, {})
            if entry.get("redis_bytes"):
                minutes = entry["video_seconds"] / 60
                per_min[role] = dict(redis_bytes_per_min=entry["redis_bytes"] / minutes,
                                     payload_bytes_per_min=entry["payload_bytes"] / minutes)
        out["cached_per_min"] = per_min
        out["chunk_bytes"] = CHUNK_BYTES
        if self.redis_url:
            alt: dict[str, Any] = {}
            for size in ALT_CHUNK_BYTES:
                rows = {}
                for role in ("short", "medium"):
                    if role not in self.features:
                        continue
                    info, features = self.features[role]
                    got = store_features(self.redis_url, self.prefix, f"alt-{size}-{role}", self.grounder,
                                         features, info, chunk_bytes=size)
                    rows[role] = got["redis_bytes"] / (info.duration / 60)
                if rows:
                    alt[str(size)] = dict(chunk_bytes=size, redis_bytes_per_min=rows, worst=max(rows.values()))
            out["alt_chunks"] = alt
        # Peak RSS of a fresh process encoding the long video (and the cold timing of that video).
        self.log(f"encoding the {self.plan.long.label} video in a child process (peak RSS)")
        threads = self.args.threads
        models = self.model_files()
        engine = memory.measure(self.videos["long"], "engine", models, device=self.device,
                                warmup=None if self.plan.quick else self.videos["short"],
                                redis_url=self.redis_url, prefix=self.prefix, threads=threads)
        out["engine_long"] = engine
        if engine.get("redis_bytes"):
            minutes = engine["video_seconds"] / 60
            per_min["long"] = dict(redis_bytes_per_min=engine["redis_bytes"] / minutes,
                                   payload_bytes_per_min=engine["payload_bytes"] / minutes)
        if self.plan.naive_long:
            self.log(f"naive pipeline on the {self.plan.long.label} video in a child process (peak RSS)")
            out["naive_long"] = memory.measure(self.videos["long"], "naive", models, device=self.device,
                                               threads=threads)
        if self.device.startswith("cuda"):
            out["gpu_peak_allocated_mb"] = engine.get("gpu_peak_allocated_mb")

    # -------------------------------------------------------------------------------------------- 6. service

    def service(self, out: dict[str, Any]) -> None:
        from bench.load import run_service_bench

        if not self.redis_url:
            out["skipped"] = "no Redis"
            return
        from bench import warm_service

        registry = self.model_files() / "models.json"
        out.update(run_service_bench(
            video=self.videos["medium"], registry=registry, redis_url=self.redis_url, prefix=self.prefix,
            folder=self.tmp, clients=self.plan.clients, requests_per_client=self.plan.requests_per_client,
            sequential=self.plan.sequential_requests, queries=self.queries, device=self.device, log=self.log))
        plan = self.plan
        self.log(f"service: a {plan.long_clips}-clip video, features stored directly")
        out["long_video"] = warm_service.long_video(
            registry=registry, redis_url=self.redis_url, prefix=f"{self.prefix}-long", folder=self.tmp,
            device=self.device, clips=plan.long_clips, queries=self.queries, requests=plan.long_requests,
            engine_ground=self._engine_ground, log=self.log)
        self.log(f"service: 2 workers, {plan.affinity_videos} videos x {plan.affinity_rounds} rounds")
        out["affinity"] = warm_service.affinity(
            registry=registry, redis_url=self.redis_url, prefix=f"{self.prefix}-aff", folder=self.tmp,
            device=self.device, videos=plan.affinity_videos, clips=plan.affinity_clips,
            rounds=plan.affinity_rounds, queries=self.queries, log=self.log)
        out["models_command_s"] = _models_command_seconds()

    def _engine_ground(self, features: Any, queries: list[str]) -> float:
        """The engine's own answer time on a video whose adapter state it holds (what a warm worker does)."""
        key = f"engine-{features.shape[1]}"
        if not self.grounder.holds(key):
            self.grounder.ground(features, self.queries.new(1), video_key=key)
        started = time.perf_counter()
        self.grounder.ground(features, queries, video_key=key, duration=features.shape[1] / self.grounder.spec.fps)
        self.sync()
        return time.perf_counter() - started

    # -------------------------------------------------------------------------------------------- 7. training

    def training(self, out: dict[str, Any]) -> None:
        from bench import training

        out.update(training.run(self.device, self.plan.quick, self.log))

    # -------------------------------------------------------------------------------------------- 8. search

    def search(self, out: dict[str, Any]) -> None:
        from bench import search

        out.update(search.run(self.device, self.plan.quick, self.log))

    # -------------------------------------------------------------------------------------------- all

    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        self.report.update(schema=SCHEMA_VERSION, quick=self.plan.quick, command="r2tuning bench " +
                           " ".join(self.args.argv), plan=_plan_dict(self.plan), started_at=time.strftime("%FT%T%z"))
        try:
            self.setup()
            for name in SECTIONS:
                with self.section(name) as out:
                    if "skipped" not in out:
                        getattr(self, name)(out)
        finally:
            self.cleanup()
        self.report["ratios"] = ratios(self.report)
        self.report["targets"] = targets(self.report)
        self.report["machine"]["loadavg_end"] = list(os.getloadavg())
        self.report["wall_s"] = round(time.perf_counter() - started, 1)
        self.report["errors"] = self.errors
        return self.report


def _models_command_seconds() -> float:
    """Wall time of a fresh `r2tuning models` (it must not import torch: under 2 s)."""
    import subprocess

    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "r2tuning", "models"], check=True, capture_output=True, timeout=60)
    return time.perf_counter() - started


def temporal_iou(a: tuple[float, float] | list[float], b: tuple[float, float] | list[float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else float(a[0] == b[0] and a[1] == b[1])


def _plan_dict(plan: Plan) -> dict[str, Any]:
    d = asdict(plan)
    for role in ("short", "medium", "long"):
        d[role] = getattr(plan, role).label
    return d


# ------------------------------------------------------------------------------------------------------ verdicts


def _get(report: dict, *path: str, default: Any = None) -> Any:
    node: Any = report
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def _div(a: Any, b: Any) -> float | None:
    if a is None or b is None or not b or (isinstance(a, float) and math.isnan(a)):
        return None
    return a / b


def ratios(report: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for role in ("short", "medium"):
        naive_total = _get(report, "naive", role, "total_s")
        naive_de = _get(report, "naive", role, "decode_encode_s")
        cold = _get(report, "cold", role, "total_s")
        out[role] = dict(naive_over_cold=_div(naive_de, cold), naive_total_over_cold=_div(naive_total, cold))
    warm_new = _get(report, "warm", "single_new_text", "p50_ms")
    warm_rep = _get(report, "warm", "single_repeated_text", "p50_ms")
    naive_medium = _get(report, "naive", "medium", "total_s")
    out["naive_over_warm_new_text"] = _div(naive_medium, warm_new and warm_new / 1000)
    out["naive_over_warm_repeated_text"] = _div(naive_medium, warm_rep and warm_rep / 1000)
    out["warm_over_naive"] = _div(warm_new and warm_new / 1000, naive_medium)
    out["cold_over_naive"] = _div(_get(report, "cold", "medium", "total_s"), _get(report, "naive", "medium",
                                                                                     "decode_encode_s"))
    low = _get(report, "precision", "cold_short", "total_s")
    out["naive_over_cold_reduced_short"] = _div(_get(report, "naive", "short", "decode_encode_s"), low)
    long_engine = _get(report, "memory", "engine_long", "total_s")
    long_naive = _get(report, "memory", "naive_long")
    if long_engine and long_naive:
        out["long"] = dict(naive_over_cold=_div(long_naive["decode"] + long_naive["encode_video"], long_engine))
    http_p50 = _get(report, "service", "overhead", "http_p50_ms")
    out["http_over_model"] = _div(http_p50, _get(report, "service", "overhead", "model_p50_ms"))
    out["naive_over_http"] = _div(naive_medium, http_p50 and http_p50 / 1000)
    return out


def targets(report: dict) -> list[dict[str, Any]]:
    """Every target with a stable ``id`` (what dashboards and issues refer to), its goal and the measurement."""
    r = report.get("ratios") or ratios(report)
    rows: list[dict[str, Any]] = []
    medium = _get(report, "plan", "medium")

    def add(id: str, name: str, target: str, value: Any, met: bool | None, unit: str = "", note: str = "") -> None:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            met = None
        rows.append(dict(id=id, name=name, target=target, measured=value, unit=unit,
                         met=None if met is None else bool(met), note=note))

    # The warm path through the service (issue 7).
    v = r.get("http_over_model")
    add("http_over_model_150s", f"HTTP p50 / worker model-call p50, one warm query ({medium})", "<= 1.15", v,
        v is not None and v <= 1.15, "x", "new texts, API + 1 worker + Redis, sequential requests")
    v = _get(report, "service", "long_video", "http_over_engine")
    clips = _get(report, "service", "long_video", "clips")
    add("http_over_engine_40min", f"HTTP p50 / engine ground() p50, one warm query ({clips} clips)", "<= 1.5", v,
        v is not None and v <= 1.5, "x", "features generated and stored directly; 1200 clips = 40 min in the full run")
    v = r.get("naive_over_http")
    add("naive_over_http_150s", f"naive official-flow pipeline / warm HTTP p50 ({medium})", ">= 300", v,
        v is not None and v >= 300, "x", "naive: decode + CLIP + text + adapter per request, models preloaded")
    v = _get(report, "warm", "singles_vs_batch", "throughput_ratio")
    n = _get(report, "warm", "singles_vs_batch", "n")
    add("batch32_speedup", f"one batch of {n} new texts vs {n} single queries", ">= 2.0", v, v is not None and v >= 2,
        "x", "throughput ratio; 32 in the full run")
    v = _get(report, "service", "affinity", "hit_rate")
    aff = _get(report, "service", "affinity") or {}
    add("affinity_hit_rate_2workers", "warm queries answered by the worker holding the video (2 workers)",
        ">= 0.9 (repeated videos)", v, v is not None and v >= 0.9, "",
        f"{aff.get('videos')} videos x {aff.get('rounds')} rounds; feature reads from Redis: first round "
        f"{aff.get('feature_reads_first_round')}, repeated {aff.get('feature_reads_repeated')}")
    v = _get(report, "service", "models_command_s")
    add("models_command_s", "`r2tuning models` in a fresh process", "< 2 s", v, v is not None and v < 2, "s",
        "imports neither torch nor open_clip")
    v = _get(report, "service", "overhead", "p50_ms")
    add("api_overhead_p50_ms", "API overhead p50 (HTTP + Redis hand-off)", "< 10 ms", v, v is not None and v < 10,
        "ms", "sequential requests: HTTP latency - worker pipeline time")
    errs = _get(report, "service", "load", "errors")
    clients = _get(report, "service", "load", "clients")
    add("service_errors_32_clients", f"service errors at {clients} concurrent clients", "0", errs,
        errs == 0 and clients is not None and clients >= 32, "", "" if clients is None or clients >= 32
        else "fewer than 32 clients (--quick)")

    # The engine (issue 4).
    v = r.get("naive_over_warm_new_text")
    add("naive_over_engine_150s", f"warm engine query vs naive ({medium})", ">= 300", v, v is not None and v >= 300,
        "x", "naive total / engine ground() p50, new query text, no HTTP")
    v = _get(report, "warm", "single_new_text", "p50_ms")
    add("warm_p50_ms", "warm engine query p50 (one query, new text)", "< 50 ms", v, v is not None and v < 50, "ms")
    v = _get(report, "warm", "single_repeated_text", "p50_ms")
    hits = _get(report, "warm", "text_cache", "hits")
    add("text_cache", "repeated query texts hit the text cache", "cache hits, faster", v,
        bool(hits) and v is not None and v < (_get(report, "warm", "single_new_text", "p50_ms") or 0), "ms",
        f"p50 with a cached text; {hits} hits")
    v = _get(r, "medium", "naive_over_cold")
    add("cold_fp32_speedup", f"cold path fp32 vs naive decode+encode ({medium})", ">= 1.2", v,
        v is not None and v >= 1.2, "x", "exact official frame indices; cold includes the Redis store")
    v = r.get("naive_over_cold_reduced_short")
    add("cold_reduced_speedup",
        f"cold path {_get(report, 'precision', 'reduced', default='bf16')} vs naive decode+encode "
        f"({_get(report, 'plan', 'short')})", ">= 1.8", v, v is not None and v >= 1.8, "x",
        "" if _get(report, "machine", "cpu_native_bf16") or _get(report, "machine", "gpu")
        else "this CPU has no native bf16 (no AVX512-BF16/AMX): bf16 runs emulated")
    v = _get(report, "precision", "effect", "max_saliency_diff")
    iou = _get(report, "precision", "effect", "top1_iou_mean")
    add("reduced_precision_effect", "reduced-precision effect on outputs", "report (negligible to be default)", v,
        None, "", f"max saliency diff; mean top-1 IoU {iou if iou is None else round(iou, 3)}")
    eng = _get(report, "memory", "engine_long") or {}
    peak = eng.get("process_peak_mb")
    add("peak_rss_long_mb", f"worker peak RSS encoding the {_get(report, 'plan', 'long')} video", "< 2048 MB", peak,
        peak is not None and peak < 2048, "MB",
        f"worker process while encoding; decoder child {_round(eng.get('decoder_peak_mb'))} MB; whole tree "
        f"{_round(eng.get('tree_pss_peak_mb'))} MB PSS; naive pipeline "
        f"{_round(_get(report, 'memory', 'naive_long', 'process_peak_mb'))} MB")
    per_min = _get(report, "memory", "cached_per_min") or {}
    worst = max((e["redis_bytes_per_min"] for e in per_min.values()), default=None)
    raw = _get(report, "memory", "raw_float16_bytes_per_min")
    alt = ", ".join(f"{int(k) / 1024:g} KiB: {v['worst'] / 1e6:.2f}" for k, v in
                    (_get(report, "memory", "alt_chunks") or {}).items())
    add("cached_bytes_per_min", "cached bytes per video-minute (Redis)",
        f"<= raw float16 ({_round(raw and raw / 1e6, 2)} MB/min)", worst and worst / 1e6,
        worst is not None and raw is not None and worst <= raw * 1.01, "MB/min",
        f"Redis MEMORY USAGE of header + chunks ({_get(report, 'memory', 'chunk_bytes', default=0) / 1024:g} KiB), "
        f"worst video, 1% allowance; other chunk sizes (MB/min): {alt or '-'}")
    from bench import training

    rows.extend(training.targets(report))
    from bench import search

    rows.extend(search.targets(report))
    return rows


def _round(v: Any, nd: int = 1) -> Any:
    return round(v, nd) if isinstance(v, int | float) and not (isinstance(v, float) and math.isnan(v)) else v


# ------------------------------------------------------------------------------------------------------ output


def _fmt(v: Any, nd: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:.{nd}f}"
    return str(v)


def _table(head: list[str], rows: list[list[Any]]) -> str:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *cells, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def render(report: dict) -> str:
    m = report.get("machine", {})
    parts = [f"R2-Tuning benchmark ({'quick smoke test' if report.get('quick') else 'full'}) - "
             f"{m.get('cpu_model')} x{m.get('cpu_count')}, GPU: {m.get('gpu') or 'none'}, torch {m.get('torch')} "
             f"({m.get('torch_threads')} threads), load avg at start {_fmt((m.get('loadavg_start') or [None])[0])}"]
    cold, naive, warm = report.get("cold", {}), report.get("naive", {}), report.get("warm", {})
    videos = report.get("videos", {})
    rows = []
    for role in ("short", "medium"):
        c, n = cold.get(role, {}), naive.get(role, {})
        rows.append([videos.get(role, {}).get("label", role), c.get("runs"), c.get("total_s"), c.get("decode_wait_s"),
                     c.get("encode_s"), c.get("store_s"), c.get("frames_per_s"), n.get("decode_s"),
                     n.get("encode_video_s"), n.get("total_s"), _get(report, "ratios", role, "naive_over_cold")])
    eng, nl = _get(report, "memory", "engine_long") or {}, _get(report, "memory", "naive_long") or {}
    if eng:
        rows.append([videos.get("long", {}).get("label", "long"), 1, eng.get("total_s", 0) + eng.get("store_s", 0),
                     eng.get("decode_wait_s"), eng.get("encode_s"), eng.get("store_s"), eng.get("frames_per_s"),
                     nl.get("decode"), nl.get("encode_video"), nl.get("total"), _get(report, "ratios", "long",
                                                                                      "naive_over_cold")])
    parts.append("\nCold path (engine: isolated decode overlapped with encode, + Redis store) vs naive, seconds\n" +
                 _table(["video", "runs", "cold", "dec.wait", "encode", "store", "frames/s", "naive dec",
                         "naive enc", "naive all", "naive(d+e)/cold"], rows))
    if warm and "single_new_text" in warm:
        rows = [["one query, new text", warm["single_new_text"]["p50_ms"], warm["single_new_text"]["p95_ms"]],
                ["one query, repeated text", warm["single_repeated_text"]["p50_ms"],
                 warm["single_repeated_text"]["p95_ms"]]]
        hit = warm.get("first_query_after_redis_hit")
        if hit:
            rows.append(["first query after Redis hit", hit["total_ms"], None])
        parts.append("\nWarm queries on the encoded " + f"{warm['video']['seconds']:g} s video, ms\n" +
                     _table(["case", "p50", "p95"], rows))
        rows = [[b["batch"], b["texts"], b["median_ms"], b["queries_per_s"]] for b in warm["batches"].values()]
        sv = warm["singles_vs_batch"]
        rows.append([f"{sv['n']} singles", "new_text", sv["singles_s"] * 1000, sv["singles_qps"]])
        rows.append([f"1 x {sv['n']}", "new_text", sv["batch_s"] * 1000, sv["batch_qps"]])
        parts.append("\nBatches\n" + _table(["batch", "texts", "ms", "queries/s"], rows))
        mb = warm.get("max_batch_queries_per_s")
        if mb:
            parts.append(f"\n{mb['n']} new texts by engine max_batch (default {mb['default']}), queries/s: " +
                         ", ".join(f"{k}: {v:.1f}" for k, v in mb["by_max_batch"].items()))
    prec = report.get("precision", {})
    if "effect" in prec:
        e = prec["effect"]
        parts.append(f"\nReduced precision ({prec['reduced']}): encode {prec['encode_frames_per_s']['fp32']:.1f} -> "
                     f"{prec['encode_frames_per_s'][prec['reduced']]:.1f} frames/s (x{prec['encode_speedup']:.2f}); "
                     f"cold 30 s {prec['cold_short']['total_s']:.2f} s; max saliency diff "
                     f"{e['max_saliency_diff']:.4f}, mean top-1 IoU {_fmt(e['top1_iou_mean'], 3)}")
    svc = report.get("service", {})
    if "load" in svc:
        ld, ov = svc["load"], svc.get("overhead", {})
        parts.append(f"\nService: {ld['clients']} clients, {ld['requests']} requests: {ld['rps']:.1f} req/s, "
                     f"p50 {ld['p50_ms']:.0f} / p95 {ld['p95_ms']:.0f} / p99 {ld['p99_ms']:.0f} ms, "
                     f"errors {ld['errors']}, mean worker batch {_fmt(ld['breakdown'].get('mean_batch'))}\n"
                     f"  one request at a time: HTTP p50 {_fmt(ov.get('http_p50_ms'))} ms = worker pipeline "
                     f"{_fmt(ov.get('worker_p50_ms'))} ms (model {_fmt(ov.get('model_p50_ms'))} ms) + overhead "
                     f"{_fmt(ov.get('p50_ms'))} ms (before the worker picks the job up "
                     f"{_fmt(ov.get('before_pickup_p50_ms'))} ms, after it finishes "
                     f"{_fmt(ov.get('after_finish_p50_ms'))} ms)")
    rows = [[t["id"], t["target"], _fmt(t["measured"]) + (f" {t['unit']}" if t["unit"] else ""),
             {True: "MET", False: "MISSED", None: "n/a"}[t["met"]], t["name"]] for t in report.get("targets", [])]
    parts.append("\nTargets\n" + _table(["id", "goal", "measured", "", "what"], rows))
    if report.get("errors"):
        parts.append("\nERRORS: " + "; ".join(f"{e['section']}: {e['error']}" for e in report["errors"]))
    parts.append(f"\nwall time {report.get('wall_s')} s")
    return "\n".join(parts)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="r2tuning bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small videos and few runs (CI smoke test, < 2 min)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output file (default {DEFAULT_OUT})")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--redis-url", default=DEFAULT_REDIS,
                   help="Redis for the feature store and the service (default $R2_BENCH_REDIS_URL or DB 14)")
    p.add_argument("--cache-dir", help="where generated videos and model files are kept (default $R2_BENCH_CACHE "
                                       "or ~/.cache/r2tuning-bench)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--runs", type=int, help="override the runs per cold / naive measurement")
    p.add_argument("--clients", type=int, help="override the number of concurrent HTTP clients")
    p.add_argument("--table-only", action="store_true", help="print only the table (the JSON still goes to --out)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # `r2tuning bench -- --quick`: argparse's REMAINDER keeps the separator
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    args.argv = argv
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        print(f"r2tuning bench: unknown sections {sorted(unknown)}", file=sys.stderr)
        return 2
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    plan = Plan.quick_plan() if args.quick else Plan.full()
    if args.runs:
        plan = replace(plan, cold_runs=args.runs, naive_runs=args.runs)
    if args.clients:
        plan = replace(plan, clients=args.clients)
    report = _jsonable(Bench(plan, args).run())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    if not args.table_only:
        print(json.dumps(report, indent=2))
    print(render(report))
    print(f"\nJSON written to {args.out}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
