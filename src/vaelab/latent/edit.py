"""Latent-space edits shared by `vaelab edit`, `vaelab explore` and notebooks: attribute vectors,
interpolation (linear and spherical) and "image + strength * (B - A)".

Attribute arithmetic is the "smile vector" of White 2016 ("Sampling Generative Networks", sec. 3.3; also
Larsen et al. 2016, sec. 5): the difference between the mean latent code of images with an attribute (set B)
and of those without it (set A), added to another image's code with a strength. Sets are classes of
labelled data, or any user-picked sets of images. Spherical interpolation (slerp, White 2016 sec. 2.2;
Shoemake 1985) follows the great circle between two codes, which keeps the interpolants at the typical
norm of a Gaussian latent instead of passing through its low-norm centre.

    >>> from vaelab import load_run
    >>> from vaelab.latent.edit import edit
    >>> out = edit(load_run("runs/mnist"), images, "4", "9", strength=1.0)   # out.images: (N, C, H, W)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import VaelabError

INTERPOLATIONS = ("linear", "slerp")


def class_index(value, class_names: list[str], num_classes: int | None = None) -> int:
    """A class given by name or index -> its index (one clear error otherwise)."""
    names = [str(n) for n in class_names]
    k = num_classes if num_classes is not None else len(names)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if 0 <= int(value) < k:
            return int(value)
    else:
        text = str(value)
        if text in names:
            return names.index(text)
        if text.lstrip("-").isdigit() and 0 <= int(text) < k:
            return int(text)
    hint = f"use an index 0..{k - 1}" + (f" or a name: {', '.join(names[:20])}" if names else "") if k else "use labelled data"
    raise VaelabError(f"class '{value}' is not one of the {k} classes", hint)


def select(which, labels: np.ndarray | None, class_names: list[str], n: int) -> np.ndarray:
    """The indices of a set of images: a class (name or index; needs labels), or a list of indices / a mask."""
    if isinstance(which, (str, int, np.integer)) and not isinstance(which, bool):
        if labels is None:
            raise VaelabError(f"'{which}' names a class but the images have no labels", "pick the two sets of images by index")
        k = class_index(which, class_names, max(len(class_names), int(labels.max()) + 1 if len(labels) else 0))
        idx = np.flatnonzero(np.asarray(labels) == k)
        if not len(idx):
            raise VaelabError(f"class '{which}' has no images here", "pick another class or other images")
        return idx
    arr = np.asarray(which)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise VaelabError(f"a mask of {arr.shape} for {n} images", "give one boolean per image")
        arr = np.flatnonzero(arr)
    arr = arr.astype(np.int64).ravel()
    if not len(arr):
        raise VaelabError("an empty set of images", "pick at least one image for each side")
    if arr.min() < 0 or arr.max() >= n:
        raise VaelabError(f"image index {int(arr.max() if arr.max() >= n else arr.min())} is out of range", f"use 0..{n - 1}")
    return arr


def attribute_vector(z, source, target, labels: np.ndarray | None = None, class_names: list[str] | None = None) -> np.ndarray:
    """mean(z[target]) - mean(z[source]) (D,): the direction from set A (`source`) to set B (`target`).

    ``z`` is (N, D) codes or a `Latents` (then its labels and class names are used); each set is a class
    (name or index) or a list of image indices / a boolean mask."""
    if hasattr(z, "z") and hasattr(z, "labels"):
        labels = z.labels if labels is None else labels
        class_names = z.class_names if class_names is None else class_names
        z = z.z
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2:
        raise VaelabError(f"latent codes of shape {z.shape}", "give means (N, D)")
    names = list(class_names or [])
    a = select(source, labels, names, len(z))
    b = select(target, labels, names, len(z))
    return (z[b].mean(0) - z[a].mean(0)).astype(np.float32)


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation between codes a and b (D,) at fractions t (T,) -> (T, D) (White 2016, eq. 1):
    sin((1-t) w)/sin(w) a + sin(t w)/sin(w) b, w the angle between a and b; linear when they are parallel."""
    a, b, t = np.asarray(a, np.float64), np.asarray(b, np.float64), np.asarray(t, np.float64)[:, None]
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na < 1e-12 or nb < 1e-12:
        return (1 - t) * a + t * b
    omega = np.arccos(np.clip(a @ b / (na * nb), -1.0, 1.0))
    if np.sin(omega) < 1e-6:
        return (1 - t) * a + t * b
    return (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)


