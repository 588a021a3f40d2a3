"""Disentanglement metrics of a code against ground-truth factors, as defined in disentanglement_lib
(Locatello et al. 2019, github.com/google-research/disentanglement_lib, ``evaluation/metrics/``): BetaVAE,
FactorVAE, MIG, SAP and DCI. Sample sizes and defaults are those of its study configs
(``config/unsupervised_study_v1/metric_configs/*.gin``), and can be lowered for CPU runs; each result
records the sizes and the seed it used.

Inputs: ``codes`` (N, D) float, the representation of N images (the posterior means, as disentanglement_lib
scores), and ``factors`` (N, F) int, each factor's value index. disentanglement_lib draws factors and renders
the images on demand; here the images are a fixed pool, encoded once, and "draw images whose factor k has
value v" draws uniformly from the pool's rows with that value. On the full dSprites grid this is the same
distribution; on a subset it is the conditional distribution of the subset.

Each metric uses its own ``numpy.random.RandomState(seed)``, so a score does not depend on which other
metrics ran. Probes are scikit-learn's, as in disentanglement_lib.
"""

from __future__ import annotations

import warnings

import numpy as np

# disentanglement_lib's study defaults (config/unsupervised_study_v1/metric_configs/*.gin)
DEFAULTS: dict[str, dict[str, float]] = {
    "beta_vae": {"batch_size": 64, "num_train": 10000, "num_eval": 5000},
    "factor_vae": {"batch_size": 64, "num_train": 10000, "num_eval": 5000, "num_variance_estimate": 10000, "prune_threshold": 0.05},
    "mig": {"num_train": 10000, "num_bins": 20},
    "sap": {"num_train": 10000, "num_test": 5000},
    "dci": {"num_train": 10000, "num_test": 5000},
}
METRICS = tuple(DEFAULTS)


class _Pool:
    """Rows of a fixed pool grouped by each factor's value: draws of 'rows with factor k = v'."""

    def __init__(self, factors: np.ndarray):
        self.factors = np.asarray(factors, dtype=np.int64)
        self.n, self.num_factors = self.factors.shape
        self.groups = []
        for k in range(self.num_factors):
            col = self.factors[:, k]
            order = np.argsort(col, kind="stable")
            values, starts = np.unique(col[order], return_index=True)
            ends = np.append(starts[1:], len(order))
            self.groups.append({int(v): order[s:e] for v, s, e in zip(values, starts, ends, strict=True)})

    def rows(self, size: int, rs: np.random.RandomState) -> np.ndarray:
        return rs.randint(self.n, size=size)

    def rows_with(self, k: int, values: np.ndarray, rs: np.random.RandomState) -> np.ndarray:
        """One row per entry of `values` whose factor k equals it."""
        out = np.empty(len(values), dtype=np.int64)
        for i, v in enumerate(values):
            group = self.groups[k][int(v)]
            out[i] = group[rs.randint(len(group))]
        return out


def _check(codes: np.ndarray, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    codes = np.asarray(codes, dtype=np.float64)
    factors = np.asarray(factors, dtype=np.int64)
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors):
        raise ValueError(f"codes (N, D) and factors (N, F) of the same N, got {codes.shape} and {factors.shape}")
    return codes, factors


