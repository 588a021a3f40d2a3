"""Thresholds on anomaly scores and how well the scores separate normal images from anomalies.

Scores are oriented so that larger = more anomalous; anomalies are the positives (label 1). AUROC, AUPRC
(average precision, anomalies as the positive class) and the ROC curve are scikit-learn's.
"""

from __future__ import annotations

import numpy as np

from ..errors import VaelabError


def threshold_at_fpr(normal_scores: np.ndarray, fpr: float) -> float:
    """The smallest threshold t such that at most a share `fpr` of the normal scores lie above it.

    With the n normal scores sorted, m = floor(n * fpr) of them may be flagged (score > t): t is the
    (n - m)-th smallest, so exactly m are above it when no scores tie. The realised FPR is m / n <= fpr.
    """
    s = np.sort(np.asarray(normal_scores, np.float64))
    s = s[np.isfinite(s)]
    if not 0 <= fpr < 1:
        raise VaelabError(f"--fpr is {fpr}", "give a false-positive rate in [0, 1), e.g. 0.05")
    if len(s) == 0:
        raise VaelabError("no normal images to calibrate the threshold on", "give a validation split with normal images")
    m = int(np.floor(len(s) * fpr + 1e-9))
    return float(s[len(s) - m - 1])


def threshold_at_quantile(scores: np.ndarray, quantile: float) -> float:
    """The `quantile` of the calibration scores (all of them, normal or not): a share 1 - q is flagged."""
    s = np.asarray(scores, np.float64)
    s = s[np.isfinite(s)]
    if not 0 < quantile < 1:
        raise VaelabError(f"--quantile is {quantile}", "give a share in (0, 1), e.g. 0.95 flags the top 5%")
    if len(s) == 0:
        raise VaelabError("no images to calibrate the threshold on", "give a validation split with images")
    return float(np.quantile(s, quantile))


def flag(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean (N,): score above the threshold (NaN scores are flagged: an image the model cannot score)."""
    s = np.asarray(scores, np.float64)
    return ~(s <= threshold)


def fpr_at_tpr(is_anomaly: np.ndarray, scores: np.ndarray, tpr: float = 0.95) -> float:
    """The false-positive rate at the first threshold that flags at least a share `tpr` of the anomalies."""
    from sklearn.metrics import roc_curve

    fprs, tprs, _ = roc_curve(is_anomaly, scores)
    return float(fprs[np.searchsorted(tprs, tpr, side="left")])


def detection_metrics(is_anomaly: np.ndarray, scores: np.ndarray) -> dict:
    """AUROC, AUPRC (anomalies positive) and FPR at 95% TPR of scores against 0/1 labels (1 = anomaly)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(is_anomaly).astype(int)
    s = np.nan_to_num(np.asarray(scores, np.float64), nan=np.inf, posinf=np.finfo(np.float64).max)
    if y.min(initial=1) == y.max(initial=0):
        raise VaelabError("the scored images are all normal or all anomalies: AUROC needs both", "score data with both kinds")
    return {
        "auroc": float(roc_auc_score(y, s)),
        "auprc": float(average_precision_score(y, s)),
        "fpr_at_95_tpr": fpr_at_tpr(y, s, 0.95),
        "n_normal": int((y == 0).sum()),
        "n_anomalies": int((y == 1).sum()),
    }


def roc_points(is_anomaly: np.ndarray, scores: np.ndarray, max_points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of the ROC curve, thinned to at most `max_points` (for figures and JSON)."""
    from sklearn.metrics import roc_curve

    s = np.nan_to_num(np.asarray(scores, np.float64), nan=np.inf, posinf=np.finfo(np.float64).max)
    fprs, tprs, _ = roc_curve(np.asarray(is_anomaly).astype(int), s)
    if len(fprs) > max_points:
        idx = np.unique(np.linspace(0, len(fprs) - 1, max_points).round().astype(int))
        fprs, tprs = fprs[idx], tprs[idx]
    return fprs, tprs
