"""The engine's user-facing error types, gathered so front ends can report them without a traceback."""

from __future__ import annotations


def user_error_types() -> tuple[type[BaseException], ...]:
    """Errors caused by input or environment (bad file, missing weights), not by a bug."""
    from .checkpoint import CheckpointError
    from .clip import ClipLoadError
    from .datasets import AnnotationError
    from .engine import UnknownPreprocessError
    from .eval_runner import EvaluationError
    from .training.checkpoints import TrainingCheckpointError
    from .training.labels import TrainingLabelError
    from .video import VideoError
    from .zoo import ChecksumError, RegistryError, UnknownModelError, WeightsUnavailableError

    return (CheckpointError, ClipLoadError, VideoError, ChecksumError, UnknownModelError, WeightsUnavailableError,
            FileNotFoundError, AnnotationError, UnknownPreprocessError, EvaluationError, TrainingLabelError,
            TrainingCheckpointError, RegistryError)
