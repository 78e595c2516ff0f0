"""`r2tuning eval` (in-process) on pre-extracted features in the official layout, with the fixtures' tiny weights."""

from __future__ import annotations

import json

import numpy as np
import torch

from models.evaluation import evaluate_grounding
from r2tuning.cli import main

from engine_helpers import tiny_grounder, tiny_paths


def test_eval_on_features(tmp_path, capsys) -> None:
    g = tiny_grounder()
    video_dir, query_dir = tmp_path / "video", tmp_path / "query"
    video_dir.mkdir()
    query_dir.mkdir()
    gen = torch.Generator().manual_seed(3)
    feats = g.encode_video(torch.randn(10, 3, 64, 64, generator=gen))  # (K, T, P, C)
    # Official feature files: (T, K*P*C) float16 per video, (L, K*Cq) per query.
    np.save(video_dir / "v1.npy", feats.permute(1, 0, 2, 3).reshape(10, -1).numpy())
    annotations = []
    for qid, text in enumerate(["a dog", "a person cooking pasta"]):
        q = g._text_features([text], full_context=False)[0]  # (K, L, Cq)
        np.save(query_dir / f"{qid}.npy", q.permute(1, 0, 2).reshape(q.shape[1], -1).half().numpy())
        annotations.append(dict(qid=qid, vid="v1", query=text, duration=20.0, relevant_windows=[[4.0, 10.0]]))
    anno_file = tmp_path / "anno.jsonl"
    anno_file.write_text("".join(json.dumps(a) + "\n" for a in annotations))
    r2, clip = tiny_paths()
    out = tmp_path / "sub.jsonl"
    assert main(["eval", str(anno_file), "--checkpoint", r2, "--clip-path", clip, "--video-features",
                 str(video_dir), "--query-features", str(query_dir), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    submission = [json.loads(line) for line in out.read_text().splitlines()]
    assert [s["qid"] for s in submission] == [0, 1]
    # The submission equals the engine's direct answer with every row kept.
    direct = g.ground(feats, ["a dog", "a person cooking pasta"], duration=20.0, top_k=None)
    for sub, res in zip(submission, direct, strict=True):
        np.testing.assert_allclose(np.array(sub["pred_relevant_windows"]), np.array(res.moments), atol=1e-4)
        assert len(sub["pred_saliency_scores"]) == 10
    metrics = evaluate_grounding(submission, annotations)
    assert "MR-full-R1@0.5" in stdout or str(metrics["brief"]["MR-full-R1@0.5"]) in stdout
