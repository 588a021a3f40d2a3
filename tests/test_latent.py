"""Latent classifiers with few labels: semi-supervised GMM, MLP head, baselines, save/load, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import cli
from vaelab.errors import VaelabError
from vaelab.latent import classifiers as C
from vaelab.latent import fewlabels as F

CONTRACT_KEYS = {
    "method",
    "labels_per_class",
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "f1_micro",
    "confusion",
    "class_names",
    "n_test",
}


def blobs(n_per: int = 200, seed: int = 0, scale=(1.0, 0.5), centres=((0, 0), (5, 0), (0, 5))):
    """Three Gaussian clusters in 2-D: (X (3n, 2), y (3n,))."""
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(c, scale, size=(n_per, 2)) for c in centres])
    return X, np.repeat(np.arange(len(centres)), n_per)


def few_labels(y: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """y with all but `per_class` labels per class set to -1 (unlabelled)."""
    out = np.full_like(y, -1)
    idx = F.draw_per_class(y, per_class, seed)
    out[idx] = y[idx]
    return out


def write_idx(folder: Path, images: np.ndarray, labels: np.ndarray | None = None) -> str:
    """An `idx:DIR` spec of uint8 images (N, H, W) or (N, H, W, C), with optional labels."""
    folder.mkdir(parents=True, exist_ok=True)

    def idx_bytes(arr: np.ndarray) -> bytes:
        head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
        return head + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()

    (folder / "train-images-idx3-ubyte").write_bytes(idx_bytes(images))
    if labels is not None:
        (folder / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.asarray(labels)))
    return f"idx:{folder}"


@pytest.fixture(scope="module")
def run_dir(tiny_run, tmp_path_factory) -> Path:
    """A private copy of the tiny run (these tests write RUN/classify/ into it)."""
    dst = tmp_path_factory.mktemp("latent") / "run"
    shutil.copytree(tiny_run, dst)
    return dst


@pytest.fixture(scope="module")
def run(run_dir):
    from vaelab.run import load_run

    return load_run(run_dir)


@pytest.fixture(scope="module")
def latent_data(run):
    return F.encode_sets(run)


# ---------------------------------------------------------------------------------------------------------
# semi-supervised GMM


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_gmm_recovers_synthetic_labels_from_two_labels_per_class(covariance_type):
    X, y = blobs(seed=1)
    gmm = C.SemiSupervisedGMM(covariance_type=covariance_type).fit(X, few_labels(y, 2))
    X_new, y_new = blobs(seed=2)
    assert gmm.score(X_new, y_new) > 0.97
    assert gmm.converged_ and 1 <= gmm.n_iter_ <= gmm.max_iter
    np.testing.assert_allclose(gmm.means_, [[0, 0], [5, 0], [0, 5]], atol=0.2)
    assert gmm.covariances_.shape == ((3, 2, 2) if covariance_type == "full" else (3, 2))
    np.testing.assert_allclose(gmm.weights_.sum(), 1.0)
    assert list(gmm.classes_) == [0, 1, 2] and list(gmm.component_to_class_) == [0, 1, 2]
    proba = gmm.predict_proba(X_new)
    np.testing.assert_allclose(proba.sum(1), 1.0)


def test_gmm_labelled_points_never_change_class(monkeypatch):
    X, y = blobs(seed=3)
    yl = few_labels(y, 3)
    # a labelled point of class 2 deep inside cluster 0: EM must keep it in class 2 in every iteration
    X = np.vstack([X, [[0.1, -0.1]]])
    yl = np.append(yl, 2)
    labelled = yl >= 0
    seen = []
    original = C.SemiSupervisedGMM._m_step

    def recording_m_step(self, X_, resp):
        seen.append(resp[labelled].copy())
        original(self, X_, resp)

    monkeypatch.setattr(C.SemiSupervisedGMM, "_m_step", recording_m_step)
    gmm = C.SemiSupervisedGMM(max_iter=50).fit(X, yl)
    assert len(seen) == gmm.n_iter_ >= 2
    onehot = np.eye(3)[yl[labelled]]
    for resp in seen:
        np.testing.assert_array_equal(resp, onehot)
    # the model itself thinks the point is a 0; its EM responsibility still says 2
    assert gmm.predict(X[-1:])[0] == 0
    np.testing.assert_array_equal(gmm.responsibilities(X[-1:], [2]), [[0.0, 0.0, 1.0]])
    # at convergence the means are the M-step of these responsibilities (a fixed point of EM)
    resp = gmm.responsibilities(X, yl)
    np.testing.assert_allclose(gmm.means_, resp.T @ X / resp.sum(0)[:, None], atol=1e-2)


def test_gmm_with_several_components_per_class_keeps_labelled_points_in_their_class():
    # class 0 is two far-apart blobs, class 1 one blob between them: one Gaussian per class cannot fit it
    X, y = blobs(150, seed=9, centres=((-6, 0), (6, 0), (0, 0)))
    y = np.where(y == 2, 1, 0)
    yl = few_labels(y, 10)
    two = C.SemiSupervisedGMM(n_components_per_class=2).fit(X, yl)
    one = C.SemiSupervisedGMM().fit(X, yl)
    assert list(two.component_to_class_) == [0, 0, 1, 1] and two.means_.shape == (4, 2)
    assert two.score(X, y) > 0.99 and two.score(X, y) > one.score(X, y)
    resp = two.responsibilities(X, yl)
    labelled = yl >= 0
    per_class = resp @ np.eye(2)[two.component_to_class_]  # (N, classes): responsibility summed per class
    np.testing.assert_allclose(per_class[labelled], np.eye(2)[yl[labelled]])
    np.testing.assert_allclose(two.predict_proba(X).sum(1), 1.0)


def test_gmm_full_covariance_fits_correlated_clusters_better_than_diag():
    rng = np.random.default_rng(4)
    cov = np.array([[1.0, 0.9], [0.9, 1.0]])
    X = np.concatenate([rng.multivariate_normal(c, cov, 300) for c in ([0, 0], [3, -3])])
    y = np.repeat([0, 1], 300)
    yl = few_labels(y, 5)
    full = C.SemiSupervisedGMM("full").fit(X, yl)
    diag = C.SemiSupervisedGMM("diag").fit(X, yl)
    assert full.covariances_.shape == (2, 2, 2) and diag.covariances_.shape == (2, 2)
    np.testing.assert_allclose(full.covariances_[:, 0, 1], 0.9, atol=0.15)
    assert full.lower_bound_ > diag.lower_bound_ + 0.3
    assert full.score(X, y) > 0.99


def test_classifiers_refuse_too_few_labelled_classes_with_one_line_errors():
    X, y = blobs(20)
    only_one = np.where(y == 0, 0, -1)
    for method in C.CLASSIFIERS:
        with pytest.raises(VaelabError, match="at least 2 classes"):
            C.make(method).fit(X, only_one)
    one_each = C.make("knn").fit(X[[0, 20, 40]], [0, 1, 2])  # k capped at 1: every class can win
    assert one_each.n_neighbors_ == 1 and one_each.score(X, y) > 0.9
    with pytest.raises(VaelabError, match="one label per code"):
        C.make("gmm").fit(X, y[:-1])
    with pytest.raises(VaelabError, match="not fitted"):
        C.make("knn").predict(X)
    with pytest.raises(VaelabError, match="did you mean 'covariance_type'"):
        C.make("gmm", {"covariance": "diag"})


def test_label_spreading_follows_the_manifold_where_nearest_labels_do_not():
    from sklearn.datasets import make_circles

    X, y = make_circles(600, factor=0.4, noise=0.04, random_state=0)
    yl = np.full_like(y, -1)
    yl[[np.where(y == 0)[0][0], np.where(y == 1)[0][0]]] = [0, 1]  # one label per ring
    spread = C.make("spread").fit(X, yl)
    X_test, y_test = make_circles(300, factor=0.4, noise=0.04, random_state=1)
    assert spread.score(X_test, y_test) > 0.97
    assert C.make("knn").fit(X, yl).score(X_test, y_test) < 0.9  # the two labels alone cut straight across
    assert spread.classes_.tolist() == [0, 1] and spread.fit_X_.shape == (600, 2)
    np.testing.assert_allclose(spread.predict_proba(X_test).sum(1), 1.0)
    with pytest.raises(VaelabError, match="alpha"):
        C.make("spread", {"alpha": 1.0}).fit(X, yl)


# ---------------------------------------------------------------------------------------------------------
# MLP head and baselines


def test_mlp_head_learns_a_separable_problem_from_posterior_samples():
    X, y = blobs(60, seed=5, centres=((0, 0), (4, 4)))
    rng = np.random.default_rng(0)
    samples = X[:, None, :] + 0.3 * rng.standard_normal((len(X), 10, 2))  # (N, K=10, D)
    head = C.MLPHead(max_epochs=60, patience=10).fit(samples, y)
    X_test, y_test = blobs(100, seed=6, centres=((0, 0), (4, 4)))
    assert head.score(X_test, y_test) > 0.97
    assert head.early_stopping_ and head.n_val_ == 24  # 20% of the 120 images, stratified
    assert 1 <= head.best_epoch_ <= head.n_epochs_ <= 60
    assert head.predict_proba(samples[:5]).shape == (5, 2)  # (N, K, D) input averages over K
    # one label per class: no hold-out, all epochs on the few labels, still right on this easy problem
    few = C.MLPHead(max_epochs=30).fit(X[[0, 60]], y[[0, 60]])
    assert not few.early_stopping_ and few.n_epochs_ == 30
    assert few.score(X_test, y_test) > 0.9


@pytest.mark.parametrize("method", list(C.CLASSIFIERS))
def test_save_load_round_trip_gives_identical_predictions(method, tmp_path):
    X, y = blobs(50, seed=7)
    yl = few_labels(y, 5) if C.CLASSIFIERS[method].semi_supervised else y
    clf = C.make(method).fit(X, yl)
    npz, meta = C.save(clf, tmp_path / f"{method}.npz", class_names=["a", "b", "c"])
    assert npz.is_file() and meta.name == f"{method}.classifier.json"
    assert not list(tmp_path.glob("*.pkl"))
    with np.load(npz, allow_pickle=False) as z:  # plain arrays only
        assert z.files
    back = C.load(meta)  # either file names the classifier
    assert type(back) is type(clf) and back.get_params() == clf.get_params()
    X_new, _ = blobs(30, seed=8)
    np.testing.assert_array_equal(back.predict_proba(X_new), clf.predict_proba(X_new))
    np.testing.assert_array_equal(back.predict(X_new), clf.predict(X_new))
    assert back.class_names_ == ["a", "b", "c"]
    if method == "gmm":
        for attr in ("means_", "covariances_", "weights_", "classes_", "n_iter_", "converged_", "lower_bound_"):
            np.testing.assert_array_equal(getattr(back, attr), getattr(clf, attr))
        assert back.covariance_type == "full"


def test_a_changed_arrays_file_is_refused(tmp_path):
    X, y = blobs(20)
    C.save(C.make("logreg").fit(X, y), tmp_path / "a.npz")
    C.save(C.make("logreg").fit(X + 1, y), tmp_path / "b.npz")
    shutil.copy(tmp_path / "b.npz", tmp_path / "a.npz")
    with pytest.raises(VaelabError, match="does not match"):
        C.load(tmp_path / "a.npz")


# ---------------------------------------------------------------------------------------------------------
# few-label library functions on a run


def test_metrics_match_scikit_learn_by_hand():
    m = F.classification_metrics([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0], [0, 1, 2], ["x", "y", "z"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["f1_micro"] == pytest.approx(4 / 6)
    # per class precision 1/2, 2/3, 1; recall 1/2, 1, 1/2
    assert m["precision_macro"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["recall_macro"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["per_class"]["y"]["f1"] == pytest.approx(0.8)


def test_label_draws_are_seeded_stratified_and_nested():
    y = np.repeat([0, 1, 2], [10, 20, 30])
    a = F.draw_per_class(y, 5, seed=1)
    assert np.bincount(y[a]).tolist() == [5, 5, 5]
    np.testing.assert_array_equal(a, F.draw_per_class(y, 5, seed=1))
    assert not np.array_equal(a, F.draw_per_class(y, 5, seed=2))
    assert set(a) <= set(F.draw_per_class(y, 8, seed=1))
    assert len(F.draw_per_class(y, "all", seed=0)) == 60
    with pytest.raises(VaelabError, match="only 10 labelled images"):
        F.draw_per_class(y, 11, seed=0)


def test_label_budget_table_is_reproducible_with_a_seed(run, latent_data):
    a = F.label_budget(run, "gmm", [1, 5, "all"], seed=3, data=latent_data)
    b = F.label_budget(run, "gmm", [1, 5, "all"], seed=3, data=latent_data)
    assert a["budget"] == b["budget"]
    assert [r["labels_per_class"] for r in a["budget"]] == [1, 5, "all"]
    assert [r["n_labelled"] for r in a["budget"][:2]] == [3, 15]
    assert a["budget"][2]["n_labelled"] == len(latent_data.train.z)
    assert all(0 <= r["accuracy"] <= 1 and 0 <= r["f1_macro"] <= 1 for r in a["budget"])


def test_gmm_on_real_digits_is_far_above_chance(real_digits_run):
    """MNIST-sample digits 1/4/8 (chance: 1/3), a 2-D VAE trained briefly, 10 labels per class."""
    from vaelab.run import load_run

    run = load_run(real_digits_run)
    data = F.encode_sets(run)
    result = F.classify(run, "gmm", labels_per_class=10, data=data)
    assert result.report["n_test"] == len(data.test.z) >= 140
    assert result.report["accuracy"] > 0.75
    assert result.report["f1_macro"] > 0.7


@pytest.fixture(scope="module")
def real_digits_run(tmp_path_factory) -> Path:
    """A 2-D MLP VAE on all 1,500 MNIST-sample digits 1/4/8, trained a little longer than tiny_run."""
    from conftest import tiny_config
    from vaelab.train import fit

    root = tmp_path_factory.mktemp("digits148")
    cfg = tiny_config(root, "data.limit=null", "model.hidden=[128]", "train.epochs=8", "train.save_latents=false", "train.images_every=0", "name=digits")
    return Path(fit(cfg, quiet=True)["run_dir"])


# ---------------------------------------------------------------------------------------------------------
# CLI


@pytest.mark.parametrize("method", ["gmm", "spread", "mlp", "logreg", "knn"])
def test_cli_classify_and_predict_each_method(method, run_dir, tmp_path, capsys):
    extra = ["-p", "max_epochs=20"] if method == "mlp" else []
    stem = "mlp_max_epochs-20" if method == "mlp" else method  # a result with -p parameters is named after them
    assert cli("classify", run_dir, "--method", method, "--labels-per-class", "5", "--seed", "1", *extra) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "confusion matrix" in out
    report = json.loads((run_dir / "classify" / f"{stem}.json").read_text())
    assert CONTRACT_KEYS <= set(report)
    assert report["method"] == method and report["labels_per_class"] == 5 and report["n_labelled"] == 15
    assert report["class_names"] == ["1", "4", "8"] and report["n_test"] == 150
    assert np.array(report["confusion"]).sum() == 150
    assert (run_dir / "classify" / f"{stem}.npz").is_file()
    assert (run_dir / "classify" / f"{stem}.classifier.json").is_file()
    # predict: an image file (any size: it is resized to the model's 28 x 28)
    from PIL import Image

    img = tmp_path / "digit.png"
    Image.fromarray(np.kron(np.eye(8, dtype=np.uint8) * 255, np.ones((5, 5), np.uint8))).save(img)
    assert cli("predict", run_dir, img, "--method", method, "--name", stem) == 0
    out = capsys.readouterr().out
    assert "digit.png" in out and any(name in out for name in ("│ 1 ", "│ 4 ", "│ 8 "))


def test_cli_budget_writes_its_table(run_dir, capsys):
    assert cli("classify", run_dir, "--method", "knn", "--budget", "1,5,all", "--seed", "2") == 0
    assert "label budget" in capsys.readouterr().out
    data = json.loads((run_dir / "classify" / "knn_budget.json").read_text())
    assert [r["labels_per_class"] for r in data["budget"]] == [1, 5, "all"]
    assert {"accuracy", "f1_macro", "n_labelled"} <= set(data["budget"][0])


def test_cli_labelled_and_test_sets_from_specs(run_dir, run, tmp_path, capsys):
    ds = run.data().split("val")
    digits = np.array([1, 4, 8])[ds.labels.numpy()]
    spec = write_idx(tmp_path / "val", ds.images[:, 0].numpy(), digits)  # labels 1/4/8 as in MNIST
    assert cli("classify", run_dir, "--method", "logreg", "--labelled", spec, "--test", spec) == 0
    report = json.loads((run_dir / "classify" / "logreg.json").read_text())
    assert report["labels_per_class"] == "all" and report["n_labelled"] == report["n_test"] == len(ds)
    assert report["class_names"] == ["1", "4", "8"] and report["test_source"] == spec


def test_cli_labelled_and_test_sets_of_all_ten_digits_keep_the_runs_classes(run_dir, run, tmp_path, capsys):
    """A run of digits 1/4/8 given --labelled and --test sets of all ten digits: only the images of its classes
    are used, and the classifier and the scores know the run's three classes only (issue 27, item 2)."""
    from vaelab.data import load

    ten = load("mnist-sample", val_fraction=0.0)
    rng = np.random.default_rng(0)
    pick = rng.permutation(len(ten))[:400]
    digits = np.array([int(ten.class_names[c]) for c in ten.labels.numpy()[pick]])
    spec = write_idx(tmp_path / "ten", ten.images[pick, 0].numpy(), digits)
    ours = int(np.isin(digits, [1, 4, 8]).sum())
    assert 0 < ours < len(digits) and len(set(digits.tolist())) == 10
    assert cli("classify", run_dir, "--method", "gmm", "--labelled", spec, "--test", spec, "--name", "ten") == 0
    report = json.loads((run_dir / "classify" / "ten.json").read_text())
    assert report["class_names"] == ["1", "4", "8"]
    assert report["n_labelled"] == report["n_test"] == ours
    assert np.array(report["confusion"]).shape == (3, 3)
    assert "kept" in capsys.readouterr().out  # it says how many images of other classes were left out


