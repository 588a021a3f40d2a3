"""Evaluation: every estimator checked against a closed form or a reference implementation, on tiny data."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import cli, copy_run, tiny_config
from vaelab.errors import VaelabError
from vaelab.evaluate.fid import fid, frechet_distance, precision_recall
from vaelab.evaluate.likelihood import active_units, bits_per_dim, importance_sampled, likelihood_terms
from vaelab.evaluate.reconstruction import PSNR_CAP, psnr_per_image, ssim_per_image, ssim_separable, summarize
from vaelab.latent.samplers import GMMSampler
from vaelab.models.likelihoods import Bernoulli, Gaussian
from vaelab.models.posterior import DiagonalGaussian
from vaelab.models.prior import StandardNormalPrior

# ---------------------------------------------------------------------------------------------------------
# a linear-Gaussian model (probabilistic PCA) whose log-likelihood is known in closed form


class _LinearGaussian(nn.Module):
    """log_prob(params, x) = log N(x; params, s^2 I), summed per row."""

    def __init__(self, s: float):
        super().__init__()
        self.s = s

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.distributions.Normal(params, self.s).log_prob(x).flatten(1).sum(1)


class _PPCA(nn.Module):
    """x = W z + mu + eps, z ~ N(0, I_d), eps ~ N(0, s^2 I_D), with orthogonal columns in W so the exact
    posterior N(M^-1 W^T (x - mu), s^2 M^-1), M = W^T W + s^2 I, is diagonal. `mean_shift` and `std_scale`
    turn the encoder into an approximate posterior."""

    conditional = False

    def __init__(self, dim_x: int = 6, dim_z: int = 2, s: float = 0.5, mean_shift: float = 0.0, std_scale: float = 1.0):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        q, _ = torch.linalg.qr(torch.randn(dim_x, dim_z, generator=g, dtype=torch.float64))
        self.W = nn.Parameter(q * torch.tensor([2.0, 1.0], dtype=torch.float64)[:dim_z])  # (D, d)
        self.mu = torch.randn(dim_x, generator=g, dtype=torch.float64)
        self.s, self.mean_shift, self.std_scale = s, mean_shift, std_scale
        self.likelihood = _LinearGaussian(s)
        self.prior = StandardNormalPrior(dim_z)

    def encode(self, x, y=None) -> DiagonalGaussian:
        m_diag = (self.W * self.W).sum(0) + self.s**2  # (d,) since W^T W is diagonal
        mean = (x - self.mu) @ self.W / m_diag + self.mean_shift
        var = (self.s**2 / m_diag) * self.std_scale**2
        return DiagonalGaussian(mean, torch.log(var).expand_as(mean))

    def decode(self, z, y=None, context=None):
        return z @ self.W.T + self.mu

    def sample_x(self, n: int, seed: int = 1) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.W.shape[1], generator=g, dtype=torch.float64)
        return self.decode(z) + self.s * torch.randn(n, self.W.shape[0], generator=g, dtype=torch.float64)

    def exact_log_px(self, x: torch.Tensor) -> torch.Tensor:
        cov = self.W @ self.W.T + self.s**2 * torch.eye(self.W.shape[0], dtype=torch.float64)
        return torch.distributions.MultivariateNormal(self.mu, cov).log_prob(x)

    def exact_elbo(self, x: torch.Tensor) -> torch.Tensor:
        """E_q[log p(x|z)] - KL in closed form: log N(x; W m + mu, s^2 I) - tr(W^T W diag(v)) / (2 s^2) - KL."""
        q = self.encode(x)
        rec = self.likelihood.log_prob(self.decode(q.mean), x) - ((self.W * self.W).sum(0) * q.var).sum(1) / (2 * self.s**2)
        return rec - q.kl()


def _iwae(model, x, k, budget=1 << 23, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        log_px, log_px_z, kl, _ = importance_sampled(model, x, None, k, budget=budget)
    return log_px, log_px_z - kl


def test_iwae_is_exact_with_the_exact_posterior_for_any_k_and_chunking():
    model = _PPCA()
    x = model.sample_x(64)
    exact = model.exact_log_px(x)
    for k, budget in ((1, 1 << 23), (10, 1 << 23), (10, 3 * 64 * 6)):  # the last one decodes k in chunks of 3
        log_px, _ = _iwae(model, x, k, budget)
        assert torch.allclose(log_px, exact, atol=1e-6), k


def test_iwae_converges_to_the_closed_form_log_likelihood_from_below():
    model = _PPCA(mean_shift=0.15, std_scale=1.3)  # an approximate posterior: shifted and too wide
    x = model.sample_x(400)
    exact = model.exact_log_px(x)
    gaps, ses = [], []
    for k in (1, 10, 100, 2000):
        log_px, _ = _iwae(model, x, k, seed=k)
        gap = exact - log_px
        gaps.append(gap.mean().item())
        ses.append(gap.std().item() / math.sqrt(len(x)))
        assert gaps[-1] > -4 * ses[-1] - 1e-3, f"k={k}: the bound is above log p(x) on average ({gaps[-1]})"
    assert gaps[0] > 0.2  # the approximate posterior leaves a real gap at k = 1 ...
    for i in range(3):  # ... that shrinks as k grows
        assert gaps[i + 1] <= gaps[i] + 4 * (ses[i] + ses[i + 1]), gaps
    assert gaps[-1] < 0.01, gaps
    log_px, _ = _iwae(model, x, 2000, seed=7)
    assert ((log_px - exact) < 0.15).all()  # no single image above log p(x) by more than sampling noise


def test_bounds_at_smaller_k_are_read_off_the_first_samples_of_one_pass():
    from vaelab.evaluate.likelihood import _steps

    assert _steps(10, 4, (3, 7)) == [3, 4, 3] and _steps(10, 4, ()) == [4, 4, 2] and _steps(5, 2, (0, 5, 9)) == [2, 2, 1]
    model = _PPCA(mean_shift=0.15, std_scale=1.3)
    x = model.sample_x(64)
    one = 64 * x.shape[1]  # a budget of one sample per chunk: every run draws z in the same order
    at = {3: None, 7: None}
    torch.manual_seed(0)
    with torch.no_grad():
        full, *_ = importance_sampled(model, x, None, 10, budget=one, at=at)
    for m in (3, 7):
        alone, _ = _iwae(model, x, m, budget=one)
        assert torch.allclose(at[m], alone, atol=1e-9), m  # L_k' of the first k' samples, exactly
    assert torch.allclose(full, _iwae(model, x, 10, budget=one)[0], atol=1e-9)  # the k bound is unchanged


def test_iwae_with_one_sample_is_the_elbo_in_expectation():
    model = _PPCA(mean_shift=0.3, std_scale=1.4)
    x = model.sample_x(4000)
    l1, elbo_mc = _iwae(model, x, 1)
    elbo = model.exact_elbo(x)
    se = (l1 - elbo).std().item() / math.sqrt(len(x))
    assert abs((l1 - elbo).mean().item()) < 4 * se + 1e-9
    assert abs((elbo_mc - elbo).mean().item()) < 0.02  # the recon + KL terms of the same pass


def test_kl_and_log_densities_match_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    q = DiagonalGaussian(mean, logvar)
    ref = torch.distributions.Normal(mean, torch.exp(0.5 * logvar))
    want = torch.distributions.kl_divergence(ref, torch.distributions.Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(q.kl(), want, atol=1e-5)
    z = torch.randn(4, 5, 3, generator=g)
    assert torch.allclose(q.log_prob(z), ref.log_prob(z).sum(-1), atol=1e-5)

    logits = torch.randn(4, 1, 5, 5, generator=g)
    xb = torch.bernoulli(torch.full((4, 1, 5, 5), 0.4), generator=g)
    want = torch.distributions.Bernoulli(logits=logits).log_prob(xb).flatten(1).sum(1)
    assert torch.allclose(Bernoulli().log_prob(logits, xb), want, atol=1e-5)

    lik = Gaussian(channels=1, sigma=0.2, learned=False)
    xg = torch.rand(4, 1, 5, 5, generator=g)
    want = torch.distributions.Normal(torch.sigmoid(logits), 0.2).log_prob(xg).flatten(1).sum(1)
    assert torch.allclose(lik.log_prob(logits, xg), want, atol=1e-4)


def test_likelihood_terms_of_a_trained_run(tiny_run):
    from vaelab import load_run

    run = load_run(tiny_run)
    val = run.data().split("val")
    images, labels = val.images[:60], val.labels[:60]
    t1 = likelihood_terms(run.model, images, labels, k=1, batch_size=25)
    t50 = likelihood_terms(run.model, images, labels, k=50, batch_size=25)
    again = likelihood_terms(run.model, images, labels, k=50, batch_size=25)
    assert t50.nll.shape == (60,) and t50.mean.shape == (60, 2)
    np.testing.assert_allclose(t50.nll, again.nll)  # seeded: the same numbers every time
    assert t50.nll.mean() < t1.nll.mean()  # more samples, tighter bound
    assert t50.nll.mean() <= t50.elbo_loss.mean() + 0.5  # NLL under the ELBO loss
    np.testing.assert_allclose(t50.kl, t1.kl, rtol=1e-5)  # analytic, sample-free
    binar = likelihood_terms(run.model, images, labels, k=5, batch_size=25, binarized=True)
    assert np.isfinite(binar.nll).all() and not np.allclose(binar.nll, t50.nll)
    assert bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)


def test_active_units_count_the_dimensions_that_vary():
    rng = np.random.default_rng(0)
    means = np.column_stack([rng.normal(0, 1, 500), rng.normal(0, 0.5, 500), rng.normal(0, 0.01, 500), np.zeros(500)])
    assert active_units(means) == 2


# ---------------------------------------------------------------------------------------------------------
# reconstruction quality


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(0)
    for shape in ((3, 1, 28, 28), (2, 3, 32, 32)):
        a = torch.rand(shape, generator=g)
        b = (a + 0.15 * torch.randn(shape, generator=g)).clamp(0, 1)
        ours = ssim_per_image(b, a)
        box = ssim_per_image(b, a, "box7")
        for i in range(shape[0]):
            a_i, b_i = a[i].permute(1, 2, 0).double().numpy(), b[i].permute(1, 2, 0).double().numpy()
            # the box window is scikit-image's default call
            assert box[i].item() == pytest.approx(structural_similarity(a_i, b_i, data_range=1.0, channel_axis=2), abs=5e-5)
            assert box[i].item() != pytest.approx(ours[i].item(), abs=1e-3)
            ref = structural_similarity(
                a[i].permute(1, 2, 0).double().numpy(),
                b[i].permute(1, 2, 0).double().numpy(),
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=1.0,
                channel_axis=2,
            )
            assert ours[i].item() == pytest.approx(ref, abs=1e-5)
    assert torch.allclose(ssim_per_image(a, a), torch.ones(len(a)))


def test_separable_ssim_equals_torchmetrics_and_its_gradient():
    g = torch.Generator().manual_seed(1)
    for shape in ((4, 1, 28, 28), (2, 3, 40, 24), (2, 1, 10, 10)):  # the last is under the window: the fallback
        a = torch.rand(shape, generator=g)
        b = (a + 0.2 * torch.randn(shape, generator=g)).clamp(0, 1).requires_grad_(True)
        fast, ref = ssim_separable(b, a), ssim_per_image(b, a)
        torch.testing.assert_close(fast, ref, atol=1e-5, rtol=0)
        (g_fast,) = torch.autograd.grad(fast.sum(), b)
        (g_ref,) = torch.autograd.grad(ref.sum(), b)
        torch.testing.assert_close(g_fast, g_ref, atol=1e-6, rtol=1e-4)
    assert ssim_separable(a, a).tolist() == pytest.approx([1.0, 1.0])


def test_psnr_matches_its_formula_and_caps_a_perfect_reconstruction():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(4, 1, 10, 10, generator=g)
    b = (a + 0.05 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    mse = (a - b).pow(2).flatten(1).mean(1)
    assert torch.allclose(psnr_per_image(b, a), 10 * torch.log10(1.0 / mse), atol=1e-4)
    assert psnr_per_image(a, a).tolist() == [PSNR_CAP] * 4


def test_summary_per_class():
    per = {"mse": np.array([1.0, 3.0, 5.0]), "psnr": np.array([1.0, 2.0, 3.0]), "ssim": np.array([0.1, 0.3, 0.5])}
    s = summarize(per, np.array([0, 0, 1]), ["a", "b", "c"])
    assert s["mse"] == pytest.approx(3.0)
    assert s["per_class"]["a"]["mse"] == pytest.approx(2.0) and s["per_class"]["b"]["n"] == 1
    assert "c" not in s["per_class"]


# ---------------------------------------------------------------------------------------------------------
# FID, precision/recall, the GMM sampler


def test_fid_is_zero_on_itself_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 8)) @ rng.normal(size=(8, 8))
    assert fid(a, a) == pytest.approx(0.0, abs=1e-6)
    shifts = [0.1, 0.5, 1.0, 3.0]
    scores = [fid(a, a + s) for s in shifts]
    assert scores == sorted(scores) and scores[0] > 0
    # equal covariances: FID is exactly the squared distance of the means, 8 s^2
    assert scores[2] == pytest.approx(8 * 1.0**2, rel=1e-6)


def test_frechet_distance_agrees_with_scipy_sqrtm():
    from scipy import linalg

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    ref = (mu1 - mu2) @ (mu1 - mu2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-6)
    # singular covariances (fewer points than dimensions) stay finite and non-negative
    few = rng.normal(size=(5, 20))
    assert 0 <= fid(few, few + 0.1) < 1


def test_precision_and_recall_tell_quality_from_coverage():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(600, 4))
    same = rng.normal(size=(600, 4))
    p, r = precision_recall(real, same, k=3)
    assert p > 0.8 and r > 0.8
    collapsed = rng.normal(scale=0.2, size=(600, 4))  # good-looking samples, one mode only
    p, r = precision_recall(real, collapsed, k=3)
    assert p > 0.9 and r < 0.4
    p, r = precision_recall(real, real + 20.0, k=3)
    assert p == 0.0 and r == 0.0


def test_gmm_sampler_reproduces_the_fitted_mixture_statistics():
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal([-3, 0], 0.5, size=(400, 2)), rng.normal([3, 1], [1.0, 0.3], size=(600, 2))])
    gmm = GMMSampler(n_components=2, covariance_type="full", seed=0).fit(z)
    samples, comps = gmm.sample(20_000, return_components=True)
    assert samples.shape == (20_000, 2) and samples.dtype == np.float32
    np.testing.assert_allclose(samples.mean(0), gmm.mean(), atol=0.05)
    np.testing.assert_allclose(np.cov(samples, rowvar=False), gmm.covariance(), atol=0.1)
    np.testing.assert_allclose(gmm.mean(), z.mean(0), atol=1e-3)  # EM keeps the data's moments
    np.testing.assert_allclose(np.bincount(comps) / len(comps), gmm.weights_, atol=0.02)
    assert comps[:1000].min() != comps[:1000].max()  # shuffled, not grouped by component
    again = GMMSampler(2, "full", seed=0).fit(z).sample(100)
    np.testing.assert_array_equal(again, GMMSampler(2, "full", seed=0).fit(z).sample(100))
    with pytest.raises(VaelabError):
        GMMSampler(2).sample(3)


# ---------------------------------------------------------------------------------------------------------
# the feature network


@pytest.fixture(scope="module")
def feature_net_dir(tmp_path_factory) -> Path:
    """A tiny feature network on MNIST-sample, trained in a few seconds."""
    from vaelab.evaluate.features import load_training_data, save_feature_net, train_feature_net

    data = load_training_data("mnist-sample", limit=500)
    trained = train_feature_net(data, spec="mnist-sample", epochs=5, batch_size=32, lr=5e-3, widths=(8, 16, 32), limit=500)
    return save_feature_net(trained, tmp_path_factory.mktemp("features") / "fn")


def test_feature_net_learns_saves_and_loads(feature_net_dir):
    from vaelab.data import load
    from vaelab.evaluate.features import load_feature_net

    fn = load_feature_net(feature_net_dir)
    meta = json.loads((feature_net_dir / "meta.json").read_text())
    assert meta["test_accuracy"] > 0.4 and meta["held_out"] == "val"  # mnist-sample has no test split; chance is 0.1
    assert meta["spec"] == "mnist-sample" and meta["shape"] == [1, 28, 28] and len(meta["weights_sha256"]) == 16
    assert fn.describe()["name"] == "mnist-sample-1x28x28-limit500"
    images = load("mnist-sample", limit=20).split("val").images
    f1 = fn.features(images)
    f2 = load_feature_net(feature_net_dir).features(images)
    assert f1.shape == (20, 32)
    np.testing.assert_array_equal(f1, f2)
    with pytest.raises(VaelabError, match="takes images of shape"):
        fn.features(torch.zeros(2, 3, 28, 28, dtype=torch.uint8))


def test_feature_net_takes_any_size_and_channels():
    from vaelab.evaluate.features import FeatureNet, net_name

    for c, s in ((3, 64), (1, 20), (3, 130)):
        net = FeatureNet(c, s, 4).eval()
        assert net.features(torch.rand(2, c, s, s)).shape == (2, 128)
    assert net_name("folder:/data/photos/", (3, 64, 64)).startswith("folder-photos-")
    assert net_name("mnist", (1, 28, 28)) == "mnist-1x28x28"


def test_ensure_feature_net_reuses_the_cache(tmp_path, monkeypatch, feature_net_dir):
    from vaelab.evaluate import features as feats

    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path))
    target = feats.cache_path("mnist-sample", (1, 28, 28))
    shutil.copytree(feature_net_dir, target)
    monkeypatch.setattr(feats, "train_feature_net", lambda *a, **k: pytest.fail("trained although cached"))
    got = feats.ensure_feature_net("mnist-sample", (1, 28, 28))
    assert got.path == target


def test_ensure_feature_net_trains_and_caches_when_missing(tmp_path, monkeypatch):
    from vaelab.evaluate import features as feats

    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path))
    said: list[str] = []
    with torch.no_grad():  # as under evaluate_run: training must still get gradients
        got = feats.ensure_feature_net("mnist-sample", (1, 28, 28), progress=said.append, epochs=1, widths=(4, 8, 16), batch_size=256)
    assert "training one" in said[0] and "trained feature network mnist-sample-1x28x28 in" in said[-1]
    assert got.path == tmp_path / "features" / "mnist-sample-1x28x28" and (got.path / "model.safetensors").is_file()
    said.clear()
    again = feats.ensure_feature_net("mnist-sample", (1, 28, 28), progress=said.append)
    assert said == [] and again.meta["weights_sha256"] == got.meta["weights_sha256"]


def test_inception_loads_a_local_state_dict(tmp_path):
    from vaelab.evaluate.inception import InceptionV3, load_inception

    path = tmp_path / "pt_inception-test.pth"
    torch.save(InceptionV3(1008, fid_variant=True).state_dict(), path)
    fx = load_inception(path)
    assert fx.name == "inception-v3-fid"
    assert fx.features(torch.randint(0, 255, (2, 1, 28, 28), dtype=torch.uint8)).shape == (2, 2048)
    torch.save({"fc.weight": torch.zeros(3, 5)}, tmp_path / "bad.pth")
    with pytest.raises(VaelabError, match="Inception-v3"):
        load_inception(tmp_path / "bad.pth")
    with pytest.raises(VaelabError, match="downloads nothing"):
        load_inception(tmp_path / "missing.pth")


# ---------------------------------------------------------------------------------------------------------
# the CLI and the evaluation of whole runs


def _cli(capsys, *args) -> tuple[int, str, str]:
    from vaelab.cli import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


def _hashes(run_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((run_dir / "checkpoints").glob("*.ckpt"))}


CONTRACT = {"split", "checkpoint", "n_images", "loss", "nll", "recon_quality", "active_units", "fid"}


def test_cli_evaluate_writes_the_contract(tiny_run, feature_net_dir, capsys, tmp_path):
    tiny_run = copy_run(tiny_run, tmp_path)  # the shared run stays without eval/ for other tests
    before = _hashes(tiny_run)
    code, out, err = _cli(capsys, "evaluate", tiny_run, "--split", "val", "--nll-samples", "10", "--features", feature_net_dir, "--max-generated", "200", "--binarized")
    assert code == 0, err
    assert "FID GMM" in out and "active units" in out
    doc = json.loads((tiny_run / "eval" / "val.json").read_text())
    assert CONTRACT <= set(doc)
    assert {"elbo", "objective", "recon", "kl", "bits_per_dim", "note"} <= set(doc["loss"])
    assert {"k", "nll", "nll_binarized"} <= set(doc["nll"]) and doc["nll"]["k"] == 10
    assert {"mse", "psnr", "ssim", "per_class"} <= set(doc["recon_quality"]) and set(doc["recon_quality"]["per_class"]) == {"1", "4", "8"}
    assert {"feature_net", "prior", "gmm", "recon", "precision", "recall"} <= set(doc["fid"])
    assert doc["fid"]["feature_net"]["name"] == "mnist-sample-1x28x28-limit500" and doc["fid"]["feature_net"]["test_accuracy"] > 0.4
    assert doc["fid"]["n_generated"] == doc["n_images"] == 150
    assert doc["loss"]["elbo"] == pytest.approx(doc["loss"]["recon"] + doc["loss"]["kl"])
    assert doc["loss"]["bits_per_dim"] == pytest.approx(doc["loss"]["elbo"] / (784 * math.log(2)))
    per = np.load(tiny_run / "eval" / "val_per_image.npz")
    for key in ("ssim", "mse", "psnr", "labels", "nll"):
        assert per[key].shape == (150,)
    assert per["ssim"].mean() == pytest.approx(doc["recon_quality"]["ssim"])
    assert _hashes(tiny_run) == before  # the checkpoints are only read


def test_cli_evaluate_reports_smaller_k_from_the_same_samples(tiny_run, capsys, tmp_path):
    tiny_run = copy_run(tiny_run, tmp_path)
    code, out, err = _cli(capsys, "evaluate", tiny_run, "--split", "val", "--nll-samples", "8", "--nll-also", "2",
                          "--nll-also", "1", "--binarized", "--no-fid")
    assert code == 0, err
    assert "NLL, IWAE k=2" in out and "NLL, binarized data, k=1" in out
    nll = json.loads((tiny_run / "eval" / "val.json").read_text())["nll"]
    assert set(nll["nll_at_k"]) == set(nll["nll_binarized_at_k"]) == {"1", "2"}
    # more samples, a tighter bound: averaged over 150 images, k = 8 sits below k = 2 below k = 1
    assert nll["nll"] < nll["nll_at_k"]["2"] < nll["nll_at_k"]["1"]
    assert nll["nll_binarized"] < nll["nll_binarized_at_k"]["2"] < nll["nll_binarized_at_k"]["1"]
    code, out, err = _cli(capsys, "evaluate", tiny_run, "--split", "val", "--nll-samples", "8", "--nll-also", "8", "--no-fid")
    assert code != 0 and "--nll-also 8 is not below --nll-samples 8" in out + err


def test_cli_evaluate_no_fid(tiny_run, capsys, tmp_path):
    tiny_run = copy_run(tiny_run, tmp_path)
    code, out, err = _cli(capsys, "evaluate", tiny_run, "--split", "train", "--nll-samples", "3", "--no-fid")
    assert code == 0, err
    doc = json.loads((tiny_run / "eval" / "train.json").read_text())
    assert doc["fid"] is None and any("--no-fid" in n for n in doc["notes"])
    assert doc["n_images"] == 300


def test_evaluate_conditional_run_judges_its_samples(tiny_conditional_run, feature_net_dir):
    from vaelab.evaluate import evaluate_run, load_feature_net

    res = evaluate_run(tiny_conditional_run, split="val", nll_samples=2, features=load_feature_net(feature_net_dir), max_generated=60,
                       binarized=True)
    ca = res["conditional_accuracy"]
    assert set(ca["per_class"]) == {"1", "4", "8"} and ca["n_per_class"] == 20  # 60 images, 3 classes
    assert 0.0 <= ca["accuracy"] <= 1.0
    assert set(ca["gmm"]["per_class"]) == {"1", "4", "8"} and 0.0 <= ca["gmm"]["accuracy"] <= 1.0  # per-class GMM z
    assert res["fid"]["gmm"] >= 0 and "nll_binarized" in res["nll"]
    cold = evaluate_run(tiny_conditional_run, split="val", nll_samples=1, features=load_feature_net(feature_net_dir),
                        max_generated=60, temperature=0.3)
    assert cold["fid"]["temperature"] == 0.3 and cold["conditional_accuracy"]["temperature"] == 0.3
    assert cold["fid"]["prior"] != res["fid"]["prior"] and cold["fid"]["recon"] == res["fid"]["recon"]  # only samples change


def _write_idx(folder: Path, size: int, n: int = 8) -> None:
    """A tiny IDX dataset of size x size images (train and t10k)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        imgs = rng.integers(0, 255, (n, size, size), dtype=np.uint8)
        head = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in imgs.shape)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(head + imgs.tobytes()))
        labels = (np.arange(n) % 3).astype(np.uint8)
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + labels.tobytes()))


