"""Reconstruction quality from the posterior mean: MSE per pixel, PSNR and SSIM per image, and per class.

SSIM is torchmetrics' Gaussian-window SSIM map (sigma 1.5, 11 x 11, K1 = 0.01, K2 = 0.03, data range 1)
averaged over the pixels whose window lies inside the image, as in Wang et al. 2004 and scikit-image's
`structural_similarity` (torchmetrics itself averages the reflect-padded border too, which reads about
0.003 higher on 28 px digits). PSNR is 10 log10(1 / MSE) per image, capped at `PSNR_CAP` dB for a perfect
reconstruction; the reported PSNR is the mean of the per-image values.

``ssim_box7`` is the same index with scikit-image's default window (7 x 7 uniform, sample covariance, the
border left out), the one most scripts call with `structural_similarity(a, b, data_range=1)`: it reads
about 0.045 higher than the Gaussian one on blurry 28 px digits, so compare a published SSIM on the scale
its authors used (the MNIST 1/4/8 seed's 0.694 is on this one, as far as its code can be read).
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from ..data import to_float
from ..data.budget import release_free_memory
from ..data.imageset import bounded_batch

PSNR_CAP = 100.0  # dB, the PSNR of an image reconstructed exactly (MSE 0 would be infinite)
SSIM_SIGMA = 1.5
SSIM_PAD = int(3.5 * SSIM_SIGMA + 0.5)  # half-width of torchmetrics' (and scikit-image's) Gaussian window
BOX = 7  # scikit-image's default uniform window


def ssim_per_image(preds: torch.Tensor, target: torch.Tensor, window: str = "gaussian") -> torch.Tensor:
    """SSIM of each image pair, (B, C, H, W) in [0, 1] -> (B,), over the window-valid region (see module doc).

    ``window``: "gaussian" (sigma 1.5, 11 x 11) or "box7" (7 x 7 uniform, scikit-image's default)."""
    if window == "box7":
        kw, p = {"gaussian_kernel": False, "kernel_size": BOX}, BOX // 2
    else:
        kw, p = {"sigma": SSIM_SIGMA}, SSIM_PAD
    _, full = structural_similarity_index_measure(
        preds.float(), target.float(), data_range=1.0, reduction="none", return_full_image=True, **kw
    )
    if full.shape[-1] > 2 * p and full.shape[-2] > 2 * p:
        full = full[..., p:-p, p:-p]
    return full.flatten(1).mean(1)


def _gaussian_band(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(n - 2 SSIM_PAD, n) matrix whose rows are the 1-D Gaussian window at each valid offset."""
    k = 2 * SSIM_PAD + 1
    g = torch.exp(-0.5 * ((torch.arange(k, dtype=dtype, device=device) - SSIM_PAD) / SSIM_SIGMA) ** 2)
    rows = n - k + 1
    cols = torch.arange(rows, device=device)[:, None] + torch.arange(k, device=device)[None, :]
    return torch.zeros(rows, n, dtype=dtype, device=device).scatter_(1, cols, (g / g.sum()).expand(rows, k))


def ssim_separable(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`ssim_per_image(preds, target)` (the Gaussian window), as two banded matrix products per map.

    The window is separable, so filtering an (H, W) map over the valid region is A_H @ map @ A_W^T. Same
    numbers as torchmetrics' 2-D convolution (the tests hold it to 1e-5), but forward + backward of a batch
    of 128 28-px digits takes about 2 ms on one CPU thread against 250 ms (a single-channel 11 x 11
    convolution's gradient is slow there): the training loss's
    `model.ssim_weight` term uses it. Images under 11 px fall back to `ssim_per_image`."""
    if min(preds.shape[-2:]) <= 2 * SSIM_PAD:
        return ssim_per_image(preds, target)
    x, y = preds.float(), target.float()
    a_h = _gaussian_band(x.shape[-2], x.device, x.dtype)
    a_w = a_h if x.shape[-1] == x.shape[-2] else _gaussian_band(x.shape[-1], x.device, x.dtype)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return a_h @ t @ a_w.T

    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y, cov = blur(x * x) - mu_x**2, blur(y * y) - mu_y**2, blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2  # (K1 L)^2, (K2 L)^2 with data range L = 1
    ssim = (2 * mu_x * mu_y + c1) * (2 * cov + c2) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim.flatten(1).mean(1)


SSIM_ELEMENTS = 1 << 20  # pixel values per SSIM sub-batch


def psnr_per_image(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each image pair with data range 1, (B,), capped at PSNR_CAP."""
    psnr = peak_signal_noise_ratio(preds.float(), target.float(), data_range=1.0, reduction="none", dim=(1, 2, 3))
    return torch.nan_to_num(psnr, posinf=PSNR_CAP).clamp(max=PSNR_CAP)


@torch.no_grad()
def reconstruction_metrics(model, images: torch.Tensor, labels: torch.Tensor | None = None, batch_size: int = 500) -> dict[str, np.ndarray]:
    """Per-image 'mse' (per pixel), 'psnr' (dB), 'ssim' and 'ssim_box7' of the decoded posterior means."""
    device = next(model.parameters()).device
    use_y = labels is not None and getattr(model, "conditional", False)
    out: dict[str, list[torch.Tensor]] = {"mse": [], "psnr": [], "ssim": [], "ssim_box7": []}
    for s in range(0, images.shape[0], batch_size):
        x = to_float(images[s : s + batch_size]).to(device)
        y = labels[s : s + batch_size].to(device) if use_y else None
        r = model.reconstruct(x, y).float().clamp(0, 1)
        out["mse"].append((r - x).pow(2).flatten(1).mean(1).cpu())
        out["psnr"].append(psnr_per_image(r, x).cpu())
        # SSIM's filtered maps take ~70 times an image: sub-batches keep that bounded on large images
        # (MNIST batches are not split)
        step = bounded_batch(len(x), x.shape[1:], SSIM_ELEMENTS)
        for window, key in (("gaussian", "ssim"), ("box7", "ssim_box7")):
            out[key].append(torch.cat([ssim_per_image(r[i : i + step], x[i : i + step], window) for i in range(0, len(x), step)]).cpu())
        release_free_memory()  # bounded memory over many batches of large images (see data.budget)
    return {k: (torch.cat(v).double().numpy() if v else np.zeros(0)) for k, v in out.items()}


def summarize(per_image: dict[str, np.ndarray], labels: np.ndarray | None, class_names: list[str]) -> dict:
    """Means over the set, and per class where labels exist: {mse, psnr, ssim, ssim_box7, per_class{...}}."""
    keys = tuple(k for k in ("mse", "psnr", "ssim", "ssim_box7") if k in per_image)
    out: dict = {k: float(np.mean(per_image[k])) if len(per_image[k]) else float("nan") for k in keys}
    per_class = {}
    if labels is not None and len(class_names):
        for c, name in enumerate(class_names):
            m = labels == c
            if m.any():
                per_class[name] = {k: float(np.mean(per_image[k][m])) for k in keys} | {"n": int(m.sum())}
    out["per_class"] = per_class
    return out
