"""Capacity figures for docs/scaling.md: what one video-hour costs in Redis and on disk, and what one warm
query costs Redis.

``python -m bench.capacity [--minutes 2] [--queries 2000] [--clips 1800] [--cluster-url redis://127.0.0.1:7000]``

* **Memory and disk per video-hour**: synthetic ViT-B/32 features (k=4 layers, 50 tokens of 768 float16
  values per clip) of ``--minutes`` minutes at 0.5 fps, stored through the service's own feature cache into a
  Redis of its own (``MEMORY USAGE`` of the header and every chunk) and into a cold tier (file size), scaled
  to one hour (both are linear in the clip count: a fixed header plus chunks of ``R2_CHUNK_BYTES``).
* **Redis per warm query**: the exact store calls the API and a worker make for one warm query (video record,
  submit script, blocking wait, begin script, finish script with an answer of ``--clips`` clips, job record),
  run ``--queries`` times against a Redis of its own; Redis' own CPU time (``INFO commandstats``, microseconds
  spent in commands) divided by the number of queries. Redis runs commands on one thread, so 1 s / that time
  bounds the warm queries/s one Redis (or the queue's master in a cluster) can carry. With ``--cluster-url``
  the same runs on that cluster, split into the queue's master and the rest.
* **Redis per worker heartbeat**: the heartbeat write every worker makes each ``R2_HEARTBEAT_INTERVAL_S``.

The Redis instances are started here (``redis-server`` on a free port), so other users of a shared server do
not pollute the command statistics. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from service.contract.keys import Keys
from service.contract.schemas import Job, JobKind, Mode, VideoRecord, WorkerInfo
from service.contract.settings import Settings
from service.store.cold import DirColdStore
from service.store.connect import redis_client
from service.store.features import CachedFeatures, FeatureCache
from service.store.jobs import Outcome
from service.store.redis_chunks import RedisChunkStore
from service.store.redis_jobs import RedisJobStore
from service.store.redis_records import RedisRecords

K, TOKENS, WIDTH, FPS = 4, 50, 768, 0.5  # ViT-B/32 as the official checkpoints use it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def own_redis(folder: Path) -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is needed (apt-get install redis-server)")
    port = _free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def features(minutes: float) -> CachedFeatures:
    clips = int(minutes * 60 * FPS)
    data = bytes(range(256)) * (K * clips * TOKENS * WIDTH * 2 // 256)
    video = dict(num_frames=int(minutes * 60 * 30), avg_fps=30.0, width=1280, height=720, duration=minutes * 60)
    return CachedFeatures("float16", (K, clips, TOKENS, WIDTH), data, video)


def storage(url: str, minutes: float, chunk_bytes: int, folder: Path) -> dict[str, Any]:
    """Bytes per video-hour of one model's features: in Redis (MEMORY USAGE) and in the cold tier (files)."""
    client = redis.Redis.from_url(url, socket_timeout=60)
    keys, entry = Keys("cap"), features(minutes)
    cold = DirColdStore(folder / "cold", "cap", chunk_bytes)
    FeatureCache(RedisChunkStore(client, chunk_bytes), keys, 3600, cold).put("v" * 64, "fid", entry)
    name = keys.features("v" * 64, "fid")
    chunks = -(-len(entry.data) // chunk_bytes)
    names = [name, keys.feature_ids("v" * 64), *(Keys.chunk(name, i) for i in range(chunks))]
    in_redis = sum(int(client.memory_usage(n, samples=0) or 0) for n in names)
    on_disk = sum(p.stat().st_size for p in cold.root.rglob("*.r2ck"))
    client.flushdb()
    client.close()
    scale = 60 / minutes
    return dict(minutes_stored=minutes, payload_mb_per_hour=round(len(entry.data) * scale / 1e6, 1),
                redis_mb_per_hour=round(in_redis * scale / 1e6, 1), cold_mb_per_hour=round(on_disk * scale / 1e6, 1),
                redis_overhead=round(in_redis / len(entry.data) - 1, 4), chunk_bytes=chunk_bytes)


_NOT_OURS = ("info", "cluster|slots", "cluster|nodes", "cluster|shards", "replconf", "ping", "command",
             "client|setinfo")


def _usec(clients: list[redis.Redis]) -> dict[str, tuple[float, float]]:
    """command -> (calls, usec) summed over the given nodes, plus ``cpu`` -> (0, main-thread CPU usec)."""
    out: dict[str, tuple[float, float]] = {}
    for client in clients:
        for name, stats in client.info("commandstats").items():
            calls, usec = out.get(name, (0, 0))
            out[name] = (calls + int(stats["calls"]), usec + int(stats["usec"]))
        cpu = client.info("cpu")
        main = float(cpu.get("used_cpu_user_main_thread", cpu["used_cpu_user"])) + \
            float(cpu.get("used_cpu_sys_main_thread", cpu["used_cpu_sys"]))
        out["cpu"] = (0, out.get("cpu", (0, 0))[1] + main * 1e6)
    return out


def _delta(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]], n: int) -> dict[str, Any]:
    """Per query: Redis main-thread CPU (commands, scripts, network I/O and event loop: what bounds a Redis),
    and the calls of each command (commands run inside a script are counted under their own name too, and
    their time is part of ``evalsha``'s)."""
    per: dict[str, dict[str, float]] = {}
    for name, (calls, usec) in after.items():
        c0, u0 = before.get(name, (0, 0))
        short = name.removeprefix("cmdstat_")
        if name != "cpu" and calls - c0 > 0 and short not in _NOT_OURS:
            per[short] = dict(calls=round((calls - c0) / n, 2), usec=round((usec - u0) / n, 1))
    cpu = (after["cpu"][1] - before["cpu"][1]) / n
    return dict(cpu_usec_per_query=round(cpu, 1), queries_per_s_bound=round(1e6 / cpu) if cpu else None,
                by_command=per)