def beta_vae_score(codes, factors, seed: int = 0, batch_size: int = 64, num_train: int = 10000, num_eval: int = 5000) -> dict:
    """BetaVAE score (Higgins et al. 2017, sec. 3; disentanglement_lib ``evaluation/metrics/beta_vae.py``).

    A training point: a factor k at random, two batches of `batch_size` images sharing factor k's value
    pairwise, the feature mean_b |z1_b - z2_b|; a logistic regression predicts k from it. The score is its
    accuracy on `num_eval` fresh points (chance 1/F)."""
    codes, factors = _check(codes, factors)
    from sklearn.linear_model import LogisticRegression

    pool, rs = _Pool(factors), np.random.RandomState(seed)

    def points(n):
        feats, labels = np.zeros((n, codes.shape[1])), np.zeros(n, dtype=np.int64)
        for i in range(n):
            k = rs.randint(pool.num_factors)
            a = pool.rows(batch_size, rs)
            b = pool.rows_with(k, factors[a, k], rs)
            feats[i] = np.abs(codes[a] - codes[b]).mean(0)
            labels[i] = k
        return feats, labels

    x, y = points(num_train)
    model = LogisticRegression(random_state=rs, max_iter=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings on separable known-answer codes
        model.fit(x, y)
    xe, ye = points(num_eval)
    return {
        "train_accuracy": float(np.mean(model.predict(x) == y)),
        "eval_accuracy": float(np.mean(model.predict(xe) == ye)),
        "batch_size": batch_size,
        "num_train": num_train,
        "num_eval": num_eval,
    }


def factor_vae_score(
    codes,
    factors,
    seed: int = 0,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    num_variance_estimate: int = 10000,
    prune_threshold: float = 0.05,
) -> dict:
    """FactorVAE score (Kim & Mnih 2018, sec. 4; disentanglement_lib ``evaluation/metrics/factor_vae.py``).

    Codes are divided by their global standard deviation (over `num_variance_estimate` images; dimensions
    with std below `prune_threshold` are dropped). A vote: a factor k fixed at one value over a batch, the
    dimension of least normalised variance; a majority-vote classifier maps dimension -> factor. The score is
    its accuracy on `num_eval` fresh votes (chance 1/F)."""
    codes, factors = _check(codes, factors)
    pool, rs = _Pool(factors), np.random.RandomState(seed)
    global_var = np.var(codes[pool.rows(num_variance_estimate, rs)], axis=0, ddof=1)
    active = np.sqrt(global_var) >= prune_threshold
    sizes = {"batch_size": batch_size, "num_train": num_train, "num_eval": num_eval, "num_variance_estimate": num_variance_estimate, "prune_threshold": prune_threshold}
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0, **sizes}

    def votes(n):
        v = np.zeros((codes.shape[1], pool.num_factors), dtype=np.int64)
        for _ in range(n):
            k = rs.randint(pool.num_factors)
            value = factors[pool.rows(1, rs)[0], k]
            rows = pool.rows_with(k, np.full(batch_size, value), rs)
            local = np.var(codes[rows], axis=0, ddof=1)
            v[np.argmin(local[active] / global_var[active]), k] += 1
        return v

    train = votes(num_train)
    classifier = np.argmax(train, axis=1)  # dimension -> its majority factor
    eval_ = votes(num_eval)
    dims = np.arange(train.shape[0])
    return {
        "train_accuracy": float(train[dims, classifier].sum() / max(train.sum(), 1)),
        "eval_accuracy": float(eval_[dims, classifier].sum() / max(eval_.sum(), 1)),
        "num_active_dims": int(active.sum()),
        **sizes,
    }


def _histogram_discretize(codes: np.ndarray, num_bins: int) -> np.ndarray:
    """Each code dimension binned into `num_bins` equal-width bins over its range
    (disentanglement_lib ``evaluation/metrics/utils.py``, histogram_discretizer)."""
    out = np.zeros(codes.shape, dtype=np.int64)
    for i in range(codes.shape[1]):
        edges = np.histogram(codes[:, i], num_bins)[1][:-1]
        out[:, i] = np.digitize(codes[:, i], edges)
    return out


def _mutual_info(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(Da, Db) discrete mutual information in nats between the columns of a and b (sklearn's)."""
    from sklearn.metrics import mutual_info_score

    return np.array([[mutual_info_score(b[:, j], a[:, i]) for j in range(b.shape[1])] for i in range(a.shape[1])])


def mig(codes, factors, seed: int = 0, num_train: int = 10000, num_bins: int = 20) -> dict:
    """Mutual Information Gap (Chen et al. 2018, eq. 6; disentanglement_lib ``evaluation/metrics/mig.py``):
    for each factor, the gap between the two code dimensions with the largest mutual information with it,
    divided by the factor's entropy; averaged over factors. Codes discretised into `num_bins` histogram bins."""
    codes, factors = _check(codes, factors)
    rows = np.random.RandomState(seed).randint(len(codes), size=num_train)
    c, f = _histogram_discretize(codes[rows], num_bins), factors[rows]
    m = _mutual_info(c, f)  # (D, F)
    entropy = np.array([_mutual_info(f[:, [j]], f[:, [j]])[0, 0] for j in range(f.shape[1])])
    top = np.sort(m, axis=0)[::-1]
    gap = top[0] - (top[1] if len(top) > 1 else 0.0)
    ok = entropy > 0  # a constant factor has no information to share
    return {"mig": float(np.mean(gap[ok] / entropy[ok])) if ok.any() else 0.0, "num_train": num_train, "num_bins": num_bins}


def sap(codes, factors, seed: int = 0, num_train: int = 10000, num_test: int = 5000, continuous: bool = False) -> dict:
    """Separated Attribute Predictability (Kumar et al. 2018, sec. 3; disentanglement_lib
    ``evaluation/metrics/sap_score.py``): a score per (code dimension, factor), and for each factor the gap
    between its two best scores, averaged over factors. Discrete factors (disentanglement_lib's dSprites
    config, the default): the score is the test accuracy of a linear SVM (C = 0.01, balanced classes) on
    the one code dimension, so the gap is at most 1 - chance; ``continuous``: the squared correlation
    (R^2 of a linear fit), up to 1."""
    codes, factors = _check(codes, factors)
    from sklearn.svm import LinearSVC

    rs = np.random.RandomState(seed)
    tr, te = rs.randint(len(codes), size=num_train), rs.randint(len(codes), size=num_test)
    score = np.zeros((codes.shape[1], factors.shape[1]))
    for i in range(codes.shape[1]):
        for j in range(factors.shape[1]):
            y = factors[tr, j]
            if continuous:
                cov = np.cov(codes[tr, i], y, ddof=1)
                score[i, j] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1]) if cov[0, 0] > 1e-12 and cov[1, 1] > 0 else 0.0
                continue
            if len(np.unique(y)) < 2:
                score[i, j] = 1.0  # a constant factor: every predictor is right
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                clf = LinearSVC(C=0.01, class_weight="balanced").fit(codes[tr, i : i + 1], y)
            score[i, j] = np.mean(clf.predict(codes[te, i : i + 1]) == factors[te, j])
    top = np.sort(score, axis=0)
    gap = top[-1] - (top[-2] if len(top) > 1 else 0.0)
    return {"sap": float(np.mean(gap)), "num_train": num_train, "num_test": num_test, "continuous": continuous}


