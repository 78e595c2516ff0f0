"""Smoke test of the benchmark harness: ``python -m bench.run --quick`` end to end (what ``r2tuning bench
--quick`` runs). No timing is asserted; the JSON document must have every section with sane values.

Needs the real Redis (``R2_TEST_REDIS_URL``, as the service tests): the harness stores features there and starts
the API and a worker against it under a key prefix of its own, which it deletes afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.redis, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("R2_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[dict, str]:
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "result.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--table-only", "--out", str(out), "--redis-url", REDIS_URL,
         "--cache-dir", str(tmp / "cache")],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, f"bench failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(out.read_text()), proc.stdout


def test_quick_run_reports_every_section(quick_run) -> None:
    report, _ = quick_run
    assert report["quick"] is True
    assert report["errors"] == []
    for section in ("machine", "videos", "model", "cold", "naive", "warm", "precision", "memory", "service",
                    "training", "search", "ratios", "targets"):
        assert section in report, section
        assert "error" not in report[section] if isinstance(report[section], dict) else True, report[section]
    machine = report["machine"]
    assert machine["cpu_count"] >= 1 and machine["torch"] and machine["torch_threads"] >= 1


def test_cold_and_naive_paths(quick_run) -> None:
    report, _ = quick_run
    for role in ("short", "medium"):
        cold, naive = report["cold"][role], report["naive"][role]
        # Both pipelines take exactly the official frames: 0.5 fps of the video.
        expected = round(report["videos"][role]["seconds"] * 0.5)
        assert cold["frames"] == naive["frames"] == expected
        assert 0 < cold["encode_s"] <= cold["total_s"]
        assert cold["decode_wait_s"] >= 0 and cold["store_s"] >= 0 and cold["frames_per_s"] > 0
        assert cold["payload_bytes"] == 4 * expected * 50 * 768 * 2  # (K, T, P, C) float16
        assert cold["redis_bytes"] >= cold["payload_bytes"]
        assert naive["decode_s"] > 0 and naive["encode_video_s"] > 0 and naive["total_s"] >= naive["decode_encode_s"]
        assert report["ratios"][role]["naive_over_cold"] > 0


def test_warm_queries_and_text_cache(quick_run) -> None:
    warm = quick_run[0]["warm"]
    for case in ("single_new_text", "single_repeated_text"):
        assert warm[case]["n"] > 0 and 0 < warm[case]["p50_ms"] <= warm[case]["p95_ms"]
    assert warm["text_cache"]["hits"] > 0
    assert warm["first_query_after_redis_hit"]["total_ms"] > 0
    assert {b["batch"] for b in warm["batches"].values()} >= {1, 8}
    assert all(b["queries_per_s"] > 0 for b in warm["batches"].values())
    assert warm["singles_vs_batch"]["throughput_ratio"] > 0


def test_precision_memory_and_service(quick_run) -> None:
    report, _ = quick_run
    prec = report["precision"]
    assert prec["reduced"] in ("bf16", "fp16")
    assert all(v > 0 for v in prec["encode_frames_per_s"].values())
    effect = prec["effect"]
    assert 0 <= effect["max_saliency_diff"] < 1 and 0 <= effect["top1_iou_mean"] <= 1
    mem = report["memory"]
    assert mem["raw_float16_bytes_per_min"] == 4 * 30 * 50 * 768 * 2
    assert mem["engine_long"]["process_peak_mb"] > 100 and mem["engine_long"]["tree_pss_peak_mb"] > 0
    assert all(v["redis_bytes_per_min"] > 0 for v in mem["cached_per_min"].values())
    svc = report["service"]
    load = svc["load"]
    assert load["requests"] == load["clients"] * load["requests_per_client"]
    assert load["errors"] == 0, load["status_codes"]
    assert load["rps"] > 0 and load["p50_ms"] <= load["p99_ms"]
    assert svc["sequential"]["errors"] == 0 and svc["overhead"]["p50_ms"] is not None


def test_training_section(quick_run) -> None:
    tp = quick_run[0]["training"]["throughput"]
    assert tp["seconds_per_iteration"] > 0 and tp["seconds_per_epoch_per_video_hour"] > 0
    assert "skipped" in quick_run[0]["training"]["gain"]


def test_warm_service_measurements(quick_run) -> None:
    svc = quick_run[0]["service"]
    long = svc["long_video"]
    assert long["clips"] == quick_run[0]["plan"]["long_clips"] and long["http"]["p50_ms"] > 0
    assert long["engine_ground"]["p50_ms"] > 0 and long["http_over_engine"] > 0
    aff = svc["affinity"]
    assert aff["workers"] == 2 and aff["repeated_queries"] == aff["videos"] * (aff["rounds"] - 1)
    assert 0 <= aff["hit_rate"] <= 1
    assert 0 < svc["models_command_s"]


ISSUE_TARGETS = ("http_over_model_150s", "http_over_engine_40min", "naive_over_http_150s", "batch32_speedup",
                 "affinity_hit_rate_2workers", "models_command_s", "train_seconds_per_epoch_per_video_hour_cpu",
                 "search_recall10", "search_speedup_vs_exhaustive")


def test_search_two_stage_against_exhaustive(quick_run) -> None:
    search = quick_run[0]["search"]
    assert search["videos"] == 100 and search["queries"] >= 2 and search["index"] == "numpy"
    assert 0 < search["two_stage_p50_s"] and 0 < search["exhaustive_p50_s"] and search["speedup"] > 0
    recalls = search["recall10_by_candidates"]
    assert all(0 <= r <= 1 for r in recalls.values()) and recalls["100"] == 1.0  # 100 candidates = every video
    assert search["recall10"] == recalls[str(search["candidates"])]


def test_targets_have_stable_ids_and_quick_computes_them(quick_run) -> None:
    report, stdout = quick_run
    ids = [t["id"] for t in report["targets"]]
    assert len(ids) == len(set(ids))
    assert "train_r1_gain_marked" in ids  # measured in the full run only
    for t in report["targets"]:
        assert t["met"] in (True, False, None)
    measured = {t["id"]: t["measured"] for t in report["targets"]}
    for target in ISSUE_TARGETS:
        assert isinstance(measured[target], int | float), (target, measured.get(target))
    assert "Targets" in stdout and "Cold path" in stdout
