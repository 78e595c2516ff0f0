"""Peak memory of one cold encode (or one naive request), measured in a fresh child process.

``python -m bench.memory --video V --mode engine|naive --models DIR --out result.json`` loads the benchmark
model from files (as the service's worker does), runs the work once and writes its timings and memory: the
process's own peak RSS (``VmHWM``, exact), and, sampled every 50 ms, the peaks of every descendant (the
forkserver and the isolated decoder forked from it) and of the whole process tree. The parent
(:func:`measure`) starts the child and reads the file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

MiB = 1 << 20


def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _children_map() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        out.setdefault(ppid, []).append(int(name))
    return out


def descendants(pid: int) -> dict[int, int]:
    """pid -> parent pid of every process below ``pid``."""
    children, todo, found = _children_map(), [pid], {}
    while todo:
        parent = todo.pop()
        for child in children.get(parent, []):
            found[child] = parent
            todo.append(child)
    return found


def _pss_kib(pid: int) -> int:
    """Proportional set size: shared pages (torch's libraries, the forkserver's copy-on-write pages) are
    split between the processes sharing them, so a sum over processes is the memory really used."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class TreeSampler(threading.Thread):
    """Samples the memory of this process and all its descendants until stopped (Linux /proc only).

    Per process the peak RSS (``VmHWM``, exact, read while it lives); for the tree the peak of the summed RSS
    (counts shared library pages once per process) and of the summed PSS (counts them once in total).
    """

    def __init__(self, interval_s: float = 0.05) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.interval_s = interval_s
        self.pid = os.getpid()
        self.tree_rss_peak_kib = 0
        self.tree_pss_peak_kib = 0
        self.peaks_kib: dict[int, int] = {}
        self.parents: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval_s)

    def sample(self) -> None:
        rss = _status_kib(self.pid, "VmRSS")
        pss = _pss_kib(self.pid)
        for child, parent in descendants(self.pid).items():
            child_rss = _status_kib(child, "VmRSS")
            rss += child_rss
            pss += _pss_kib(child)
            # VmHWM is the child's own exact peak so far; keep the last value read before it exits.
            self.peaks_kib[child] = max(self.peaks_kib.get(child, 0), _status_kib(child, "VmHWM"), child_rss)
            self.parents[child] = parent
            if child not in self.names:
                try:
                    with open(f"/proc/{child}/cmdline", "rb") as f:
                        self.names[child] = f.read().replace(b"\0", b" ").decode(errors="replace")[:100]
                except OSError:
                    self.names[child] = "?"
        self.tree_rss_peak_kib = max(self.tree_rss_peak_kib, rss)
        self.tree_pss_peak_kib = max(self.tree_pss_peak_kib, pss)

    def stop(self) -> dict:
        self._stop_event.set()
        self.join()
        self.sample()
        # The decoders are forked from the forkserver, a direct child of this process.
        servers = {p for p, parent in self.parents.items() if parent == self.pid}
        decoders = [p for p, parent in self.parents.items() if parent in servers and "forkserver" in self.names[p]]
        return dict(
            process_peak_mb=_status_kib(self.pid, "VmHWM") / 1024,
            decoder_peak_mb=max((self.peaks_kib[p] for p in decoders), default=0) / 1024,
            helpers_peak_mb=sum(self.peaks_kib[p] for p in servers) / 1024,
            tree_rss_peak_mb=self.tree_rss_peak_kib / 1024,
            tree_pss_peak_mb=self.tree_pss_peak_kib / 1024,
            children=[dict(pid=p, parent=self.parents[p], cmd=self.names[p], peak_rss_mb=self.peaks_kib[p] / 1024)
                      for p in sorted(self.peaks_kib)],
        )


def _child(args: argparse.Namespace) -> dict:
    import torch

    from bench.fixtures import qvhighlights_spec
    from bench.naive import run_naive
    from models.allocator import keep_freed_blocks
    from models.checkpoint import load_r2_checkpoint
    from models.clip import load_clip
    from models.engine import Grounder

    if args.threads:
        torch.set_num_threads(args.threads)
    # Loaded from files exactly as the service's worker loads a user model.
    clip_file, r2_file = args.models / "clip-vit-b-32-random.pt", args.models / "r2-random.pth"
    grounder = Grounder(load_clip(str(clip_file), device=args.device), load_r2_checkpoint(r2_file, args.device),
                        qvhighlights_spec(checkpoint=str(r2_file), clip_path=str(clip_file)), precision=args.precision)
    keep_freed_blocks()  # as the worker does, once its models are loaded
    baseline_mb = _status_kib(os.getpid(), "VmRSS") / 1024
    load_peak_mb = _status_kib(os.getpid(), "VmHWM") / 1024
    if args.warmup and args.mode == "engine":
        grounder.encode_file(args.warmup, timeout_s=600)  # starts the forkserver: not part of the measurement
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with contextlib.suppress(OSError):  # restart VmHWM: the peak below is the work's, not the model loading's
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    sampler = TreeSampler()
    sampler.start()
    started = time.perf_counter()
    result: dict = dict(mode=args.mode, video=str(args.video), rss_after_model_load_mb=baseline_mb,
                        peak_rss_during_model_load_mb=load_peak_mb)
    if args.mode == "engine":
        from bench.timing import timed_encode_file

        timing, features, _info = timed_encode_file(grounder, args.video)
        result.update(timing)
        result["features_shape"] = list(features.shape)
        if args.redis_url:
            from bench.store import store_features

            result.update(store_features(args.redis_url, args.prefix, "memory-" + Path(args.video).stem,
                                         grounder, features, _info))
    else:
        naive = run_naive(grounder, args.video, "a person walks a dog along the beach at sunset")
        result.update(naive.seconds)
        result["frames"] = naive.frames
    result["wall_s"] = time.perf_counter() - started
    result.update(sampler.stop())
    if args.device.startswith("cuda"):
        result["gpu_peak_allocated_mb"] = torch.cuda.max_memory_allocated() / MiB
    return result


def measure(video: Path, mode: str, models: Path, *, device: str = "cpu", precision: str = "fp32",
            warmup: Path | None = None, redis_url: str | None = None, prefix: str = "r2bench", timeout_s: float = 1800,
            threads: int | None = None) -> dict:
    """Run :func:`_child` in a fresh interpreter and return its report."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="r2bench-mem-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "bench.memory", "--video", str(video), "--mode", mode, "--models", str(models),
               "--device", device,
               "--precision", precision, "--out", str(out), "--prefix", prefix]
        if warmup:
            cmd += ["--warmup", str(warmup)]
        if redis_url:
            cmd += ["--redis-url", redis_url]
        if threads:
            cmd += ["--threads", str(threads)]
        proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                              timeout=timeout_s)
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(f"memory child ({mode}) failed with {proc.returncode}: {proc.stderr[-2000:]}")
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory")
    p.add_argument("--video", type=Path, required=True)
    p.add_argument("--mode", choices=["engine", "naive"], default="engine")
    p.add_argument("--models", type=Path, required=True, help="folder of bench.fixtures.write_model_files")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--warmup", type=Path)
    p.add_argument("--redis-url")
    p.add_argument("--prefix", default="r2bench")
    p.add_argument("--threads", type=int)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    args.out.write_text(json.dumps(_child(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
