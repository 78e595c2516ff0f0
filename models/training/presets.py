"""The official training configs as data: one :class:`TrainPreset` per dataset family.

Values come from ``configs/_base_/{models/model.py, schedules/default.py, datasets/<ds>.py}`` and the dataset's
own config (``configs/<ds>/r2_tuning_<ds>.py``). A preset also carries the inference settings the trained model is
registered with (fps, rounding unit, NMS), so what you train is served the way its dataset is evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from .labels import LabelConfig
from .objective import LossConfig
from .optim import OptimConfig
from .regularization import RegularizationConfig


@dataclass(frozen=True)
class TrainPreset:
    """Everything a dataset's official config fixes about training and serving its model."""

    name: str
    dataset: str  # the dataset's display name (ModelSpec.dataset of the registered model)
    kind: str  # "moments" (QVHighlights-style annotations) or "highlights" (YouTube Highlights / TVSum)
    strides: tuple[int, ...]
    use_tef: bool
    coord_head: bool
    merge_cls_sal: bool
    label: LabelConfig
    loss: LossConfig
    optim: OptimConfig
    reg: RegularizationConfig
    batch_size: int  # data.train.loader.batch_size (one GPU)
    repeat: int  # RepeatDataset times (QVHighlights repeats its training set 4x per epoch)
    select_metric: str  # the validation number the kept model ("model.pth") is chosen by, higher is better
    unit: float | None  # boundary rounding of the dataset's evaluation
    nms_type: str
    nms_thres: float
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def outputs(self) -> str:
        return "moments+saliency" if self.coord_head else "saliency"

    def with_fps(self, fps: float) -> TrainPreset:
        return replace(self, label=replace(self.label, fps=fps))


_MOMENTS = dict(kind="moments", strides=(1, 2, 4, 8), use_tef=True, coord_head=True, merge_cls_sal=True,
                select_metric="MR-full-mAP")
_HIGHLIGHTS = dict(kind="highlights", strides=(1,), use_tef=False, coord_head=False, merge_cls_sal=False,
                   loss=LossConfig.highlight(), reg=RegularizationConfig(), batch_size=4, repeat=1,
                   select_metric="mAP", unit=None, nms_type="normal", nms_thres=0.7)

PRESETS: dict[str, TrainPreset] = {
    preset.name: preset for preset in (
        TrainPreset(name="qvhighlights", dataset="QVHighlights", **_MOMENTS,  # type: ignore[arg-type]
                    label=LabelConfig(fps=0.5, min_video_len=5.0), loss=LossConfig(), optim=OptimConfig(),
                    reg=RegularizationConfig(dropout=0.5), batch_size=128, repeat=4, unit=2.0, nms_type="normal",
                    nms_thres=0.7),
        TrainPreset(name="charades", dataset="Charades-STA", **_MOMENTS,  # type: ignore[arg-type]
                    label=LabelConfig(fps=1.0, min_video_len=5.0), loss=LossConfig(sal_weight=0.01),
                    optim=OptimConfig(lr=2.5e-4, epochs=50, lr_steps=(30,)), reg=RegularizationConfig(dropout=0.35),
                    batch_size=32, repeat=1, unit=0.1, nms_type="linear", nms_thres=0.7),
        TrainPreset(name="youtube", dataset="YouTube Highlights", **_HIGHLIGHTS,  # type: ignore[arg-type]
                    label=LabelConfig(fps=0.5, min_video_len=-1.0),
                    optim=OptimConfig(epochs=200, lr_steps=(), warmup_iters=50),
                    notes="the official features use one frame per annotated clip; videos encoded here use the "
                          "model's fps and take each clip's label by time"),
        TrainPreset(name="tvsum", dataset="TVSum", **_HIGHLIGHTS,  # type: ignore[arg-type]
                    label=LabelConfig(fps=0.5, min_video_len=-1.0),
                    optim=OptimConfig(epochs=500, lr_steps=(), warmup_iters=50)),
    )
}
"""``lr_schedule=None`` of the highlight configs is an empty ``lr_steps`` (the lr stays at its base value)."""


def get_preset(name: str) -> TrainPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown training preset {name!r}; one of {', '.join(PRESETS)}") from None


def preset_for_format(annotation_format: str) -> TrainPreset:
    """The preset an annotation format implies when none is named."""
    return PRESETS[{"qvhighlights": "qvhighlights", "charades-sta": "charades", "youtube": "youtube",
                    "tvsum": "tvsum"}[annotation_format]]
