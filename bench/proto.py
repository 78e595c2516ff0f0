"""Prototypes of cold-path changes to the engine, measured against ``Grounder.encode_file`` (not used by the
service; they exist to put numbers on the recommendations in docs/performance.md).

``python -m bench.proto [--video V] [--runs N]`` compares, on the same video and model:

* ``engine``: ``Grounder.encode_file`` as it is (one decoder child, torch's default thread count while it
  overlaps decoding with encoding);
* ``engine_1thread``: the same with ``torch.set_num_threads(1)`` around it, so the encoder and the decoder child
  each have one core instead of three busy threads sharing two;
* ``split_decode_<W>``: the sampled indices cut into W contiguous slices, each decoded by its own child
  (decord seeks to the key frame before a slice, so the frames are exactly the same), chunks encoded in order as
  they arrive;
* ``dec<D>_enc<E>``: ``encode_file``'s loop with D FFmpeg threads in the decoder child and E torch threads in
  the encoder;
* ``naive``: the official flow's decode + encode, sequential.

Every variant must give the same features as ``engine`` (checked, max abs difference reported).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.engine import Grounder
from models.video import FrameSpec, _context, _open_reader, _preprocess, sample_indices


def _slice_child(conn: Any, path: str, spec: FrameSpec, start: int, stop: int, chunk_size: int) -> None:
    torch.set_num_threads(1)
    try:
        info, fetch = _open_reader(path)  # fetch(indices) -> (n, H, W, 3) uint8, decord's frames
        indices = sample_indices(info.num_frames, info.avg_fps, spec.fps)[start:stop]
        for at in range(0, len(indices), chunk_size):
            chunk = _preprocess(fetch(indices[at:at + chunk_size]), spec)
            conn.send(tuple(chunk.shape))
            conn.send_bytes(chunk.numpy().reshape(-1).view(np.uint8))
        conn.send(None)
    finally:
        conn.close()


def split_decode(path: str | Path, spec: FrameSpec, workers: int, chunk_size: int = 16) -> Iterator[torch.Tensor]:
    """Chunks of the official frames, in order, decoded by ``workers`` children each owning one slice."""
    info, _ = _open_reader(path)
    total = len(sample_indices(info.num_frames, info.avg_fps, spec.fps))
    bounds = [round(total * w / workers) for w in range(workers + 1)]
    ctx = _context("forkserver")
    procs, conns = [], []
    for w in range(workers):
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_slice_child, args=(child, str(path), spec, bounds[w], bounds[w + 1], chunk_size),
                           daemon=True)
        proc.start()
        child.close()
        procs.append(proc)
        conns.append(parent)
    try:
        for conn in conns:  # slices in order; later slices decode meanwhile (each runs one chunk ahead)
            while (shape := conn.recv()) is not None:
                out = torch.empty(shape, dtype=torch.float32)
                conn.recv_bytes_into(out.numpy().reshape(-1).view(np.uint8))
                yield out
    finally:
        for proc in procs:
            proc.kill()
            proc.join(10)


def encode_split(grounder: Grounder, path: str | Path, workers: int, threads: int | None = None) -> torch.Tensor:
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return grounder.encode_video(split_decode(path, grounder.frame_spec, workers))
    finally:
        torch.set_num_threads(previous)


def encode_engine(grounder: Grounder, path: str | Path, threads: int | None = None) -> torch.Tensor:
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return grounder.encode_file(path, timeout_s=1800)[1]
    finally:
        torch.set_num_threads(previous)


def encode_isolated(grounder: Grounder, path: str | Path, decoder_threads: int, threads: int,
                    chunk_size: int = 16) -> torch.Tensor:
    """``encode_file``'s loop with the decoder child's FFmpeg thread count and the encoder's torch threads set."""
    from models.video import decode_in_subprocess

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        chunks = (frames for _, frames in decode_in_subprocess(path, grounder.frame_spec, timeout_s=1800,
                                                               chunk_size=chunk_size, num_threads=decoder_threads))
        return grounder.encode_video(chunks)
    finally:
        torch.set_num_threads(previous)


def encode_naive(grounder: Grounder, path: str | Path) -> torch.Tensor:
    from bench.naive import load_video

    fs = grounder.frame_spec
    frames = load_video(path, fs.fps, fs.size, fs.mean, fs.std)
    return grounder.clip.encode_frames(frames, last_k=grounder.k, batch_size=frames.shape[0]).half()


def compare(grounder: Grounder, path: Path, runs: int, variants: list[str]) -> dict[str, Any]:
    fns = {
        "engine": lambda: encode_engine(grounder, path),
        "engine_1thread": lambda: encode_engine(grounder, path, threads=1),
        "split_decode_2": lambda: encode_split(grounder, path, 2),
        "split_decode_2_1thread": lambda: encode_split(grounder, path, 2, threads=1),
        "split_decode_3": lambda: encode_split(grounder, path, 3),
        "dec1_enc1": lambda: encode_isolated(grounder, path, 1, 1),
        "dec1_enc2": lambda: encode_isolated(grounder, path, 1, 2),
        "dec2_enc1_chunk8": lambda: encode_isolated(grounder, path, 2, 1, chunk_size=8),
        "naive": lambda: encode_naive(grounder, path),
    }
    encode_engine(grounder, path)  # warm-up: forkserver, allocator
    results: dict[str, Any] = {}
    reference = None
    for _ in range(runs):  # interleaved, so load changes on the machine hit every variant alike
        for name in variants:
            t = time.perf_counter()
            feats = fns[name]()
            seconds = time.perf_counter() - t
            if reference is None:
                reference = feats
            entry = results.setdefault(name, dict(runs=[], max_abs_diff=0.0))
            entry["runs"].append(seconds)
            entry["max_abs_diff"] = max(entry["max_abs_diff"], float((feats.float() - reference.float()).abs().max()))
            print(f"{name}: {seconds:.2f} s", file=sys.stderr, flush=True)
    for entry in results.values():
        entry["median_s"] = statistics.median(entry["runs"])
    base = results.get("naive", results.get("engine"))["median_s"]
    for entry in results.values():
        entry["speedup_vs_naive_decode_encode"] = base / entry["median_s"]
    return results


def main(argv: list[str] | None = None) -> int:
    from bench.fixtures import build_grounder
    from bench.videos import VideoSpec, ensure_video

    p = argparse.ArgumentParser(prog="python -m bench.proto")
    p.add_argument("--video", type=Path)
    p.add_argument("--seconds", type=float, default=150)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--variants", default="naive,engine,engine_1thread,split_decode_2,split_decode_2_1thread")
    args = p.parse_args(argv)
    video = args.video or ensure_video(VideoSpec(args.seconds))
    grounder = build_grounder()
    out = compare(grounder, video, args.runs, args.variants.split(","))
    out["video"] = str(video)
    out["torch_threads"] = torch.get_num_threads()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
