"""2-D maps of a latent space, and the way back from a point of the map to a latent code.

    identity  a 2-D latent is its own map
    pca       scikit-learn PCA; a map point goes back through the inverse transform (the code in the plane
              of the two leading components, the other directions at the data mean)
    tsne      scikit-learn t-SNE (van der Maaten & Hinton 2008); no inverse: a map point goes back to the
              code of the nearest data point
    umap      umap-learn when installed (McInnes et al. 2018); back through the nearest data point too

`project(z, method)` returns a `Projection` whose state is plain arrays (`to_arrays` / `from_arrays`), so a
caller can cache it in a file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import VaelabError

METHODS = ("auto", "identity", "pca", "tsne", "umap")


@dataclass
class Projection:
    """Map coordinates of N codes (N, 2), and what takes a map point back to a latent code."""

    method: str
    xy: np.ndarray  # (N, 2) float32
    z: np.ndarray  # (N, D) the codes that were mapped (the nearest-point inverse uses them)
    mean: np.ndarray | None = None  # PCA: (D,)
    components: np.ndarray | None = None  # PCA: (2, D)
    explained: np.ndarray | None = None  # PCA: explained variance ratio of the two axes

    @property
    def inverse(self) -> str:
        """How a map point becomes a code: 'identity', 'pca-inverse' or 'nearest'."""
        return {"identity": "identity", "pca": "pca-inverse"}.get(self.method, "nearest")

    def to_latent(self, points) -> np.ndarray:
        """Map points (M, 2) -> latent codes (M, D)."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        if self.method == "identity":
            return p.astype(np.float32)
        if self.method == "pca":
            return (self.mean + p @ self.components).astype(np.float32)
        d2 = ((p[:, None, :] - self.xy[None].astype(np.float64)) ** 2).sum(-1)  # (M, N)
        return self.z[d2.argmin(1)].astype(np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {"method": np.array(self.method), "xy": self.xy, "z": self.z}
        for key in ("mean", "components", "explained"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    @classmethod
    def from_arrays(cls, arrays) -> Projection:
        get = arrays.get if hasattr(arrays, "get") else (lambda k: arrays[k] if k in arrays else None)
        return cls(str(arrays["method"]), np.asarray(arrays["xy"]), np.asarray(arrays["z"]),
                   get("mean"), get("components"), get("explained"))


def resolve_method(method: str, latent_dim: int) -> str:
    """'auto' -> identity for a 2-D latent, else pca; a clear error for unknown or unavailable methods."""
    if method not in METHODS:
        raise VaelabError(f"unknown map method '{method}'", f"use one of: {', '.join(METHODS)}")
    if method == "auto":
        return "identity" if latent_dim == 2 else "pca"
    if method == "identity" and latent_dim != 2:
        raise VaelabError(f"the latent space has {latent_dim} dimensions, so it is not its own 2-D map", "use pca or tsne")
    if method == "umap":
        from ..extras import missing

        if missing("umap"):
            raise VaelabError("the umap map needs umap-learn, which is not installed",
                              "pip install 'vaelab[umap]' (the umap extra), or use --method pca or tsne")
    return method


def project(z: np.ndarray, method: str = "auto", seed: int = 0) -> Projection:
    """The 2-D map of codes z (N, D) by `method` (see the module docstring)."""
    z = np.asarray(z, dtype=np.float32)
    if z.ndim != 2 or len(z) < 2:
        raise VaelabError(f"codes of shape {z.shape}", "map at least two images")
    method = resolve_method(method, z.shape[1])
    if method == "identity":
        return Projection("identity", z.copy(), z)
    if z.shape[1] == 1:  # a 1-D latent: the code against 0, and the inverse ignores y
        return Projection("pca", np.stack([z[:, 0], np.zeros(len(z), np.float32)], 1), z,
                          np.zeros(1, np.float32), np.array([[1.0], [0.0]], np.float32), np.array([1.0, 0.0]))
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=seed).fit(z)
        xy = pca.transform(z).astype(np.float32)
        return Projection("pca", xy, z, pca.mean_.astype(np.float32), pca.components_.astype(np.float32),
                          pca.explained_variance_ratio_.astype(np.float32))
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (len(z) - 1) / 3)))
        xy = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(z).astype(np.float32)
        return Projection("tsne", xy, z)
    import umap

    xy = umap.UMAP(n_components=2, random_state=seed).fit_transform(z).astype(np.float32)
    return Projection("umap", xy, z)