def _entropy_rows(p: np.ndarray, base: int) -> np.ndarray:
    """Entropy (in `base`) of each row of a non-negative matrix, normalised per row (scipy.stats.entropy)."""
    from scipy.stats import entropy

    return entropy(p.T + 1e-11, base=base)


def dci(codes, factors, seed: int = 0, num_train: int = 10000, num_test: int = 5000) -> dict:
    """DCI disentanglement, completeness, informativeness (Eastwood & Williams 2018; disentanglement_lib
    ``evaluation/metrics/dci.py``): a gradient-boosted-trees classifier per factor gives the importance
    R[d, k] of code d for factor k. Disentanglement: sum_d rho_d (1 - H_F(R[d, :])), rho_d = code d's
    share of all importance; completeness: sum_k rho_k (1 - H_D(R[:, k])); informativeness: the mean test
    accuracy of the classifiers."""
    codes, factors = _check(codes, factors)
    from sklearn.ensemble import GradientBoostingClassifier

    rs = np.random.RandomState(seed)
    tr, te = rs.randint(len(codes), size=num_train), rs.randint(len(codes), size=num_test)
    d, f = codes.shape[1], factors.shape[1]
    imp = np.zeros((d, f))
    acc_train, acc_test = [], []
    for k in range(f):
        y = factors[tr, k]
        if len(np.unique(y)) < 2:  # a constant factor: nothing to explain
            acc_train.append(1.0)
            acc_test.append(1.0)
            continue
        model = GradientBoostingClassifier(random_state=seed).fit(codes[tr], y)
        imp[:, k] = np.abs(model.feature_importances_)
        acc_train.append(float(np.mean(model.predict(codes[tr]) == y)))
        acc_test.append(float(np.mean(model.predict(codes[te]) == factors[te, k])))
    per_code = 1.0 - _entropy_rows(imp, base=max(f, 2))
    per_factor = 1.0 - _entropy_rows(imp.T, base=max(d, 2))
    total = imp if imp.sum() > 0 else np.ones_like(imp)
    return {
        "disentanglement": float(np.sum(per_code * total.sum(1) / total.sum())),
        "completeness": float(np.sum(per_factor * total.sum(0) / total.sum())),
        "informativeness_train": float(np.mean(acc_train)),
        "informativeness_test": float(np.mean(acc_test)),
        "num_train": num_train,
        "num_test": num_test,
    }


FUNCTIONS = {"beta_vae": beta_vae_score, "factor_vae": factor_vae_score, "mig": mig, "sap": sap, "dci": dci}
# the one number of each metric for tables: (metric, key in its result)
HEADLINE = {"beta_vae": "eval_accuracy", "factor_vae": "eval_accuracy", "mig": "mig", "sap": "sap", "dci": "disentanglement"}


def score_all(codes, factors, seed: int = 0, scale: float = 1.0, metrics=METRICS) -> dict:
    """Every metric with disentanglement_lib's sample sizes times `scale` (at least 100 points; batches of
    64 kept), each with the sizes and `seed` it used: {metric: {...}, 'seed': seed, 'scale': scale}."""
    out: dict = {"seed": int(seed), "scale": float(scale)}
    for name in metrics:
        sizes = {}
        for k, v in DEFAULTS[name].items():
            sizes[k] = v if k in ("batch_size", "num_bins", "prune_threshold") else max(100, int(round(v * scale)))
        out[name] = FUNCTIONS[name](codes, factors, seed=seed, **sizes)
    return out


def headline(result: dict) -> dict[str, float]:
    """The table numbers of a `score_all` result: beta_vae, factor_vae, mig, sap, dci_d, dci_c, dci_i."""
    row = {}
    for name, key in HEADLINE.items():
        if isinstance(result.get(name), dict):
            row["dci_d" if name == "dci" else name] = result[name][key]
    if isinstance(result.get("dci"), dict):
        row["dci_c"] = result["dci"]["completeness"]
        row["dci_i"] = result["dci"]["informativeness_test"]
    return row
