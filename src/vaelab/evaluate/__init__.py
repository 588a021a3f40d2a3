"""Evaluation: ELBO terms, importance-sampled NLL, reconstruction quality, FID with a domain feature network.

    from vaelab.evaluate import evaluate_run
    result = evaluate_run("runs/mnist-148-z2", split="test", nll_samples=100)
    result["nll"]["nll"], result["fid"]["gmm"]
"""

from .features import (
    FeatureNet,
    TrainedFeatureNet,
    ensure_feature_net,
    load_feature_net,
    save_feature_net,
    train_feature_net,
)
from .fid import fid, frechet_distance, precision_recall
from .likelihood import active_units, bits_per_dim, importance_sampled, likelihood_terms
from .reconstruction import psnr_per_image, reconstruction_metrics, ssim_per_image
from .run import evaluate_run

__all__ = [
    "FeatureNet",
    "TrainedFeatureNet",
    "active_units",
    "bits_per_dim",
    "ensure_feature_net",
    "evaluate_run",
    "fid",
    "frechet_distance",
    "importance_sampled",
    "likelihood_terms",
    "load_feature_net",
    "precision_recall",
    "psnr_per_image",
    "reconstruction_metrics",
    "save_feature_net",
    "ssim_per_image",
    "train_feature_net",
]
