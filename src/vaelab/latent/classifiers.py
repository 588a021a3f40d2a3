"""Classifiers on latent codes, with scikit-learn manners, saved as JSON + npz (never pickle).

    gmm     a Gaussian mixture, one component per class (or n_components_per_class), fitted by
            semi-supervised EM: the labelled points keep their class (fixed one-hot responsibilities),
            the unlabelled points (label -1) are soft
    mlp     the 128-px project's head: latent -> 128 -> classes (ReLU, dropout), trained on K posterior
            samples per image, early stopping on a stratified validation hold-out
    logreg  scikit-learn's LogisticRegression on latent means
    knn     scikit-learn's KNeighborsClassifier on latent means

Every classifier follows scikit-learn: ``__init__`` stores parameters, ``fit(X, y)`` validates and returns
self, fitted state ends in ``_``, ``predict``/``predict_proba``/``score`` (accuracy). ``y`` uses
scikit-learn's semi-supervised convention: -1 marks an unlabelled row (only ``gmm`` uses those rows; the
others drop them). `save`/`load` write ``NAME.npz`` (arrays) and ``NAME.classifier.json`` (parameters,
class names and the run the classifier belongs to).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from scipy.special import logsumexp
from sklearn.base import BaseEstimator, ClassifierMixin

from ..errors import VaelabError, shell

FORMAT = "vaelab-latent-classifier"
VERSION = 1
UNLABELLED = -1


# ---------------------------------------------------------------------------------------------------------
# validation shared by every classifier


def _check_X(X, ndim: tuple[int, ...] = (2,), where: str = "X") -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim not in ndim:
        want = " or ".join(f"{d}-D" for d in ndim)
        raise VaelabError(f"{where} must be a {want} array of latent codes, got shape {X.shape}")
    if len(X) == 0:
        raise VaelabError(f"{where} holds no latent codes", "give at least one image")
    if not np.isfinite(X).all():
        raise VaelabError(f"{where} holds NaN or infinite latent codes", "check the run: its encoder diverged")
    return X


def _check_Xy(X, y, ndim: tuple[int, ...] = (2,)) -> tuple[np.ndarray, np.ndarray]:
    X = _check_X(X, ndim)
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(X):
        raise VaelabError(f"{len(X)} latent codes but labels of shape {y.shape}", "give one label per code (-1: unlabelled)")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.mod(y, 1) == 0):
            raise VaelabError("labels must be class indices (integers; -1 for unlabelled)")
        y = y.astype(np.int64)
    if (y < UNLABELLED).any():
        raise VaelabError(f"labels hold {int(y.min())}", "class indices are >= 0; -1 marks an unlabelled code")
    return X, y.astype(np.int64)


def _labelled_classes(y: np.ndarray, what: str) -> np.ndarray:
    classes = np.unique(y[y != UNLABELLED])
    if len(classes) < 2:
        raise VaelabError(
            f"{what} needs labelled examples of at least 2 classes, got {len(classes)}",
            "give at least one labelled image of every class",
        )
    return classes


def _check_fitted(clf, attr: str = "classes_") -> None:
    if not hasattr(clf, attr):
        raise VaelabError(f"this {type(clf).__name__} is not fitted yet", "call fit(X, y) first, or load a saved one")


def _check_dim(clf, X: np.ndarray) -> None:
    if X.shape[-1] != clf.n_features_in_:
        raise VaelabError(
            f"the classifier was fitted on {clf.n_features_in_}-D latents, got {X.shape[-1]}-D",
            "encode with the run the classifier was fitted on",
        )


class LatentClassifier(ClassifierMixin, BaseEstimator):
    """Base: `predict` from `predict_proba`, `score` = accuracy (ClassifierMixin), and the save protocol.

    Subclasses implement ``fit``, ``predict_proba``, ``_arrays()`` -> fitted arrays for the npz,
    ``_scalars()`` -> fitted JSON values, and ``_restore(scalars, arrays)``.
    """

    method: str = ""
    semi_supervised = False  # fitted on the unlabelled codes too (y = -1), not only the labelled ones

    def predict(self, X) -> np.ndarray:
        """The most probable class of each row, as labels from ``classes_``."""
        proba = self.predict_proba(X)  # checks that the classifier is fitted
        return self.classes_[np.argmax(proba, axis=1)]

    # -- save protocol -----------------------------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _scalars(self) -> dict[str, Any]:
        return {}

    def _restore(self, scalars: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------------
# gmm: semi-supervised EM, one component per class


class SemiSupervisedGMM(LatentClassifier):
    """A Gaussian mixture whose components belong to classes, fitted by EM on labelled + unlabelled codes.

    By default one component per class (``component_to_class_`` is then the identity). Means and
    covariances start from the labelled examples of each class (covariances shrunk towards the covariance
    of all codes when a class has few labels; with ``n_components_per_class`` > 1 a class's labelled
    examples are split by k-means first). In every E-step a labelled point may only take responsibility
    from its own class's components (one-hot with one component per class), so it never changes class;
    unlabelled points (y = -1) get the full posterior. The M-step is the usual weighted mean/covariance
    (+ ``reg_covar`` on the diagonal, as scikit-learn's GaussianMixture), with unlabelled points weighted
    by ``unlabelled_weight`` (EM-lambda of Nigam et al. 2000: below 1 when the unlabelled codes are not
    Gaussian per class and pull the components away from the labels). ``lower_bound_`` is the weighted
    mean log-likelihood per point: log p(x, y) for labelled and log p(x) for unlabelled points.
    """

    method = "gmm"
    semi_supervised = True

    def __init__(
        self,
        covariance_type: str = "full",
        n_components_per_class: int = 1,
        unlabelled_weight: float = 1.0,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        tol: float = 1e-4,
        random_state: int = 0,
    ):
        self.covariance_type = covariance_type
        self.n_components_per_class = n_components_per_class
        self.unlabelled_weight = unlabelled_weight
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def _check_params(self) -> None:
        if self.covariance_type not in ("full", "diag"):
            raise VaelabError(f"covariance_type is {self.covariance_type!r}", "use 'full' or 'diag'")
        if not self.reg_covar >= 0:
            raise VaelabError(f"reg_covar is {self.reg_covar}", "use a small non-negative number such as 1e-6")
        if int(self.max_iter) < 1 or int(self.n_components_per_class) < 1:
            raise VaelabError(f"max_iter={self.max_iter}, n_components_per_class={self.n_components_per_class}", "use at least 1")
        if not 0 <= self.unlabelled_weight <= 1:
            raise VaelabError(f"unlabelled_weight is {self.unlabelled_weight}", "use a weight in [0, 1] (1: plain EM)")

    def fit(self, X, y) -> SemiSupervisedGMM:
        """X: (N, D) latent means; y: (N,) class labels, -1 for unlabelled points."""
        self._check_params()
        X, y = _check_Xy(X, y)
        self.classes_ = _labelled_classes(y, "the GMM")
        self.n_features_in_ = X.shape[1]
        labelled = y != UNLABELLED
        cls = np.full(len(y), -1)
        cls[labelled] = np.searchsorted(self.classes_, y[labelled])  # class index of each labelled point
        self._init_from_labels(X, cls)
        allowed = self._allowed(cls)
        w = np.where(labelled, 1.0, float(self.unlabelled_weight))  # per-point weight in the M-step
        self.converged_ = False
        self.lower_bound_ = -np.inf
        for it in range(1, int(self.max_iter) + 1):
            resp, bound = self._e_step(X, allowed, w)
            self._m_step(X, resp * w[:, None])
            self.n_iter_ = it
            change = bound - self.lower_bound_
            self.lower_bound_ = bound
            if abs(change) < self.tol:
                self.converged_ = True
                break
        # the bound of the final parameters (the loop's bound belongs to the parameters before the M-step)
        self.lower_bound_ = self._e_step(X, allowed, w)[1]
        return self

    def _init_from_labels(self, X: np.ndarray, cls: np.ndarray) -> None:
        d = X.shape[1]
        global_cov = np.cov(X, rowvar=False).reshape(d, d) if len(X) > 1 else np.eye(d)
        global_cov = global_cov + self.reg_covar * np.eye(d)
        means, covs, owner = [], [], []
        for c in range(len(self.classes_)):
            pts = X[cls == c]
            m = min(int(self.n_components_per_class), len(np.unique(pts, axis=0)))
            if m > 1:
                from sklearn.cluster import KMeans

                assign = KMeans(m, n_init=3, random_state=int(self.random_state)).fit_predict(pts)
            else:
                assign = np.zeros(len(pts), dtype=int)
            for j in range(m):
                part = pts[assign == j]
                # shrink the scatter towards the global covariance: a single point gets the global one
                n = len(part) - 1
                scatter = np.cov(part, rowvar=False).reshape(d, d) if n > 0 else np.zeros((d, d))
                covs.append((n * scatter + (d + 1) * global_cov) / (n + d + 1) + self.reg_covar * np.eye(d))
                means.append(part.mean(0))
                owner.append(c)
        self.component_to_class_ = np.array(owner)
        self.means_ = np.array(means)
        covs = np.array(covs)
        self.covariances_ = covs if self.covariance_type == "full" else np.stack([np.diag(c) for c in covs])
        self.weights_ = np.full(len(means), 1.0 / len(means))

    def _allowed(self, cls: np.ndarray) -> np.ndarray:
        """(N, K) bool: the components each point may belong to (its class's for labelled points)."""
        allowed = self.component_to_class_[None, :] == cls[:, None]
        allowed[cls < 0] = True
        return allowed

    def _component_log_prob(self, X: np.ndarray) -> np.ndarray:
        """log N(x | mu_k, Sigma_k) for every point and component: (N, K)."""
        out = np.empty((len(X), len(self.means_)))
        for j, mean in enumerate(self.means_):
            if self.covariance_type == "full":
                out[:, j] = stats.multivariate_normal(mean, self.covariances_[j]).logpdf(X)
            else:
                out[:, j] = stats.norm.logpdf(X, mean, np.sqrt(self.covariances_[j])).sum(1)
        return out

    def _weighted_log_prob(self, X: np.ndarray) -> np.ndarray:
        return self._component_log_prob(X) + np.log(self.weights_)

    def responsibilities(self, X, y=None) -> np.ndarray:
        """EM's responsibilities (N, K): a labelled row (y >= 0) is zero outside its class's components
        (one-hot with one component per class); an unlabelled row is the posterior over all components."""
        _check_fitted(self, "means_")
        X = _check_X(X)
        cls = np.full(len(X), -1)
        if y is not None:
            y = np.asarray(y)
            known = y != UNLABELLED
            cls[known] = np.searchsorted(self.classes_, y[known])
        return self._e_step(X, self._allowed(cls), np.ones(len(X)))[0]

    def _e_step(self, X: np.ndarray, allowed: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, float]:
        wlp = np.where(allowed, self._weighted_log_prob(X), -np.inf)  # (N, K)
        norm = logsumexp(wlp, axis=1)  # log p(x, y) for labelled points, log p(x) for the rest
        resp = np.exp(wlp - norm[:, None])
        return resp, float((w * norm).sum() / max(w.sum(), 1e-300))

    def _m_step(self, X: np.ndarray, resp: np.ndarray) -> None:
        nk = resp.sum(0) + 10 * np.finfo(float).eps  # (K,)
        self.weights_ = nk / nk.sum()
        self.means_ = resp.T @ X / nk[:, None]
        d = X.shape[1]
        if self.covariance_type == "full":
            covs = np.empty((len(nk), d, d))
            for k in range(len(nk)):
                diff = X - self.means_[k]
                covs[k] = (resp[:, k, None] * diff).T @ diff / nk[k] + self.reg_covar * np.eye(d)
            self.covariances_ = covs
        else:
            sq = resp.T @ (X * X) / nk[:, None]
            self.covariances_ = np.maximum(sq - self.means_**2, 0) + self.reg_covar

    def predict_proba(self, X) -> np.ndarray:
        """p(class | x): the component posteriors summed per class, (N, n_classes)."""
        _check_fitted(self)
        X = _check_X(X)
        _check_dim(self, X)
        wlp = self._weighted_log_prob(X)
        post = np.exp(wlp - logsumexp(wlp, axis=1, keepdims=True))
        out = np.zeros((len(X), len(self.classes_)))
        np.add.at(out.T, self.component_to_class_, post.T)
        return out

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "means_": self.means_,
            "covariances_": self.covariances_,
            "weights_": self.weights_,
            "classes_": self.classes_,
            "component_to_class_": self.component_to_class_,
        }

    def _scalars(self) -> dict[str, Any]:
        return {
            "n_iter_": int(self.n_iter_),
            "converged_": bool(self.converged_),
            "lower_bound_": float(self.lower_bound_),
            "n_features_in_": int(self.n_features_in_),
        }

    def _restore(self, scalars, arrays) -> None:
        for k, v in arrays.items():
            setattr(self, k, v)
        for k, v in scalars.items():
            setattr(self, k, v)


# ---------------------------------------------------------------------------------------------------------
# mlp: the 128-px project's head on K posterior samples per image


class MLPHead(LatentClassifier):
    """latent -> ``hidden`` -> classes (ReLU, dropout), in torch, trained with Adam on cross-entropy.

    ``fit`` takes X as (N, D) latent means or (N, K, D) posterior samples per image (the K samples are
    K training inputs with the image's label). A stratified ``val_fraction`` of the *images* is held out
    and the weights of the epoch with the best validation accuracy (ties: lower validation loss) are
    kept; training stops after ``patience`` epochs without one. With too few labels for a hold-out (fewer
    than 2 images of a class, or fewer held-out images than classes) it trains all ``max_epochs`` on all
    labels. ``samples`` is how many posterior samples per image the caller should draw (`fewlabels`).
    Inputs are standardised with the training codes' mean and std. Predictions on (N, K, D) average the
    class probabilities over the K samples.
    """

    method = "mlp"

    def __init__(
        self,
        hidden: int = 128,
        dropout: float = 0.2,
        samples: int = 10,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 256,
        max_epochs: int = 100,
        patience: int = 10,
        val_fraction: float = 0.2,
        seed: int = 0,
    ):
        self.hidden = hidden
        self.dropout = dropout
        self.samples = samples
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.val_fraction = val_fraction
        self.seed = seed

    def _net(self, d: int, k: int):
        import torch.nn as nn

        return nn.Sequential(nn.Linear(d, int(self.hidden)), nn.ReLU(), nn.Dropout(float(self.dropout)), nn.Linear(int(self.hidden), k))

    def _check_params(self) -> None:
        if int(self.hidden) < 1 or not 0 <= float(self.dropout) < 1:
            raise VaelabError(f"hidden={self.hidden}, dropout={self.dropout}", "use hidden >= 1 and 0 <= dropout < 1")
        if int(self.samples) < 0:
            raise VaelabError(f"samples is {self.samples}", "use 0 (latent means) or K >= 1 posterior samples")
        if int(self.max_epochs) < 1 or int(self.batch_size) < 1 or not float(self.lr) > 0:
            raise VaelabError("max_epochs, batch_size and lr must be positive")
        if not 0 <= float(self.val_fraction) < 1:
            raise VaelabError(f"val_fraction is {self.val_fraction}", "use a share in [0, 1), e.g. 0.2")

    def _holdout(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stratified (train, val) indices of the images, or (all, empty) when labels are too few."""
        counts = np.bincount(y)
        counts = counts[counts > 0]
        n_val = int(math.ceil(self.val_fraction * len(y)))
        if self.val_fraction <= 0 or counts.min() < 2 or n_val < len(counts) or len(y) - n_val < len(counts):
            return np.arange(len(y)), np.arange(0)
        from sklearn.model_selection import train_test_split

        tr, va = train_test_split(np.arange(len(y)), test_size=n_val, stratify=y, random_state=int(self.seed))
        return np.sort(tr), np.sort(va)

    def fit(self, X, y) -> MLPHead:
        """X: (N, D) or (N, K, D); y: (N,) labels (-1 rows are dropped: the head is supervised)."""
        import torch
        import torch.nn.functional as F

        self._check_params()
        X, y = _check_Xy(X, y, ndim=(2, 3))
        keep = y != UNLABELLED
        X, y = X[keep], y[keep]
        self.classes_ = _labelled_classes(y, "the MLP head")
        self.n_features_in_ = X.shape[-1]
        target = np.searchsorted(self.classes_, y)
        X3 = X if X.ndim == 3 else X[:, None, :]  # (N, K, D)
        tr, va = self._holdout(target)
        flat = X3[tr].reshape(-1, X3.shape[-1])
        self.x_mean_ = flat.mean(0)
        self.x_scale_ = np.where(flat.std(0) > 1e-8, flat.std(0), 1.0)
        xs = torch.as_tensor((X3 - self.x_mean_) / self.x_scale_, dtype=torch.float32)
        t = torch.as_tensor(target)
        k_per = xs.shape[1]
        x_train = xs[tr].reshape(-1, xs.shape[-1])  # (len(tr) * K, D)
        t_train = t[tr].repeat_interleave(k_per)
        gen = torch.Generator().manual_seed(int(self.seed))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.seed))
            net = self._net(xs.shape[-1], len(self.classes_))
            opt = torch.optim.Adam(net.parameters(), lr=float(self.lr), weight_decay=float(self.weight_decay))
            best, best_key, best_acc, bad = None, (-1.0, math.inf), -1.0, 0
            self.history_ = []
            for epoch in range(1, int(self.max_epochs) + 1):
                net.train()
                for idx in torch.randperm(len(x_train), generator=gen).split(int(self.batch_size)):
                    loss = F.cross_entropy(net(x_train[idx]), t_train[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                if len(va) == 0:
                    continue
                net.eval()
                with torch.no_grad():
                    prob = torch.softmax(net(xs[va]), -1).mean(1)  # (n_val, C), averaged over the K samples
                    acc = float((prob.argmax(1) == t[va]).float().mean())
                    vloss = float(F.nll_loss(prob.clamp_min(1e-12).log(), t[va]))
                self.history_.append({"epoch": epoch, "val_accuracy": acc, "val_loss": vloss})
                if (acc, -vloss) > (best_key[0], -best_key[1]):  # keep the best weights (ties: lower loss)
                    best_key, self.best_epoch_ = (acc, vloss), epoch
                    best = {n: p.detach().clone() for n, p in net.state_dict().items()}
                bad = 0 if acc > best_acc else bad + 1  # patience counts epochs without a better accuracy
                best_acc = max(best_acc, acc)
                if bad >= int(self.patience):
                    break
        self.n_epochs_ = epoch
        self.early_stopping_ = len(va) > 0
        if best is not None:
            net.load_state_dict(best)
            self.val_accuracy_ = best_key[0]
        else:
            self.best_epoch_ = epoch
            self.val_accuracy_ = float("nan")
        self.n_val_ = int(len(va))
        self.net_ = net.eval()
        return self

    def predict_proba(self, X) -> np.ndarray:
        """(N, n_classes) class probabilities; (N, K, D) input averages them over the K samples."""
        import torch

        _check_fitted(self, "net_")
        X = _check_X(X, ndim=(2, 3))
        _check_dim(self, X)
        x = torch.as_tensor((X - self.x_mean_) / self.x_scale_, dtype=torch.float32)
        with torch.no_grad():
            p = torch.softmax(self.net_(x), -1)
        return (p.mean(1) if X.ndim == 3 else p).double().numpy()

    def _arrays(self) -> dict[str, np.ndarray]:
        out = {f"net.{k}": v.detach().cpu().numpy() for k, v in self.net_.state_dict().items()}
        out.update(classes_=self.classes_, x_mean_=self.x_mean_, x_scale_=self.x_scale_)
        return out

    def _scalars(self) -> dict[str, Any]:
        val_acc = None if math.isnan(self.val_accuracy_) else float(self.val_accuracy_)
        return {
            "n_features_in_": int(self.n_features_in_),
            "n_epochs_": int(self.n_epochs_),
            "best_epoch_": int(self.best_epoch_),
            "early_stopping_": bool(self.early_stopping_),
            "val_accuracy_": val_acc,
            "n_val_": int(self.n_val_),
        }

    def _restore(self, scalars, arrays) -> None:
        import torch

        for k, v in scalars.items():
            setattr(self, k, v)
        if self.val_accuracy_ is None:
            self.val_accuracy_ = float("nan")
        self.classes_, self.x_mean_, self.x_scale_ = arrays["classes_"], arrays["x_mean_"], arrays["x_scale_"]
        net = self._net(int(self.n_features_in_), len(self.classes_))
        state = {k.removeprefix("net."): torch.as_tensor(v) for k, v in arrays.items() if k.startswith("net.")}
        net.load_state_dict(state)
        self.net_ = net.eval()


# ---------------------------------------------------------------------------------------------------------
# scikit-learn baselines on latent means


class _ScikitLearnClassifier(LatentClassifier):
    """A baseline that wraps a fitted scikit-learn estimator in ``estimator_``."""

    def predict_proba(self, X) -> np.ndarray:
        _check_fitted(self)
        X = _check_X(X)
        _check_dim(self, X)
        return self.estimator_.predict_proba(X)


class LogRegClassifier(_ScikitLearnClassifier):
    """scikit-learn's LogisticRegression (multinomial, lbfgs) on latent means."""

    method = "logreg"

    def __init__(self, C: float = 1.0, max_iter: int = 1000):
        self.C = C
        self.max_iter = max_iter

    def _estimator(self):
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=float(self.C), max_iter=int(self.max_iter))

    def fit(self, X, y) -> LogRegClassifier:
        X, y = _check_Xy(X, y)
        keep = y != UNLABELLED
        X, y = X[keep], y[keep]
        _labelled_classes(y, "logistic regression")
        self.estimator_ = self._estimator().fit(X, y)
        self.classes_ = self.estimator_.classes_
        self.n_features_in_ = X.shape[1]
        return self

    def _arrays(self) -> dict[str, np.ndarray]:
        e = self.estimator_
        return {"coef_": e.coef_, "intercept_": e.intercept_, "classes_": e.classes_}

    def _scalars(self) -> dict[str, Any]:
        return {"n_features_in_": int(self.n_features_in_)}

    def _restore(self, scalars, arrays) -> None:
        e = self._estimator()
        e.coef_, e.intercept_, e.classes_ = arrays["coef_"], arrays["intercept_"], arrays["classes_"]
        e.n_features_in_ = int(scalars["n_features_in_"])
        self.estimator_, self.classes_, self.n_features_in_ = e, e.classes_, e.n_features_in_


class KNNClassifier(_ScikitLearnClassifier):
    """scikit-learn's KNeighborsClassifier on latent means; k is capped at the smallest class's count."""

    method = "knn"

    def __init__(self, n_neighbors: int = 5, weights: str = "uniform"):
        self.n_neighbors = n_neighbors
        self.weights = weights

    def _fit_points(self, X: np.ndarray, y: np.ndarray, k: int):
        from sklearn.neighbors import KNeighborsClassifier

        if self.weights not in ("uniform", "distance"):
            raise VaelabError(f"weights is {self.weights!r}", "use 'uniform' or 'distance'")
        return KNeighborsClassifier(n_neighbors=k, weights=self.weights).fit(X, y)

    def fit(self, X, y) -> KNNClassifier:
        if int(self.n_neighbors) < 1:
            raise VaelabError(f"n_neighbors is {self.n_neighbors}", "use at least 1")
        X, y = _check_Xy(X, y)
        keep = y != UNLABELLED
        X, y = X[keep], y[keep]
        _labelled_classes(y, "k-NN")
        # k above the smallest class's count lets the big classes outvote it (1 label per class: k = 1)
        self.n_neighbors_ = min(int(self.n_neighbors), int(np.bincount(np.searchsorted(np.unique(y), y)).min()))
        self.fit_X_, self.fit_y_ = X, y
        self.estimator_ = self._fit_points(X, y, self.n_neighbors_)
        self.classes_ = self.estimator_.classes_
        self.n_features_in_ = X.shape[1]
        return self

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"fit_X_": self.fit_X_, "fit_y_": self.fit_y_}

    def _scalars(self) -> dict[str, Any]:
        return {"n_neighbors_": int(self.n_neighbors_), "n_features_in_": int(self.n_features_in_)}

    def _restore(self, scalars, arrays) -> None:
        self.n_neighbors_ = int(scalars["n_neighbors_"])
        self.fit_X_, self.fit_y_ = arrays["fit_X_"], arrays["fit_y_"]
        self.estimator_ = self._fit_points(self.fit_X_, self.fit_y_, self.n_neighbors_)
        self.classes_ = self.estimator_.classes_
        self.n_features_in_ = int(scalars["n_features_in_"])