def interpolate(a, b, steps: int = 8, mode: str = "linear") -> np.ndarray:
    """`steps` codes (steps, D) from a to b inclusive, linear or spherical ("slerp")."""
    if mode not in INTERPOLATIONS:
        raise VaelabError(f"unknown interpolation '{mode}'", "use linear or slerp")
    if not 2 <= int(steps) <= 256:
        raise VaelabError(f"steps is {steps}", "use 2..256 steps")
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise VaelabError(f"codes of {a.shape} and {b.shape}", "interpolate codes of one latent space")
    t = np.linspace(0.0, 1.0, int(steps))
    z = slerp(a, b, t) if mode == "slerp" else (1 - t[:, None]) * a + t[:, None] * b
    return z.astype(np.float32)


def gaussian_latent(model) -> bool:
    """Whether the latent space is continuous Gaussian (spherical interpolation makes sense)."""
    return str(getattr(model.cfg, "latent", "gaussian") or "gaussian") == "gaussian"


def snap(model, z):
    """Codes ready to decode: a VQ model's codes snapped to the nearest codebook entry at every position
    (its decoder only ever saw codebook entries, so an interpolant, a shifted code or a map point between
    codes decodes through the nearest code map); any other latent unchanged. Array or tensor (N, D)."""
    q = getattr(model, "quantizer", None)
    if q is None:
        return z
    if isinstance(z, torch.Tensor):
        return q.snap(z)
    with torch.no_grad():
        return q.snap(torch.as_tensor(np.asarray(z, np.float32))).cpu().numpy()


@dataclass
class Edit:
    """What `edit` returns: the edited images (N, C, H, W) in [0, 1], their codes and the vector added."""

    images: torch.Tensor
    z: np.ndarray
    vector: np.ndarray
    to_label: int | None = None


@torch.no_grad()
def edit(run, images, source, target, strength: float = 1.0, latents=None, labels=None) -> Edit:
    """Images moved from set A (`source`) towards set B (`target`) in the run's latent space.

    ``images``: an ImageSet, or an array/tensor (uint8, or float in [0, 1]) in any layout `ImageSet.from_arrays`
    takes. ``latents`` (a `Latents`, default the
    run's training codes) defines the sets: classes by name/index, or lists of indices. A conditional model
    encodes the images as class A (``labels`` overrides) and decodes them as class B; the vector between
    the two sets' mean codes, times ``strength``, is added in either case (a VQ model's result is snapped
    to its codebook before decoding, see `snap`)."""
    from .encode import encode

    if not np.isfinite(strength):
        raise VaelabError(f"strength is {strength}", "use a finite number, e.g. 1.0")
    model = run.model
    x = run.as_model_input(images)[0]  # any layout from_arrays takes, or an ImageSet; checked against the model
    if latents is None:
        ds = run.data()
        latents = encode(run, ds, split="train" if ds.has_split("train") else None)
    vector = attribute_vector(latents, source, target)
    names = list(latents.class_names or run.class_names)
    device = run.device
    y_in = y_out = None
    to_label = None
    if model.conditional:
        k = model.num_classes
        if labels is None:
            if not isinstance(source, (str, int, np.integer)):
                raise VaelabError("a conditional model needs the images' class", "give labels=, or a class as the source set")
            labels = [class_index(source, names, k)] * len(x)
        y_in = torch.as_tensor(np.asarray(labels), device=device).long()
        if isinstance(target, (str, int, np.integer)):
            to_label = class_index(target, names, k)
            y_out = torch.full((len(x),), to_label, device=device, dtype=torch.long)
        else:
            y_out = y_in
    z = model.encode(x.to(device), y_in).mean.float()
    z = snap(model, z + float(strength) * torch.as_tensor(vector, device=device))
    out = model.generate(z, y_out).float().cpu()
    return Edit(out, z.cpu().numpy(), vector, to_label)