def test_bad_input_gives_one_line_errors(tiny_run, tmp_path, capsys):
    before = _hashes(tiny_run)
    no_ckpt = tmp_path / "no-ckpt"
    shutil.copytree(tiny_run, no_ckpt, ignore=shutil.ignore_patterns("checkpoints", "tensorboard", "eval"))
    _write_idx(tmp_path / "idx14", 14)
    cases = [
        (["evaluate", no_ckpt, "--no-fid"], "no checkpoint"),
        (["evaluate", tiny_run, "--split", "test", "--no-fid"], "no 'test' split"),
        (["evaluate", tiny_run, "--split", "holdout", "--no-fid"], "unknown split"),
        (["evaluate", tiny_run, "--nll-samples", "0"], "--nll-samples is 0"),
        (["evaluate", tiny_run, "--data", f"idx:{tmp_path / 'idx14'}", "--no-fid"], "shape (1, 14, 14) but the model takes (1, 28, 28)"),
        (["evaluate", tiny_run, "--inception", tmp_path / "nope.pth", "--split", "val", "--nll-samples", "1"], "not found"),
        (["evaluate", tmp_path / "nowhere"], "not found"),
        (["features", "train", f"idx:{tmp_path / 'idx14'}", "--epochs", "0"], "at least one epoch"),
    ]
    for args, message in cases:
        code, out, err = _cli(capsys, *args)
        assert code == 2, (args, out, err)
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
    assert _hashes(tiny_run) == before


