"""Evaluation terms of the families without a likelihood bound to importance-sample (a deterministic encoder,
a quantised latent): the model says why in ``model.no_density`` and evaluate reports these instead.

``point_terms`` scores each image's reconstruction from its code, -log p(x | z = E(x)), in the same
`LikelihoodTerms` shape the rest of the evaluation reads (the bound itself is NaN). A VQ model also reports
its own bound, log p(x|z_q) + log p(z_q) with the learned code prior (``model.code_bound``), when it has one.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data import to_float
from .likelihood import LikelihoodTerms


@torch.no_grad()
def point_terms(model, images: torch.Tensor, labels: torch.Tensor | None = None, *, batch_size: int = 500) -> LikelihoodTerms:
    """Per image: -log p(x|z) at the encoder's code, and the code (N, D); log p(x) and the KL are NaN / 0."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    use_y = labels is not None and getattr(model, "conditional", False)
    recon, means = [], []
    for s in range(0, images.shape[0], batch_size):
        x = to_float(images[s : s + batch_size]).to(device)
        y = labels[s : s + batch_size].to(device) if use_y else None
        z = model.encode(x, y).mean
        params = model.decode(z, y, context=x) if getattr(model, "autoregressive", False) else model.decode(z, y)
        recon.append((-model.likelihood.log_prob(params, x)).double().cpu())
        means.append(z.float().cpu())
    model.train(was_training)
    rec = torch.cat(recon).numpy()
    return LikelihoodTerms(
        log_px=np.full(len(rec), np.nan), recon=rec, kl=np.zeros(len(rec)), mean=torch.cat(means).numpy(), k=0
    )


def skipped_nll(reason: str) -> dict:
    return {"k": 0, "nll": float("nan"), "bits_per_dim": float("nan"), "elbo": float("nan"), "skipped": reason}
