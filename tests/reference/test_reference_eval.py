"""Evaluation parity with the official code.

Grounding (fixture section 5): every ``<prefix>_gt.jsonl`` in ``eval/`` is paired with
``<prefix>_submission.jsonl`` and ``<prefix>_metrics.json``; the whole metrics dict (values and key order) must be
identical. Highlight formats (section 6): `r2tuning eval`'s runner on the ``r2_highlight`` cases laid out as the
official feature files must reproduce the official saliency and score it with the official formula.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.checkpoint import load_r2_checkpoint
from models.engine import Grounder
from models.eval_runner import evaluate_annotations
from models.evaluation import evaluate_grounding, highlight_map, load_jsonl, tvsum_top5_map
from models.zoo import ModelSpec

from fixture_sets import fixture_path
from r2_cases import case_ids, listing, load_case

pytestmark = pytest.mark.reference

GT_SUFFIX = "_gt.jsonl"


def _prefixes() -> list[str]:
    prefixes = sorted(p.name[: -len(GT_SUFFIX)] for p in fixture_path("eval").glob(f"*{GT_SUFFIX}"))
    if not prefixes:
        raise FileNotFoundError(f"no *{GT_SUFFIX} files in {fixture_path('eval')}")
    return prefixes


PREFIXES = _prefixes()


@pytest.mark.parametrize("prefix", PREFIXES)
def test_metrics_equal_official(prefix: str) -> None:
    ground_truth = load_jsonl(fixture_path("eval", f"{prefix}{GT_SUFFIX}"))
    submission = load_jsonl(fixture_path("eval", f"{prefix}_submission.jsonl"))
    expected = json.loads(fixture_path("eval", f"{prefix}_metrics.json").read_text())

    metrics = evaluate_grounding(submission, ground_truth)

    assert metrics == expected
    # Same nesting order too, so a dump of our result reads like the official one.
    assert json.dumps(metrics) == json.dumps(expected)


# ---------------------------------------------------------------------------------------------------------------
# YouTube Highlights / TVSum: the `r2_highlight` cases (official saliency of a highlight-only checkpoint on
# features in the official layout) as the videos of an annotation file of each format.


class FeaturesOnlyTowers:
    """Stands in for CLIP: evaluating pre-extracted video and query features runs neither tower."""

    def __init__(self, cfg) -> None:
        self.vision_width, self.text_width = cfg.video_width, cfg.query_width
        self.vision_layers = self.text_layers = cfg.k
        self.image_size, self.fingerprint = 224, "features-only"


def _highlight_grounder() -> Grounder:
    path = fixture_path("r2_highlight", listing("r2_highlight")["checkpoint"])
    model = load_r2_checkpoint(path)
    spec = ModelSpec(name="r2-highlight", dataset="fixture", domain=None, filename=path.name, url=None,
                     hash_prefix=None, path=str(path), clip_pretrained=None, clip_path=str(path), fps=0.5, unit=None,
                     nms_type="normal", nms_thres=0.7, outputs="saliency")
    return Grounder(FeaturesOnlyTowers(model.cfg), model, spec)  # type: ignore[arg-type]


@pytest.mark.parametrize("dataset", ["youtube", "tvsum"])
def test_highlight_evaluation_from_official_features(dataset: str, tmp_path) -> None:
    video_dir, query_dir = tmp_path / "clip_b32_vid_k4", tmp_path / "clip_b32_txt_k4"
    video_dir.mkdir()
    query_dir.mkdir()
    rng = np.random.default_rng(10)
    document, official = {}, {}
    for name in case_ids("r2_highlight"):
        _, arrays = load_case("r2_highlight", name)
        np.save(video_dir / f"{name}.npy", arrays["video"][0])  # (T, K*P*C) float16, as the official files
        np.save(query_dir / f"{name}.npy", arrays["query"][0])  # (L, K*Cq) float16
        clips = arrays["video"].shape[1]
        official[name] = arrays["saliency"]
        if dataset == "youtube":
            document[name] = {"match": [int(v) for v in rng.choice([-1, 1], clips)]}
        else:
            document[name] = {"title": name, "anno": rng.integers(1, 6, size=(clips, 20)).tolist()}
    anno = tmp_path / f"{dataset}_anno.json"
    anno.write_text(json.dumps(document))

    report = evaluate_annotations(_highlight_grounder(), anno, video_features=video_dir, query_features=query_dir,
                                  progress=False)

    assert not report.failures and report.evaluated == len(document)
    for prediction in report.predictions:
        np.testing.assert_allclose(prediction["pred_saliency_scores"], official[prediction["vid"]], atol=2e-6)
    # The score of the official outputs, by the official formula (models.evaluation, unit-tested against it).
    saliencies = [torch.from_numpy(official[name]) for name in document]
    if dataset == "youtube":
        expected = highlight_map(saliencies, [document[n]["match"] for n in document])
    else:
        expected = tvsum_top5_map(saliencies, [document[n]["anno"] for n in document])
    assert report.metrics == {"mAP": expected}
    assert report.table.splitlines()[2].split() == ["mAP", repr(expected)]
