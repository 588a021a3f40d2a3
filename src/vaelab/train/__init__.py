"""Training: `fit(cfg)` runs the loop (loop.py) with callbacks (callbacks.py) and atomic checkpoints."""

from .callbacks import Callback, default_callbacks
from .checkpoint import load_checkpoint, save_checkpoint
from .loop import TrainingDiverged, TrainingInterrupted, TrainState, evaluate_terms, fit, kl_weight

__all__ = [
    "Callback",
    "TrainState",
    "TrainingDiverged",
    "TrainingInterrupted",
    "default_callbacks",
    "evaluate_terms",
    "fit",
    "kl_weight",
    "load_checkpoint",
    "save_checkpoint",
]
