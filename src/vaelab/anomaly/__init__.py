"""Anomaly detection with a trained VAE: per-image scores, thresholds, metrics (`vaelab anomaly`).

    from vaelab.anomaly import detect
    result = detect("runs/fashion", outliers="mnist", scores="complexity,nll")
    result.report["scores"]["complexity"]["auroc"]
"""

from .detect import AnomalyResult, detect, result_name, single_image_scores
from .metrics import detection_metrics, flag, fpr_at_tpr, roc_points, threshold_at_fpr, threshold_at_quantile
from .scores import (
    DEFAULT_SCORES,
    SCORES,
    code_length_bits,
    complexity_score,
    parse_scores,
    perturb,
    score_images,
)

__all__ = [
    "DEFAULT_SCORES",
    "SCORES",
    "AnomalyResult",
    "code_length_bits",
    "complexity_score",
    "detect",
    "detection_metrics",
    "flag",
    "fpr_at_tpr",
    "parse_scores",
    "perturb",
    "result_name",
    "roc_points",
    "score_images",
    "single_image_scores",
    "threshold_at_fpr",
    "threshold_at_quantile",
]
