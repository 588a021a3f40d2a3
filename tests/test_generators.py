"""Generators (issue 23): ex-post samplers (GMM, MAF, cached per run), WAE-MMD / InfoVAE, RAE, VQ-VAE.

The losses are checked against hand computations, the MAF against torch.distributions, and every family goes
through train / evaluate / sample / plot / classify and resumes exactly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import cli, make_idx_dir, needs_data, shared_data, tiny_config
from vaelab.config import load_config
from vaelab.errors import VaelabError
from vaelab.models import OBJECTIVES, build
from vaelab.models.maf import MAF
from vaelab.models.regularized import kernel, mmd2
from vaelab.train import fit

FAMILIES = {
    "infovae": ("model.objective=mmd", "model.mmd_weight=10"),
    "wae": ("model.objective=mmd", "model.posterior=delta", "model.mmd_kernel=rbf"),
    "rae-l2": ("model.objective=rae", "model.rae_reg=l2"),
    "rae-gp": ("model.objective=rae", "model.rae_reg=gp"),
}
QUICK = ("train.images_every=0", "train.save_latents=false")


def model_for(*overrides: str, size: int = 12):
    cfg = load_config(None, ["model.hidden=[16]", "model.latent_dim=3", *overrides]).model
    cfg.image_size, cfg.channels, cfg.num_classes = size, 1, 0
    torch.manual_seed(0)
    return build(cfg)


def batch(n: int = 6, size: int = 12, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.rand(n, 1, size, size, generator=g) * 0.6, generator=g)


# -- MMD ---------------------------------------------------------------------------------------------------
def test_mmd_matches_a_hand_computation():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.0, 0.0]])
    c = 2 * 2  # 2 D sigma^2
    k = lambda a, b: c / (c + sum((ai - bi) ** 2 for ai, bi in zip(a, b, strict=True)))  # noqa: E731
    xs, ys = x.tolist(), y.tolist()
    kxx = (k(xs[0], xs[1]) + k(xs[1], xs[0])) / 2
    kyy = sum(k(ys[i], ys[j]) for i in range(3) for j in range(3) if i != j) / 6
    kxy = sum(k(a, b) for a in xs for b in ys) / 6
    assert mmd2(x, y, "imq").item() == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-6)
    assert kernel(x, y, "rbf")[0, 1].item() == pytest.approx(math.exp(-4 / c))


@pytest.mark.parametrize("kind", ["imq", "rbf"])
def test_mmd_near_zero_for_one_distribution_and_positive_for_shifted(kind):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 4, generator=g), torch.randn(400, 4, generator=g)
    same, shifted = mmd2(a, b, kind).item(), mmd2(a, b + 1.5, kind).item()
    assert abs(same) < 0.01 and shifted > 0.1 and shifted > 20 * abs(same)


def test_mmd_objective_is_recon_plus_weighted_terms():
    model = model_for(*FAMILIES["infovae"])
    x = batch()
    torch.manual_seed(5)
    t = OBJECTIVES["mmd"](model, x, kl_weight=0.5)
    assert t.loss.item() == pytest.approx((t.recon + 0.5 * t.kl + 10 * t.extra["mmd"]).item(), rel=1e-5)
    wae = model_for(*FAMILIES["wae"])
    t = OBJECTIVES["mmd"](wae, x)
    assert t.kl.item() == 0 and t.loss.item() == pytest.approx((t.recon + 10 * t.extra["mmd"]).item(), rel=1e-5)


# -- RAE ---------------------------------------------------------------------------------------------------
def test_rae_encoder_is_deterministic_and_l2_loss_matches_by_hand():
    model = model_for("model.objective=rae", "model.rae_weight=0.01", "model.beta=0.5").eval()
    x = batch()
    z1, z2 = model.encode(x).rsample(), model.encode(x).rsample()
    assert torch.equal(z1, z2) and model.no_density
    t = OBJECTIVES["rae"](model, x, kl_weight=0.5)
    z = model.encode(x).mean
    recon = -model.likelihood.log_prob(model.decode(z), x).mean()
    l2 = sum(p.pow(2).sum() for p in model.decoder.parameters())
    want = recon + 0.5 * 0.5 * z.pow(2).sum(-1).mean() + 0.01 * l2
    assert t.loss.item() == pytest.approx(want.item(), rel=1e-5)


def test_rae_gradient_penalty_matches_autograd_per_image():
    model = model_for("model.objective=rae", "model.rae_reg=gp", "model.rae_weight=1").eval()
    x = batch(3)
    t = OBJECTIVES["rae"](model, x, kl_weight=0.0)
    z = model.encode(x).mean.detach()
    norms = []
    for i in range(3):  # the gradient of image i's decoded sum with respect to its own code
        zi = z[i : i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model.likelihood.mean(model.decode(zi)).sum(), zi)
        norms.append(g.pow(2).sum())
    assert t.extra["decoder_reg"].item() == pytest.approx(torch.stack(norms).mean().item(), rel=1e-4)
    t.loss.backward()  # the penalty is differentiable (double backward)
    assert all(p.grad is not None for p in model.decoder.parameters())


def test_delta_posterior_needs_a_family_without_kl():
    with pytest.raises(VaelabError, match="delta"):
        load_config(None, ["model.posterior=delta"])


# -- MAF ---------------------------------------------------------------------------------------------------
def test_maf_with_constant_steps_is_a_diagonal_gaussian():
    flow = MAF(3, steps=2, hidden=8)
    with torch.no_grad():
        flow.mades[0].out.bias.copy_(torch.tensor([0.5, -1.0, 2.0, 0.1, -0.3, 0.2]))  # (mu, alpha) per dim
        flow.shift.copy_(torch.tensor([1.0, 0.0, -1.0]))
        flow.scale.copy_(torch.tensor([2.0, 1.0, 0.5]))
    mu, alpha = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.1, -0.3, 0.2])
    loc = flow.shift + flow.scale * mu
    scale = flow.scale * torch.exp(alpha)
    z = torch.randn(5, 3)
    want = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
    assert torch.allclose(flow.log_prob(z), want, atol=1e-5)


def test_maf_fits_a_correlated_gaussian_and_inverts():
    g = torch.Generator().manual_seed(0)
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
    true = torch.distributions.MultivariateNormal(torch.tensor([1.0, -2.0]), cov)
    torch.manual_seed(0)
    data = true.sample((2000,))
    flow = MAF(2, steps=3, hidden=16).fit(data, epochs=15)
    test = true.sample((1000,))
    gap = (true.log_prob(test) - flow.log_prob(test).detach()).mean().item()
    assert gap < 0.1  # close to the true density (a diagonal Gaussian would be 0.51 nats worse)
    u = torch.randn(7, 2, generator=g)
    x = flow.inverse(u)
    back, _ = flow._to_noise(x)
    assert torch.allclose(back, u, atol=1e-4)
    s = flow.sample(4000, generator=g)
    assert torch.allclose(s.mean(0), torch.tensor([1.0, -2.0]), atol=0.1)
    assert abs(torch.corrcoef(s.T)[0, 1].item() - 0.8) < 0.08


# -- samplers of a run ----------------------------------------------------------------------------------------
def test_samplers_are_fitted_once_and_cached(tiny_run):
    from vaelab.latent.expost import get_sampler, sample_images
    from vaelab.run import load_run

    r = load_run(tiny_run)
    for name in ("gmm", "maf"):
        path = tiny_run / "samplers" / f"{name}.safetensors"
        path.unlink(missing_ok=True)
        a = get_sampler(r, name, seed=3)
        assert path.is_file()
        stamp = path.stat().st_mtime_ns
        b = get_sampler(r, name, seed=3)
        assert path.stat().st_mtime_ns == stamp  # read back, not refitted
        g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
        assert torch.equal(a.sample(16, generator=g1), b.sample(16, generator=g2))
        assert b"pickle" not in path.read_bytes()[:200]
    images, what = sample_images(r, "maf", 5, seed=0)
    assert images.shape == (5, 1, 28, 28) and "MAF" in what
    with pytest.raises(VaelabError, match="vq"):
        get_sampler(r, "vq-prior")


def test_cli_sample_and_evaluate_with_maf(tiny_run, tmp_path):
    assert cli("sample", tiny_run, "--sampler", "maf", "-n", "4", "--out", tmp_path / "m.png") == 0
    assert (tmp_path / "m.png").is_file()
    assert cli("sample", tiny_run, "--sampler", "nope", "--out", tmp_path / "x.png") == 2


# -- every family through the commands -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory) -> Path:
    return make_idx_dir(tmp_path_factory.mktemp("gen-idx"), n_train=60, n_test=15, size=12)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_runs_through_the_commands(tmp_path, idx_dir, family):
    run = tmp_path / family
    base = [f"data.source=idx:{idx_dir}", "model.hidden=[16]", "model.latent_dim=2", "train.epochs=2",
            "train.batch_size=16", *FAMILIES[family]]
    assert cli("train", *base, "--run-dir", run, "-q") == 0
    assert cli("evaluate", run, "--nll-samples", "5", "--no-fid") == 0
    result = json.loads((run / "eval" / "test.json").read_text())
    assert math.isfinite(result["loss"]["recon"])
    if build_no_density(family):
        assert result["nll"]["nll"] is None and "skipped" in result["nll"]
    else:
        assert math.isfinite(result["nll"]["nll"])
    for sampler in ("gmm", "maf"):
        assert cli("sample", run, "--sampler", sampler, "-n", "4", "--out", tmp_path / f"{sampler}.png") == 0
    assert cli("plot", run, "recon", "samples", "manifold", "scatter") == 0
    assert cli("classify", run, "--method", "gmm") == 0
    if family == "wae":  # the HTML report reads an evaluation without an NLL
        assert cli("report", run) == 0


def build_no_density(family: str) -> bool:
    return "model.posterior=delta" in FAMILIES[family] or "model.objective=rae" in FAMILIES[family]


@pytest.mark.parametrize("family", ["infovae", "wae", "rae-l2", "rae-gp"])
def test_every_family_resumes_exactly(tmp_path, family):
    from vaelab.train.checkpoint import load_checkpoint

    over = (*FAMILIES[family], *QUICK, "data.limit=128")
    straight = fit(tiny_config(tmp_path, "train.epochs=2", "name=straight", *over), quiet=True)["run_dir"]
    part = fit(tiny_config(tmp_path, "train.epochs=1", "name=part", *over), quiet=True)["run_dir"]
    fit(tiny_config(tmp_path, "train.epochs=2", "name=part", *over), run_dir=part, resume=True, quiet=True)
    a, b = (load_checkpoint(Path(d) / "checkpoints/last.ckpt")["model"] for d in (straight, part))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- VQ-VAE ----------------------------------------------------------------------------------------------------
VQ = ("model.latent=vq", "model.objective=vq", "model.latent_dim=8", "model.code_dim=2", "model.codebook_size=6")


def test_straight_through_gradient_reaches_the_encoder():
    model = model_for(*VQ, "model.codebook_update=loss")
    t = OBJECTIVES["vq"](model, batch())
    t.loss.backward()
    assert model.encoder.head.weight.grad.abs().sum() > 0 and model.quantizer.codebook.grad.abs().sum() > 0


def test_ema_codebook_update_matches_a_hand_computation():
    model = model_for(*VQ, "model.ema_decay=0.5", "model.dead_code=0")
    q = model.quantizer
    q.codebook.data.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10, 10], [10, -10], [-10, -10], [20, 20]]))
    q.ema_sum.copy_(q.codebook.data)
    q.ema_count.fill_(1.0)
    flat = torch.tensor([[1.0, 0.0], [0.0, 2.0], [9.0, 9.0]])
    idx = q.nearest(flat)
    assert idx.tolist() == [0, 0, 1]
    q.ema_update(flat, idx)
    # N_0 = 0.5 * 1 + 0.5 * 2 = 1.5, m_0 = 0.5 * (0, 0) + 0.5 * (1, 2) = (0.5, 1); e_0 = m_0 / N_0
    assert torch.allclose(q.codebook[0], torch.tensor([0.5, 1.0]) / 1.5)
    # N_1 = 0.5 + 0.5 = 1, m_1 = 0.5 * (10, 10) + 0.5 * (9, 9)
    assert torch.allclose(q.codebook[1], torch.tensor([9.5, 9.5]))
    assert torch.allclose(q.codebook[5], torch.tensor([20.0, 20.0]))  # unused: N and m both halve


def test_dead_codes_are_restarted_on_batch_vectors():
    model = model_for(*VQ, "model.dead_code=0.6")
    q = model.quantizer
    q.ema_count.copy_(torch.tensor([5.0, 0.1, 5.0, 0.5, 5.0, 5.0]))
    flat = torch.randn(10, 2) + 100
    assert q.restart_dead(flat) == 2
    for k in (1, 3):
        assert any(torch.equal(q.codebook[k], v) for v in flat)
    assert q.codebook[0].abs().max() < 50


def test_code_prior_log_likelihood_is_the_sum_of_its_conditionals():
    from vaelab.models.vq_prior import CodePrior

    torch.manual_seed(0)
    prior = CodePrior(4, width=8, layers=2, kernel=3)
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.3 * torch.randn_like(p))
    codes = torch.tensor([[[1, 3], [0, 2]]])
    total = 0.0
    for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):
        seen = torch.zeros_like(codes)  # only the codes before (i, j) are filled in
        flat = [(0, 0), (0, 1), (1, 0), (1, 1)]
        for a, b in flat[: flat.index((i, j))]:
            seen[0, a, b] = codes[0, a, b]
        total += torch.log_softmax(prior(seen)[0, :, i, j], 0)[codes[0, i, j]].item()
    assert prior.log_prob(codes).item() == pytest.approx(total, rel=1e-5)


def test_vq_family_runs_through_the_commands(tmp_path, idx_dir):
    run = tmp_path / "vq"
    base = [f"data.source=idx:{idx_dir}", "model.hidden=[16]", "train.epochs=2", "train.batch_size=16", *VQ]
    assert cli("train", *base, "--run-dir", run, "-q") == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert any("train/perplexity" in r and "train/usage" in r for r in rows)
    assert cli("sample", run, "--sampler", "vq-prior", "-n", "2", "--out", tmp_path / "x.png") == 2  # no prior yet
    assert cli("train-prior", run, "--epochs", "2", "--width", "8") == 0
    assert (run / "samplers" / "vq-prior.safetensors").is_file()
    assert cli("sample", run, "--sampler", "vq-prior", "-n", "4", "--out", tmp_path / "v.png") == 0
    assert cli("evaluate", run, "--no-fid") == 0
    result = json.loads((run / "eval" / "test.json").read_text())
    vb = result["nll"]["vq_bound"]
    assert vb["nll"] == pytest.approx(vb["recon"] + vb["code_nll"]) and vb["code_nll"] > 0
    assert cli("plot", run, "recon", "samples", "scatter") == 0
    assert cli("classify", run, "--method", "gmm") == 0


def test_vq_resumes_exactly(tmp_path):
    from vaelab.train.checkpoint import load_checkpoint

    over = (*VQ, *QUICK, "data.limit=128")
    straight = fit(tiny_config(tmp_path, "train.epochs=2", "name=straight", *over), quiet=True)["run_dir"]
    part = fit(tiny_config(tmp_path, "train.epochs=1", "name=part", *over), quiet=True)["run_dir"]
    fit(tiny_config(tmp_path, "train.epochs=2", "name=part", *over), run_dir=part, resume=True, quiet=True)
    a, b = (load_checkpoint(Path(d) / "checkpoints/last.ckpt")["model"] for d in (straight, part))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_evaluate_scores_the_chosen_sampler(tiny_run, tmp_path):
    import shutil

    from vaelab.evaluate.features import load_training_data, train_feature_net
    from vaelab.evaluate.report import summary_rows
    from vaelab.evaluate.run import evaluate_run

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("samplers", "eval"))
    data = load_training_data("mnist-sample", limit=200)
    fx = train_feature_net(data, spec="mnist-sample", epochs=1, batch_size=32, widths=(4, 8, 8), limit=200)
    res = evaluate_run(run, split="val", nll_samples=2, features=fx, max_generated=60, sampler="maf")
    fid = res["fid"]
    assert {"prior", "gmm", "maf", "recon"} <= set(fid) and fid["maf"] >= 0 and "maf" in fid["precision"]
    assert "MAF" in fid["samplers"]["maf"] and (run / "samplers" / "maf.safetensors").is_file()
    assert any("MAF" in name for name, _ in summary_rows(res))


@pytest.mark.slow  # two studies of two trials: about 30 s on 2 cores
def test_two_trial_sweeps_of_the_generator_families(tmp_path, idx_dir, fast_trial_reports):
    base = [f"data.source=idx:{idx_dir}", "model.hidden=[16]", "train.epochs=1", "train.batch_size=16"]
    for name, extra, grid in (
        ("reg", ["model.latent_dim=2"], "model.objective=mmd,rae"),
        ("vq", list(VQ), "model.codebook_size=4,6"),
    ):
        study = tmp_path / name
        assert cli("sweep", *base, *extra, "--grid", grid, "--study-dir", study, "--no-evaluate", "-q") == 0
        assert len(list((study / "trials").iterdir())) == 2


# -- benchmarks/generators.py ---------------------------------------------------------------------------------
def _generators():
    import importlib.util
    import sys

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("generators_bench", root / "benchmarks" / "generators.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["generators_bench"] = mod
    spec.loader.exec_module(mod)
    return mod, root


def test_generator_rows_have_valid_configs():
    g, root = _generators()
    assert len({n for n, _, _ in g.ROWS}) == len(g.ROWS) == 12
    for name, ds, fam in g.ROWS:
        cfg = load_config(root / "configs" / "gen-conv.yaml", [f"data.source={ds}", f"name={name}", *fam.overrides])
        assert cfg.model.arch == "conv" and cfg.model.conv_channels == [32, 64, 128]  # one architecture for all


def test_generator_table_judges_the_targets():
    g, _ = _generators()

    def row(mse, **fids):
        return {"samplers": {k: {"fid": v, "precision": 0.5, "recall": 0.5} for k, v in fids.items()}, "mse": mse, "ssim": 0.8,
                "code_bits": "-", "epochs": 1, "train_minutes": 1.0}

    results = {"mnist-vae": row(0.02, prior=20.0, gmm=10.0, maf=9.0), "mnist-vamp": row(0.02, prior=8.0, gmm=9.0, maf=8.5),
               "mnist-rae-l2": row(0.015, gmm=6.5, maf=7.0), "mnist-vq": {**row(0.01, **{"vq-prior": 12.0}), "code_bits": "64"},
               "mnist-wae": {"error": "boom"}}
    met = g.judge(results)
    assert met["ex-post beats the prior (every Gaussian family)"] is False  # the VampPrior's prior wins
    assert met["best MNIST FID <= 0.7 x VAE + GMM"] is True  # 6.5 <= 7.0
    assert met["VQ-VAE lowest MSE (MNIST)"] is True and met["VQ-VAE lowest MSE (Fashion-MNIST)"] is None
    text = g.table(results)
    assert "| MNIST | RAE-L2 | gmm | 6.50 |" in text and "error: boom" in text and "**not met**" in text


@pytest.mark.slow  # two rows of the quick budget: about 2 minutes on 2 cores
@needs_data("mnist")
def test_quick_generators_end_to_end(tmp_path):
    import os
    import subprocess
    import sys

    _, root = _generators()
    env = {**os.environ, "VAELAB_DATA": str(shared_data()), "OMP_NUM_THREADS": "1", "VAELAB_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, str(root / "benchmarks" / "generators.py"), "--budget", "quick", "--only", "mnist-rae-gp,mnist-vq",
           "--out", str(tmp_path / "q")]
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "q" / "results.json").read_text())
    for name in ("mnist-rae-gp", "mnist-vq"):
        assert "error" not in results[name], results[name]
        ev = json.loads((tmp_path / "q" / name / "eval" / "test.json").read_text())
        assert results[name]["mse"] == ev["recon_quality"]["mse"]  # the table's number is the CLI's
    assert set(results["mnist-rae-gp"]["samplers"]) == {"gmm", "maf"} and results["mnist-vq"]["vq_bound"] > 0
    assert "| MNIST | VQ-VAE (4x4 codes, K = 64) | vq-prior |" in done.stdout


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["model.latent=vq"], "go together"),
        (["model.objective=vq"], "go together"),
        ([*VQ, "model.stochastic_layers=2"], "one quantised layer"),
        (["model.objective=rae", "model.posterior=iaf"], "deterministic encoder"),
        (["model.objective=mmd", "model.free_bits=0.5"], "free_bits is not part"),
        (["model.mmd_kernel=laplace"], "imq, rbf"),
        ([*VQ, "model.latent_dim=9"], "multiple"),
    ],
)
def test_generator_family_conflicts_are_one_line_errors(overrides, match):
    with pytest.raises(VaelabError, match=match):
        model_for(*overrides)


def test_sampler_cache_is_refitted_for_another_checkpoint(tiny_run, tmp_path):
    import os
    import shutil

    from vaelab.latent.expost import get_sampler
    from vaelab.run import load_run

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("samplers", "eval"))
    get_sampler(load_run(run), "gmm")
    cache = run / "samplers" / "gmm.safetensors"
    first = cache.stat().st_mtime_ns
    get_sampler(load_run(run), "gmm", components=3)  # other settings: refitted
    assert cache.stat().st_mtime_ns != first
    second = cache.stat().st_mtime_ns
    ck = run / "checkpoints" / "best.ckpt"
    os.utime(ck, ns=(ck.stat().st_atime_ns, ck.stat().st_mtime_ns + 10**9))  # "another" checkpoint file
    r = load_run(run)
    get_sampler(r, "gmm", components=3)
    assert cache.stat().st_mtime_ns != second
    cache.write_bytes(b"garbage")  # a broken cache is refitted, never trusted
    assert get_sampler(r, "gmm", components=3).sample(4).shape == (4, 2)
