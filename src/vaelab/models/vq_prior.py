"""A VQ run's prior over code maps: p(z_q) = prod_i p(k_i | k_<i), an autoregressive model in raster order over
the (H, W) map of code indices (van den Oord et al. 2017, sec. 3.2, with a PixelCNN; here the project's masked
convolutions, `autoregressive.MaskedConv2d`). Fitted after training by ``vaelab train-prior RUN`` and saved in
``RUN/samplers/vq-prior.safetensors``; ``vaelab sample --sampler vq-prior`` draws code maps from it, and
evaluate reports the bound -log p(x) <= -log p(x|z_q) - log p(z_q) (a deterministic encoder: the one-point
bound of the VQ-VAE), in nats per image and bits per dimension.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import VaelabError
from .autoregressive import MaskedConv2d

PRIOR_FILE = "vq-prior.safetensors"


class CodePrior(nn.Module):
    """Code maps (B, H, W) of K codes -> logits (B, K, H, W); logit i sees only the codes before i."""

    def __init__(self, k: int, width: int = 32, layers: int = 3, kernel: int = 5):
        super().__init__()
        self.k, self.width, self.layers, self.kernel = k, width, layers, kernel
        self.embed = nn.Embedding(k, width)
        self.inp = MaskedConv2d("A", width, width, kernel, 1)
        self.body = nn.ModuleList(MaskedConv2d("B", width, width, 3, 1) for _ in range(layers - 1))
        self.out = MaskedConv2d("B", width, k, 1, 1)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        h = self.act(self.inp(self.embed(codes).permute(0, 3, 1, 2)))
        for layer in self.body:
            h = h + self.act(layer(h))
        return self.out(h)

    def log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        """log p(code map) in nats, (B,): the sum of the conditionals, in one parallel pass."""
        logp = F.log_softmax(self(codes), dim=1)
        return logp.gather(1, codes.unsqueeze(1)).squeeze(1).flatten(1).sum(-1)

    @torch.no_grad()
    def sample(self, n: int, shape: tuple[int, int], generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """n code maps (n, H, W), one position at a time in raster order."""
        codes = torch.zeros(n, *shape, dtype=torch.long)
        for i in range(shape[0]):
            for j in range(shape[1]):
                probs = F.softmax(self(codes)[:, :, i, j] / temperature, dim=1)
                codes[:, i, j] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return codes


@torch.no_grad()
def code_maps(model, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    from ..data import to_float

    device = next(model.parameters()).device
    model.eval()
    out = [model.encode(to_float(images[s : s + batch_size]).to(device)).indices.cpu() for s in range(0, len(images), batch_size)]
    return torch.cat(out)


def train_prior(run, epochs: int = 20, batch_size: int = 128, lr: float = 1e-3, seed: int = 0, width: int = 32, layers: int = 3) -> dict:
    """Fit the code prior on the training split's code maps and save it in the run; returns a summary."""
    from ..latent.expost import CACHE_DIR, _stamp, _write_cache

    model = run.model
    if getattr(model, "quantizer", None) is None:
        raise VaelabError(f"{run.path} is not a VQ run (model.latent=vq)", "train-prior fits a prior over code maps; use --sampler gmm or maf for a continuous latent")
    train = run.data().split("train")
    val = run.data().split("val") if run.data().has_split("val") else None
    codes = code_maps(model, train.images)
    torch.manual_seed(seed)
    prior = CodePrior(model.quantizer.k, width, layers)
    opt = torch.optim.Adam(prior.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(codes), generator=g).split(batch_size):
            loss = -prior.log_prob(codes[idx]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    prior.eval()
    with torch.no_grad():
        train_nll = float(-prior.log_prob(codes).mean())
        val_nll = float(-prior.log_prob(code_maps(model, val.images)).mean()) if val is not None and len(val) else None
    meta = {**_stamp(run), "sampler": "vq-prior", "k": prior.k, "width": width, "layers": layers, "kernel": prior.kernel}
    path = Path(run.path) / CACHE_DIR / PRIOR_FILE
    _write_cache(path, prior.state_dict(), meta)
    return {"path": str(path), "train_nll": train_nll, "val_nll": val_nll, "n_train": len(codes), "epochs": epochs,
            "uniform_nll": codes[0].numel() * math.log(prior.k)}


def load_prior(run) -> CodePrior:
    import json

    from safetensors import safe_open

    from ..latent.expost import CACHE_DIR, _stamp

    path = Path(run.path) / CACHE_DIR / PRIOR_FILE
    if not path.is_file():
        raise VaelabError(f"{run.path} has no code prior yet", f"run: vaelab train-prior {run.path}")
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("vaelab", "{}"))
        state = {k: f.get_tensor(k) for k in f.keys()}
    if {k: meta.get(k) for k in _stamp(run)} != _stamp(run):
        raise VaelabError(f"the code prior of {run.path} was fitted on another checkpoint", f"refit it: vaelab train-prior {run.path}")
    prior = CodePrior(meta["k"], meta["width"], meta["layers"], meta["kernel"])
    prior.load_state_dict(state)
    return prior.eval()


class CodePriorSampler:
    """--sampler vq-prior: code maps from the run's code prior, looked up in the codebook (n, latent_dim)."""

    name = "vq-prior"

    def __init__(self, run, **_):
        self.model, self.prior = run.model, load_prior(run)

    def sample(self, n, labels=None, generator=None, temperature=1.0) -> torch.Tensor:
        q = self.model.quantizer
        codes = self.prior.sample(n, q.map_shape, generator=generator, temperature=temperature)
        return q.embed(codes.to(q.codebook.device)).cpu()

    def describe(self) -> str:
        h, w = self.model.quantizer.map_shape
        return f"the {h}x{w} code prior"


@torch.no_grad()
def code_bound_terms(run, images: torch.Tensor, batch_size: int = 500, prior: CodePrior | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per image (N,) each, in nats: -log p(x|z_q) at the image's code map, and -log p(z_q) under the code
    prior (their sum bounds -log p(x) from above: p(x) >= p(x|z_q) p(z_q)). Raises without a code prior."""
    from ..data import to_float

    prior = load_prior(run) if prior is None else prior
    model = run.model.eval()
    device = next(model.parameters()).device
    rec, code = [], []
    for s in range(0, len(images), batch_size):
        x = to_float(images[s : s + batch_size]).to(device)
        c = model.encode(x)
        params = model.decode(c.mean, context=x) if getattr(model, "autoregressive", False) else model.decode(c.mean)
        rec.append(-model.likelihood.log_prob(params, x).double().cpu())
        code.append(-prior.log_prob(c.indices.cpu()).double())
    if not rec:
        return np.zeros(0), np.zeros(0)
    return torch.cat(rec).numpy(), torch.cat(code).numpy()


def code_bound(run, images: torch.Tensor, batch_size: int = 500) -> dict | None:
    """-log p(x|z_q) - log p(z_q) per image (mean, nats and bits/dim), or None without a code prior."""
    try:
        prior = load_prior(run)
    except VaelabError:
        return None
    rec, code = code_bound_terms(run, images, batch_size, prior)
    total = float((rec + code).mean())
    dims = math.prod(run.model.image_shape)
    return {"nll": total, "recon": float(rec.mean()), "code_nll": float(code.mean()), "bits_per_dim": total / (dims * math.log(2))}


__all__ = ["CodePrior", "CodePriorSampler", "code_bound", "code_bound_terms", "load_prior", "train_prior"]