# ---------------------------------------------------------------------------------------------------------
# label spreading over a nearest-neighbour graph of labelled + unlabelled codes


class LabelSpreadingClassifier(LatentClassifier):
    """Label spreading (Zhou et al. 2004) with scikit-learn's LabelSpreading on latent means.

    A k-nearest-neighbour graph joins the labelled and unlabelled codes; each point's label distribution
    is repeatedly replaced by ``alpha`` x its neighbours' average + (1 - alpha) x its own initial labels
    (one-hot for labelled points, zero for unlabelled ones), so labels flow along the data's manifold
    rather than across the gaps between clusters. A new code gets the summed label distributions of its
    ``n_neighbors`` nearest fitted codes, as LabelSpreading.predict_proba does with the knn kernel. The
    fitted codes and their distributions are the saved state (N x (D + classes) numbers).
    """

    method = "spread"
    semi_supervised = True

    def __init__(self, n_neighbors: int = 10, alpha: float = 0.9, max_iter: int = 1000, tol: float = 1e-6):
        self.n_neighbors = n_neighbors
        self.alpha = alpha
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X, y) -> LabelSpreadingClassifier:
        """X: (N, D) latent means; y: (N,) class labels, -1 for unlabelled points."""
        import warnings

        from sklearn.semi_supervised import LabelSpreading

        if int(self.n_neighbors) < 1 or int(self.max_iter) < 1:
            raise VaelabError(f"n_neighbors={self.n_neighbors}, max_iter={self.max_iter}", "use at least 1")
        if not 0 < self.alpha < 1:
            raise VaelabError(f"alpha is {self.alpha}", "use a clamping factor in (0, 1), e.g. 0.9")
        X, y = _check_Xy(X, y)
        _labelled_classes(y, "label spreading")
        k = min(int(self.n_neighbors), len(X) - 1)
        if k < 1:
            raise VaelabError("label spreading needs at least two latent codes", "give more images")
        # a small tol: labels far (in hops) from every labelled code change little per iteration but
        # must still arrive; scikit-learn's 1e-3 stops before they reach the ends of a long cluster
        est = LabelSpreading(kernel="knn", n_neighbors=k, alpha=float(self.alpha), max_iter=int(self.max_iter), tol=float(self.tol))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # max_iter reached: the distributions are still usable
            est.fit(X, y)
        self.n_neighbors_ = k
        self.classes_ = est.classes_
        self.fit_X_ = X.astype(np.float32)
        self.label_distributions_ = est.label_distributions_.astype(np.float32)
        self.n_iter_ = int(est.n_iter_)
        self.n_features_in_ = X.shape[1]
        self._index()
        return self

    def _index(self) -> None:
        from sklearn.neighbors import NearestNeighbors

        self.nn_ = NearestNeighbors(n_neighbors=self.n_neighbors_).fit(self.fit_X_)

    def predict_proba(self, X) -> np.ndarray:
        _check_fitted(self, "nn_")
        X = _check_X(X)
        _check_dim(self, X)
        idx = self.nn_.kneighbors(X.astype(np.float32), return_distance=False)
        p = self.label_distributions_[idx].sum(1).astype(np.float64)
        total = p.sum(1, keepdims=True)
        # a point whose neighbours got no label mass (an island the labels never reached): uniform
        return np.where(total > 0, p / np.where(total > 0, total, 1), 1.0 / p.shape[1])

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"fit_X_": self.fit_X_, "label_distributions_": self.label_distributions_, "classes_": self.classes_}

    def _scalars(self) -> dict[str, Any]:
        return {"n_neighbors_": int(self.n_neighbors_), "n_iter_": self.n_iter_, "n_features_in_": int(self.n_features_in_)}

    def _restore(self, scalars, arrays) -> None:
        for k, v in scalars.items():
            setattr(self, k, v)
        self.fit_X_, self.label_distributions_ = arrays["fit_X_"], arrays["label_distributions_"]
        self.classes_ = arrays["classes_"]
        self._index()