def test_data_that_does_not_fit_the_model(tiny_run, tmp_path):
    from vaelab.data import ImageSet
    from vaelab.evaluate import evaluate_run

    wrong = ImageSet(torch.zeros(4, 3, 28, 28, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), ["0"], torch.full((4,), 2, dtype=torch.int8))
    with pytest.raises(VaelabError, match=r"shape \(3, 28, 28\) but the model takes \(1, 28, 28\)"):
        evaluate_run(tiny_run, split="test", data=wrong, fid=False)


def test_features_train_cli_writes_a_loadable_network(tmp_path, capsys):
    from vaelab.evaluate.features import load_feature_net

    _write_idx(tmp_path / "idx", 12, n=30)
    out = tmp_path / "fn"
    code, text, err = _cli(capsys, "features", "train", f"idx:{tmp_path / 'idx'}", "--epochs", "1", "--batch-size", "8", "--out", out)
    assert code == 0, err
    assert "test accuracy" in text
    fn = load_feature_net(out)
    assert fn.shape == (1, 12, 12) and fn.meta["held_out"] == "test" and fn.meta["train_images"] == 27


def test_gaussian_run_has_no_binarized_nll(tmp_path):
    from conftest import tiny_config
    from vaelab.evaluate import evaluate_run
    from vaelab.train import fit

    run_dir = fit(tiny_config(tmp_path, "model.likelihood=gaussian", "train.epochs=1", "data.limit=100"), quiet=True)["run_dir"]
    res = evaluate_run(run_dir, split="val", nll_samples=4, fid=False)
    assert "nll_binarized" not in res["nll"] and "Gaussian" in res["loss"]["note"]
    assert res["nll"]["nll"] <= res["loss"]["elbo"] + 1.0
    assert res["per_image"]["nll"].shape == (res["n_images"],)


def test_cli_evaluates_the_val_split_of_data_without_a_test_split(tmp_path, capsys):
    """A photo folder with train/ and val/ only: `vaelab evaluate RUN` says so and evaluates val."""
    from vaelab.train import fit

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "digits.npz", images=rng.integers(0, 256, (80, 28, 28), dtype=np.uint8), labels=rng.integers(0, 2, 80))
    cfg = tiny_config(tmp_path, f"data.source=npz:{tmp_path / 'digits.npz'}", "data.classes=null", "data.val_fraction=0.25", "train.epochs=1")
    run_dir = tmp_path / "run"
    fit(cfg, run_dir=run_dir, quiet=True)
    assert cli("evaluate", run_dir, "--no-fid", "--nll-samples", "1") == 0
    out = capsys.readouterr().out
    assert "no test split; evaluating its val split" in out
    result = json.loads((run_dir / "eval" / "val.json").read_text())
    assert result["split"] == "val" and result["n_images"] == 20 and not (run_dir / "eval" / "test.json").exists()