def test_cli_reruns_with_other_parameters_keep_each_result(run_dir, tmp_path, capsys):
    """Issue 27, item 4: a re-run of one method with other -p parameters writes its own files (named from the
    parameters), --name picks a name, and predict finds a named classifier with --name."""
    folder = run_dir / "classify"
    assert cli("classify", run_dir, "--method", "knn", "--labels-per-class", "5") == 0
    assert cli("classify", run_dir, "--method", "knn", "--labels-per-class", "5", "-p", "n_neighbors=1") == 0
    assert cli("classify", run_dir, "--method", "knn", "--labels-per-class", "3", "--name", "knn-three") == 0
    first, second, named = (json.loads((folder / f"{n}.json").read_text()) for n in ("knn", "knn_n_neighbors-1", "knn-three"))
    assert first["params"]["n_neighbors"] != 1 and second["params"]["n_neighbors"] == 1
    assert (first["name"], second["name"], named["name"]) == ("knn", "knn_n_neighbors-1", "knn-three")
    assert named["n_labelled"] == 9 and (folder / "knn-three.npz").is_file() and (folder / "knn_n_neighbors-1.npz").is_file()
    capsys.readouterr()
    from PIL import Image

    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(img)
    assert cli("predict", run_dir, img, "--method", "knn", "--name", "knn-three") == 0
    assert "knn-three predictions" in capsys.readouterr().out
    assert cli("predict", run_dir, img, "--method", "knn") == 0  # without a name: the method's latest fit
    assert "knn_n_neighbors-1 predictions" in capsys.readouterr().out
    assert cli("predict", run_dir, img, "--name", "nope") == 2
    assert "no saved classifier named nope" in capsys.readouterr().err
    assert cli("classify", run_dir, "--method", "knn", "--name", "../evil") == 2
    assert "--name" in capsys.readouterr().err and not (run_dir / "evil.json").exists()