def warm_queries(url: str, cluster: bool, queries: int, clips: int) -> dict[str, Any]:
    """Redis CPU per warm query: the API's and a worker's store calls, in the service's order."""
    settings = Settings(redis_url=url, redis_cluster=cluster, key_prefix=f"cap{uuid.uuid4().hex[:6]}")
    client = redis_client(url, 10, cluster=cluster)
    keys = Keys(settings.key_prefix)
    jobs = RedisJobStore(client, keys, 10_000, result_ttl_s=3600, url=url, timeout_s=5, cluster=cluster)
    records = RedisRecords(client, keys)
    video_id = "a" * 64
    records.create_video(VideoRecord(video_id=video_id, model="m", size_bytes=1, status="ready"), 3600)
    jobs.open("w")
    rng = random.Random(0)  # answers as the worker stores them: full-precision floats
    answer = dict(results=[dict(query="q", clip_seconds=2.0, duration=clips * 2.0,
                                moments=[dict(start=2.0 * i, end=2.0 * i + 8, score=rng.random()) for i in range(10)],
                                saliency=[rng.uniform(-1, 1) for _ in range(clips)])])
    if cluster:
        real = client.real() if hasattr(client, "real") else client
        nodes = [real.get_redis_connection(n) for n in real.get_primaries()]
        queue_node = real.get_redis_connection(real.get_node_from_key(keys.jobs))
    else:
        nodes, queue_node = [client], client

    async def one(n: int) -> None:
        records.get_video(video_id)  # Gateway.video
        job = Job(job_id=f"j{n}", kind=JobKind.ground, video_id=video_id, model="m", mode=Mode.moments,
                  queries=[f"q{n}"])
        jobs.submit(job, 3600, request_hash=f"h{n}")  # Gateway.submit
        (d,) = jobs.take("w", 1, 1.0)  # Worker._take
        jobs.begin("w", [d])
        jobs.finish("w", [Outcome(d, result=answer)], {"r2_jobs_total": 1.0}, {"ground": 0.01})
        assert await jobs.wait(job.job_id, 5.0)  # Gateway.wait_job (the token is there: one BLMOVE)
        jobs.get(job.job_id)

    def idle_cpu_per_s(of: list[Any]) -> float:  # cluster bus, cron: what a node spends with no query
        first = _usec(of)["cpu"][1]
        time.sleep(2.0)
        return (_usec(of)["cpu"][1] - first) / 2.0

    idle, idle_q = idle_cpu_per_s(nodes), idle_cpu_per_s([queue_node])

    def net(report: dict[str, Any], idle_per_s: float, wall: float) -> dict[str, Any]:
        busy = max(0.0, report["cpu_usec_per_query"] - idle_per_s * wall / queries)
        return {**report, "cpu_usec_per_query_less_idle": round(busy, 1),
                "queries_per_s_bound": round(1e6 / busy) if busy else None}

    async def run() -> tuple[dict[str, Any], dict[str, Any], float]:
        for n in range(20):  # warm up: scripts loaded, connections open
            await one(-n - 1)
        before, before_q = _usec(nodes), _usec([queue_node])
        started = time.perf_counter()
        for n in range(queries):
            await one(n)
        wall = time.perf_counter() - started
        result = (net(_delta(before, _usec(nodes), queries), idle, wall),
                  net(_delta(before_q, _usec([queue_node]), queries), idle_q, wall), wall)
        await jobs.aclose()
        return result

    total, queue, wall = asyncio.run(run())
    job_record_bytes = int(queue_node.memory_usage(keys.job("j0"), samples=0) or 0)
    beat_before = _usec([queue_node])
    info = WorkerInfo(worker_id="w", host="h", pid=1, device="cuda", started_at=0, seen_at=0, models={})
    for _ in range(200):
        records.heartbeat(info, 15)
        records.live_workers()
    beat = _delta(beat_before, _usec([queue_node]), 200)
    for key in (keys.video(video_id),):
        client.delete(key)
    client.close()
    out = dict(total=total, answer_clips=clips, job_record_bytes=job_record_bytes,
               one_client_queries_per_s=round(queries / wall, 1),
               heartbeat_and_catalog_read_cpu_usec=beat["cpu_usec_per_query"])
    if cluster:
        out["queue_master"] = queue
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="minutes of features to store (scaled to 1 h)")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--clips", type=int, default=1800, help="clips in each answer (1800: a 1 h video)")
    parser.add_argument("--cluster-url", default=None, help="also measure on this Redis Cluster")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="r2-capacity-") as tmp, own_redis(Path(tmp)) as url:
        report["storage_vit_b32_0.5fps"] = storage(url, args.minutes, Settings().chunk_bytes, Path(tmp))
        report["warm_query_single"] = warm_queries(url, False, args.queries, args.clips)
    if args.cluster_url:
        report["warm_query_cluster"] = warm_queries(args.cluster_url, True, args.queries, args.clips)
    json.dump(report, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