CLASSIFIERS: dict[str, type[LatentClassifier]] = {
    "gmm": SemiSupervisedGMM,
    "spread": LabelSpreadingClassifier,
    "mlp": MLPHead,
    "logreg": LogRegClassifier,
    "knn": KNNClassifier,
}


def make(method: str, params: dict[str, Any] | None = None) -> LatentClassifier:
    """A classifier by name, with parameters checked against its constructor (close-match hints)."""
    import difflib

    if method not in CLASSIFIERS:
        close = difflib.get_close_matches(method, list(CLASSIFIERS), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"use one of: {', '.join(CLASSIFIERS)}"
        raise VaelabError(f"unknown classifier '{method}'", hint)
    cls = CLASSIFIERS[method]
    valid = cls().get_params()
    params = dict(params or {})
    for key, value in params.items():
        if key not in valid:
            close = difflib.get_close_matches(key, list(valid), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"{method} takes: {', '.join(valid)}"
            raise VaelabError(f"'{key}' is not a parameter of the {method} classifier", hint)
        default = valid[key]
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise VaelabError(f"{method} parameter '{key}' must be a number, got {value!r}")
            if isinstance(default, int) and isinstance(value, float):
                if not value.is_integer():
                    raise VaelabError(f"{method} parameter '{key}' must be an integer, got {value!r}")
                params[key] = int(value)
    return cls(**params)


# ---------------------------------------------------------------------------------------------------------
# the run a classifier belongs to, and save / load


def run_fingerprint(run) -> dict[str, str]:
    """Where a classifier's latents came from: the run dir, its checkpoint, and a hash of that checkpoint.

    The hash covers the checkpoint file (weights + config), so a classifier of another run, or of an
    older checkpoint of the same run, is refused at load time.
    """
    ckpt = Path(run.checkpoint)
    h = hashlib.sha256()
    with open(ckpt, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    try:
        rel = str(ckpt.resolve().relative_to(Path(run.path).resolve()))
    except ValueError:
        rel = str(ckpt)
    return {"dir": str(Path(run.path).resolve()), "checkpoint": rel, "fingerprint": h.hexdigest()[:16]}


def _paths(path: str | Path) -> tuple[Path, Path]:
    """(npz, json) of a classifier given either file or their common stem."""
    p = Path(path)
    name = p.name
    for suffix in (".classifier.json", ".npz"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return p.with_name(name + ".npz"), p.with_name(name + ".classifier.json")


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


def save(clf: LatentClassifier, path: str | Path, *, run=None, class_names: list[str] | None = None) -> tuple[Path, Path]:
    """Write ``NAME.npz`` (fitted arrays) and ``NAME.classifier.json`` (method, parameters, fitted values,
    class names, run fingerprint). Returns both paths. Nothing is pickled."""
    import io

    from ..train.checkpoint import atomic_write

    _check_fitted(clf)
    npz_path, json_path = _paths(path)
    arrays = {k: np.asarray(v) for k, v in clf._arrays().items()}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "method": clf.method,
        "params": {k: _jsonable(v) for k, v in clf.get_params().items()},
        "fitted": {k: _jsonable(v) for k, v in clf._scalars().items()},
        "class_names": list(class_names) if class_names is not None else getattr(clf, "class_names_", None),
        "run": run_fingerprint(run) if run is not None else getattr(clf, "run_info_", None),
        "arrays": npz_path.name,
        "arrays_sha256": hashlib.sha256(data).hexdigest(),
    }
    try:
        npz_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(npz_path, lambda f: f.write(data))
        atomic_write(json_path, lambda f: f.write(json.dumps(meta, indent=2).encode()))
    except OSError as e:
        raise VaelabError(f"cannot write the classifier to {npz_path.parent}: {e.strerror}", "choose a writable folder") from None
    clf.class_names_ = meta["class_names"]
    clf.run_info_ = meta["run"]
    return npz_path, json_path


def read_meta(path: str | Path) -> dict:
    """The JSON half of a saved classifier (method, params, class names, run), checked."""
    npz_path, json_path = _paths(path)
    if not json_path.is_file():
        raise VaelabError(f"no saved classifier at {json_path}", "fit one with 'vaelab classify RUN --method M'")
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise VaelabError(f"{json_path} is not valid JSON", "fit the classifier again with 'vaelab classify'") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("method") not in CLASSIFIERS:
        raise VaelabError(f"{json_path} is not a vaelab classifier file", "fit the classifier again with 'vaelab classify'")
    return meta


def load(path: str | Path, run=None) -> LatentClassifier:
    """Rebuild a saved classifier (no flags: the file names its method and parameters).

    With ``run``, refuse a classifier fitted on another run (or another checkpoint of it).
    """
    meta = read_meta(path)
    npz_path, json_path = _paths(path)
    if not npz_path.is_file():
        raise VaelabError(f"{json_path} has lost its arrays file {npz_path.name}", "fit the classifier again with 'vaelab classify'")
    data = npz_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != meta.get("arrays_sha256"):
        raise VaelabError(f"{npz_path} does not match {json_path.name} (changed or from another fit)", "fit the classifier again with 'vaelab classify'")
    if run is not None:
        check_belongs(meta, run, json_path)
    import io

    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    clf = CLASSIFIERS[meta["method"]](**meta["params"])
    try:
        clf._restore(meta["fitted"], arrays)
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise VaelabError(f"{npz_path} is incomplete ({str(e).splitlines()[0][:80]})", "fit the classifier again with 'vaelab classify'") from None
    clf.class_names_ = meta.get("class_names")
    clf.run_info_ = meta.get("run")
    return clf


def check_belongs(meta: dict, run, where: str | Path = "the classifier") -> None:
    """One-line error when a saved classifier was fitted on the latents of another run or checkpoint."""
    info = meta.get("run") or {}
    mine = run_fingerprint(run)
    if info.get("fingerprint") != mine["fingerprint"]:
        same_dir = info.get("dir") == mine["dir"]
        what = "an older checkpoint of this run" if same_dir else f"run {info.get('dir', '?')}"
        raise VaelabError(
            f"{where} was fitted on {what} (checkpoint {info.get('fingerprint', '?')}), not on {run.path} ({mine['fingerprint']})",
            "fit it for this run: " + shell("vaelab", "classify", run.path, "--method", meta.get("method", "gmm")),
        )