# ---------------------------------------------------------------------------------------------------------
# bad input: one line, exit 2, no traceback


def test_cli_bad_input_is_one_line_with_what_to_do(run_dir, tmp_path, capsys):
    imgs = np.zeros((4, 28, 28), np.uint8)
    two_classes = write_idx(tmp_path / "few", imgs, np.array([1, 1, 4, 4]))
    unlabelled = write_idx(tmp_path / "nolabels", imgs)
    two_channels = write_idx(tmp_path / "twoch", np.zeros((4, 28, 28, 2), np.uint8), np.array([1, 4, 8, 8]))
    cases = [
        (["--labelled", two_classes], "no example of class 8"),
        (["--labels-per-class", "0"], "at least 1"),
        (["--labelled", unlabelled], "has no labels"),
        (["--test", unlabelled], "cannot be scored"),
        (["--test", two_channels], "2-channel images"),
        (["--method", "gmx"], "did you mean 'gmm'"),
    ]
    for args, message in cases:
        assert cli("classify", run_dir, *args) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err


def test_classify_refuses_an_image_set_that_does_not_fit(run):
    from vaelab.data import ImageSet

    wrong = ImageSet(torch.zeros(5, 1, 32, 32, dtype=torch.uint8), torch.tensor([0, 1, 2, 0, 1]), ["1", "4", "8"])
    with pytest.raises(VaelabError, match=r"shape \(1, 32, 32\) but the model takes \(1, 28, 28\)"):
        F.classify(run, "knn", test=wrong)


def test_a_classifier_of_another_run_is_refused(run_dir, tmp_path, capsys):
    from conftest import tiny_config
    from vaelab.train import fit

    assert cli("classify", run_dir, "--method", "knn", "--labels-per-class", "3") == 0
    other = Path(fit(tiny_config(tmp_path, "train.epochs=1", "name=other"), quiet=True)["run_dir"])
    img = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.zeros((28, 28), np.uint8)).save(img)
    assert cli("predict", other, img, "--method", "knn") == 2
    assert "run vaelab classify" in capsys.readouterr().err  # no classifier there yet
    shutil.copytree(run_dir / "classify", other / "classify")
    assert cli("predict", other, img, "--method", "knn") == 2
    err = capsys.readouterr().err
    assert "was fitted on run" in err and f"vaelab classify {other} --method knn" in err
    assert len(err.strip().splitlines()) == 1
    # a moved (copied) run keeps its checkpoint, so its classifier still loads
    moved = tmp_path / "moved"
    shutil.copytree(run_dir, moved)
    assert cli("predict", moved, img, "--method", "knn") == 0
