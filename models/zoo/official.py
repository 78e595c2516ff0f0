"""The official model zoo as one table of data (README "Model Zoo" of github.com/yeliudev/R2-Tuning; settings
from its ``configs/``)."""

from __future__ import annotations

from typing import Any

from .spec import ModelSpec, NmsType, Outputs

OFFICIAL_HUB_DIR = "https://huggingface.co/yeliudev/R2-Tuning/resolve/main/checkpoints/"

_MR: Outputs = "moments+saliency"
_HL: Outputs = "saliency"
_YOUTUBE_FPS_NOTE = (
    "official features use a per-video rate (frames_224_auto: one frame per annotated clip, i.e. number of clips "
    "/ duration); `r2tuning eval` samples each annotated video at that rate, and 0.5 fps is the default where no "
    "annotation gives it (uploads, `r2tuning ground`)"
)

# Moment retrieval: name, dataset, file stem, sha256 prefix, fps, unit, nms type.
# fps/unit come from configs/_base_/datasets/<ds>.py; NMS is the Grounding.evaluate default (normal, 0.7) unless
# the model config overrides it with `nms_cfg=dict(_delete_=True, type='linear')` (which has no threshold).
_MOMENT_MODELS: tuple[tuple[str, str, str, str, float, float | None, NmsType], ...] = (
    ("qvhighlights", "QVHighlights", "qvhighlights", "ed516355", 0.5, 2.0, "normal"),
    ("charades", "Charades-STA", "charades", "1de02112", 1.0, 0.1, "linear"),
    ("ego4d", "Ego4D-NLQ", "ego4d", "6a6f5754", 0.5, None, "linear"),
    ("tacos", "TACoS", "tacos", "81759b55", 0.5, None, "linear"),
)
# Highlight detection, one checkpoint per domain: config domain code, sha256 prefix, domain title.
_YOUTUBE_DOMAINS: tuple[tuple[str, str, str], ...] = (
    ("dog", "702bd293", "Dog"),
    ("gym", "ff68b1b3", "Gymnastics"),
    ("par", "27442af0", "Parkour"),
    ("ska", "dad28398", "Skating"),
    ("ski", "df2edc4c", "Skiing"),
    ("sur", "d384d8b2", "Surfing"),
)
_TVSUM_DOMAINS: tuple[tuple[str, str, str], ...] = (
    ("BK", "45b59440", "Beekeeping"),
    ("BT", "13683fdf", "Attempting bike tricks"),
    ("DS", "d11b33d3", "Dog show"),
    ("FM", "2c8c119d", "Flash mob gathering"),
    ("GA", "58e79858", "Grooming an animal"),
    ("MS", "d9b4f8fa", "Making sandwich"),
    ("PK", "1830ce03", "Parkour"),
    ("PR", "51d78fc9", "Parade"),
    ("VT", "0069d8d3", "Changing vehicle tire"),
    ("VU", "6f8ebb4b", "Getting vehicle unstuck"),
)


def _official(name: str, dataset: str, domain: str | None, stem: str, prefix: str, **settings: Any) -> ModelSpec:
    filename = f"r2_tuning_{stem}-{prefix}.pth"
    # The frames the checkpoints were trained and evaluated on come from the official feature extraction.
    return ModelSpec(
        name=name,
        dataset=dataset,
        domain=domain,
        filename=filename,
        url=OFFICIAL_HUB_DIR + filename,
        hash_prefix=prefix,
        preprocess="extract",
        **settings,
    )


OFFICIAL_MODELS: tuple[ModelSpec, ...] = (
    *(
        _official(name, dataset, None, stem, prefix, fps=fps, unit=unit, nms_type=nms, nms_thres=0.7, outputs=_MR)
        for name, dataset, stem, prefix, fps, unit, nms in _MOMENT_MODELS
    ),
    # Highlight-only: strides (1,), no TEF, no coordinate head => saliency only, so unit/NMS never apply.
    *(
        _official(
            f"youtube-{code}",
            "YouTube Highlights",
            code,
            f"youtube_{code}",
            prefix,
            fps=0.5,
            unit=None,
            nms_type="normal",
            nms_thres=0.7,
            outputs=_HL,
            notes=f"{title}. {_YOUTUBE_FPS_NOTE}",
        )
        for code, prefix, title in _YOUTUBE_DOMAINS
    ),
    *(
        _official(
            f"tvsum-{code.lower()}",
            "TVSum",
            code,
            f"tvsum_{code.lower()}",
            prefix,
            fps=0.5,
            unit=None,
            nms_type="normal",
            nms_thres=0.7,
            outputs=_HL,
            notes=title,
        )
        for code, prefix, title in _TVSUM_DOMAINS
    ),
)
OFFICIAL_BY_NAME = {spec.name: spec for spec in OFFICIAL_MODELS}
