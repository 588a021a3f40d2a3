"""Samplers of the latent space beyond the prior.

`GMMSampler` is the ex-post density estimator of Ghosh et al. 2020 ("From Variational to Deterministic
Autoencoders", sec. 4): a Gaussian mixture fitted on the latent means of the training images. Decoding its
samples instead of N(0, I) draws avoids the holes between the aggregate posterior and the prior, and
usually lowers FID. Fitting is scikit-learn's `GaussianMixture`; sampling uses its own seeded generator and
returns the draws shuffled (scikit-learn's `sample` returns them grouped by component).
"""

from __future__ import annotations

import numpy as np
from sklearn.mixture import GaussianMixture

from ..errors import VaelabError


class GMMSampler:
    """A Gaussian mixture over latent codes: ``GMMSampler(10).fit(z_train).sample(n)`` -> (n, D)."""

    def __init__(self, n_components: int = 10, covariance_type: str = "full", seed: int = 0, reg_covar: float = 1e-6):
        if covariance_type not in ("full", "diag", "tied", "spherical"):
            raise VaelabError(f"unknown covariance_type '{covariance_type}'", "use full, diag, tied or spherical")
        if n_components < 1:
            raise VaelabError(f"n_components is {n_components}", "use at least one component")
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.seed = seed
        self.reg_covar = reg_covar

    def fit(self, z: np.ndarray) -> GMMSampler:
        """Fit on latent codes (N, D); fewer points than components lowers the component count to N."""
        z = np.asarray(z, dtype=np.float64)
        if z.ndim != 2 or len(z) < 2:
            raise VaelabError(f"the GMM sampler needs latent codes of shape (N, D) with N >= 2, got {z.shape}")
        k = min(self.n_components, len(z))
        gm = GaussianMixture(
            k, covariance_type=self.covariance_type, reg_covar=self.reg_covar, random_state=self.seed, n_init=1
        )
        gm.fit(z)
        self.mixture_ = gm
        self.weights_ = gm.weights_
        self.means_ = gm.means_
        self.covariances_ = _full_covariances(gm)  # (K, D, D) whatever the covariance type
        self._rng = np.random.default_rng(self.seed)
        return self

    def sample(self, n: int, return_components: bool = False, temperature: float = 1.0, rng: np.random.Generator | None = None):
        """`n` draws (n, D) float32 from the fitted mixture, in random order (and their components (n,)).

        ``temperature`` scales every component's spread (its covariance by temperature^2); ``rng`` (default
        the sampler's own stream, seeded at fit) makes one draw reproducible on its own."""
        if not hasattr(self, "mixture_"):
            raise VaelabError("the GMM sampler is not fitted", "call .fit(z) first")
        rng = self._rng if rng is None else rng
        counts = rng.multinomial(n, self.weights_ / self.weights_.sum())
        parts, comps = [], []
        for c, m in enumerate(counts):
            if m:
                draws = rng.multivariate_normal(self.means_[c], self.covariances_[c], size=m, method="eigh")
                parts.append(self.means_[c] + temperature * (draws - self.means_[c]))
                comps.append(np.full(m, c))
        z = np.concatenate(parts) if parts else np.zeros((0, self.means_.shape[1]))
        comp = np.concatenate(comps) if comps else np.zeros(0, dtype=int)
        order = rng.permutation(len(z))
        z, comp = z[order].astype(np.float32), comp[order]
        return (z, comp) if return_components else z

    def mean(self) -> np.ndarray:
        """The mixture's mean (D,)."""
        return self.weights_ @ self.means_

    def covariance(self) -> np.ndarray:
        """The mixture's covariance (D, D): sum_k w_k (S_k + m_k m_k^T) - m m^T."""
        m = self.mean()
        second = np.einsum("k,kij->ij", self.weights_, self.covariances_ + np.einsum("ki,kj->kij", self.means_, self.means_))
        return second - np.outer(m, m)


class ClassGMMSampler:
    """One `GMMSampler` per class: z | y drawn from a mixture fitted to the training latents of class y.

    For a conditional VAE the encoder's codes of one class rarely fill N(0, I); drawing z where that class's
    codes really lie gives class-conditional samples that look like the class (`vaelab sample --sampler gmm`,
    and the `gmm` entry of evaluate's conditional accuracy)."""

    def __init__(self, n_components: int = 5, covariance_type: str = "full", seed: int = 0):
        self.n_components, self.covariance_type, self.seed = n_components, covariance_type, seed

    def fit(self, z: np.ndarray, labels: np.ndarray, num_classes: int, class_names: list[str] | None = None) -> ClassGMMSampler:
        z, labels = np.asarray(z), np.asarray(labels)
        self.samplers_ = []
        for k in range(num_classes):
            zk = z[labels == k]
            if len(zk) < 2:
                name = class_names[k] if class_names and k < len(class_names) else str(k)
                raise VaelabError(
                    f"class {name} has {len(zk)} training latent(s); a per-class GMM needs at least 2",
                    "train on data with every class present, or sample from the prior",
                )
            self.samplers_.append(GMMSampler(min(self.n_components, len(zk)), self.covariance_type, self.seed + k).fit(zk))
        return self

    def sample(self, labels: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        """One draw per entry of `labels` (n,), from that class's mixture: (n, D) float32, in the labels' order."""
        if not hasattr(self, "samplers_"):
            raise VaelabError("the per-class GMM sampler is not fitted", "call .fit(z, labels, num_classes) first")
        labels = np.asarray(labels)
        out = np.zeros((len(labels), self.samplers_[0].means_.shape[1]), np.float32)
        for k, sampler in enumerate(self.samplers_):
            idx = np.flatnonzero(labels == k)
            if len(idx):
                out[idx] = sampler.sample(len(idx), temperature=temperature)
        return out


def _full_covariances(gm: GaussianMixture) -> np.ndarray:
    k, d = gm.means_.shape
    cov = gm.covariances_
    if gm.covariance_type == "full":
        return np.asarray(cov)
    if gm.covariance_type == "tied":
        return np.broadcast_to(cov, (k, d, d)).copy()
    if gm.covariance_type == "diag":
        return np.stack([np.diag(c) for c in cov])
    return np.stack([np.eye(d) * c for c in cov])  # spherical
