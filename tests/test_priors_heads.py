"""Learned priors (mixture, per class) and the autoregressive decoder head: their math, causality, and runs."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal, kl_divergence

from conftest import cli, tiny_config
from vaelab.config import ModelConfig
from vaelab.errors import VaelabError
from vaelab.models import build, vae_loss
from vaelab.models.autoregressive import PixelCNNHead, raster_mask
from vaelab.models.posterior import DiagonalGaussian
from vaelab.models.prior import ClassPrior, MixturePrior


def model_cfg(**kw) -> ModelConfig:
    base = dict(latent_dim=3, image_size=8, channels=1, num_classes=3, hidden=[16])
    return dataclasses.replace(ModelConfig(), **{**base, **kw})


# ---------------------------------------------------------------------------------------------------------
# priors


def _randomised(prior):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in prior.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.7)
    return prior


def test_mixture_prior_log_prob_matches_torch():
    prior = _randomised(MixturePrior(3, 4))
    ref = MixtureSameFamily(
        Categorical(logits=prior.logits), Independent(Normal(prior.mean, torch.exp(0.5 * prior.logvar)), 1)
    )
    z = torch.randn(5, 7, 3)  # leading sample dimensions broadcast
    assert torch.allclose(prior.log_prob(z), ref.log_prob(z), atol=1e-5)


def test_mixture_prior_kl_is_unbiased_and_matches_the_closed_form_for_one_component():
    prior = MixturePrior(2, 1)  # one component at N(0, I): the standard VAE's KL in expectation
    with torch.no_grad():
        prior.mean.zero_()
    q = DiagonalGaussian(torch.tensor([[0.5, -1.0], [2.0, 0.3]]), torch.tensor([[-1.0, 0.2], [0.0, -2.0]]))
    torch.manual_seed(0)
    est = prior.kl(q, q.rsample(20000)).detach()
    assert torch.allclose(est, q.kl(), atol=0.05), (est, q.kl())


def test_class_prior_kl_matches_torch_and_samples_follow_labels():
    prior = _randomised(ClassPrior(3, 4))
    q = DiagonalGaussian(torch.randn(6, 3), torch.randn(6, 3))
    y = torch.tensor([0, 1, 2, 3, 1, 0])
    ref = kl_divergence(
        Normal(q.mean, q.std), Normal(prior.mean[y], torch.exp(0.5 * prior.logvar[y]))
    ).sum(-1)
    assert torch.allclose(prior.kl(q, None, y), ref, atol=1e-5)
    labels = torch.full((4000,), 2)
    z = prior.sample(4000, labels, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(z.mean(0), prior.mean[2], atol=0.1)
    assert torch.allclose(z.std(0), torch.exp(0.5 * prior.logvar[2]), atol=0.1)
    with pytest.raises(VaelabError, match="labels"):
        prior.sample(4)


def test_mixture_prior_is_learned_and_samples_from_its_components():
    model = build(model_cfg(prior="mog", prior_components=3))
    before = model.prior.mean.detach().clone()
    x = torch.rand(16, 1, 8, 8)
    vae_loss(model, x).loss.backward()
    assert model.prior.mean.grad is not None and model.prior.mean.grad.abs().sum() > 0
    assert torch.equal(before, model.prior.mean.detach())  # a gradient, not yet a step
    z = model.prior.sample(3000, generator=torch.Generator().manual_seed(1))
    nearest = torch.cdist(z, model.prior.mean.detach()).argmin(1)
    assert set(nearest.tolist()) == {0, 1, 2}  # every component contributes samples


@pytest.mark.parametrize(
    "overrides, match",
    [(("model.prior=class",), "conditional"), (("model.prior=mog", "model.free_bits=0.5"), "free_bits"),
     (("model.pixelcnn_layers=1", "model.pixelcnn_kernel=4"), "odd")],
)
def test_bad_prior_and_head_settings_get_one_line(tmp_path, overrides, match):
    with pytest.raises(VaelabError, match=match):
        tiny_config(tmp_path, *overrides)


# ---------------------------------------------------------------------------------------------------------
# the autoregressive head


def _random_head(channels: int, layers: int, kernel: int) -> PixelCNNHead:
    torch.manual_seed(channels * 10 + layers)
    head = PixelCNNHead(channels, 6, layers, kernel)
    for p in head.out.parameters():  # the output layer starts at zero; give it weights to test its masks
        torch.nn.init.normal_(p, std=0.5)
    return head


@pytest.mark.parametrize("channels, layers, kernel", [(1, 2, 5), (3, 2, 3), (2, 1, 3)])
def test_head_output_depends_only_on_earlier_pixels_and_channels(channels, layers, kernel):
    head = _random_head(channels, layers, kernel)
    h = w = 5
    ctx = torch.rand(1, channels, h, w, requires_grad=True)
    out = head(torch.randn(1, channels, h, w), ctx)

    def order(c, i, j):  # raster order, channels innermost
        return (i * w + j) * channels + c

    for c in range(channels):
        for i in range(h):
            for j in range(w):
                (g,) = torch.autograd.grad(out[0, c, i, j], ctx, retain_graph=True)
                seen = {order(cc, ii, jj) for cc in range(channels) for ii in range(h) for jj in range(w)
                        if g[0, cc, ii, jj] != 0}
                assert all(o < order(c, i, j) for o in seen), (c, i, j)
                if (i, j) == (2, 2):
                    assert seen, "the head sees no earlier pixel at all"


def test_masks_at_the_centre_follow_the_colour_groups():
    a = raster_mask("A", 3, 6, 3, 3)[:, :, 1, 1]  # 3 input colours -> 6 features (2 per colour group)
    assert a.tolist() == [[0, 0, 0], [0, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 0]]
    b = raster_mask("B", 6, 3, 1, 3)[:, :, 0, 0]
    assert b.tolist() == [[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]


@pytest.mark.parametrize("channels, layers, kernel", [(1, 3, 5), (3, 2, 3), (1, 1, 7)])
def test_generation_equals_a_teacher_forced_pass_over_what_it_generated(channels, layers, kernel):
    head = _random_head(channels, layers, kernel)
    base = torch.randn(3, channels, 9, 11)
    params = head.generate(base, torch.sigmoid)
    assert torch.allclose(head(base, torch.sigmoid(params)), params, atol=1e-5)  # the windowed steps are exact


def test_a_new_head_starts_as_the_factorized_decoder():
    torch.manual_seed(0)
    model = build(model_cfg(pixelcnn_layers=2, pixelcnn_channels=8, pixelcnn_kernel=3))
    z, x = torch.randn(4, 3), torch.rand(4, 1, 8, 8)
    base = model.decoder(z, None)
    assert torch.allclose(model.decode(z, context=x), base)
    assert torch.allclose(model.generate(z), torch.sigmoid(base))


def _stripes(n: int, seed: int) -> torch.Tensor:
    """Images whose every column is one random grey level: each pixel equals the one above it, which no
    factorized decoder with a 1-D code can predict."""
    g = torch.Generator().manual_seed(seed)
    cols = torch.rand(n, 1, 1, 8, generator=g)
    return cols.expand(n, 1, 8, 8).contiguous()


def _fit(model, steps: int = 250) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for s in range(steps):
        loss = vae_loss(model, _stripes(64, s)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        torch.manual_seed(0)
        return vae_loss(model, _stripes(256, 10_000)).elbo_loss.item()


def test_the_head_learns_what_a_factorized_decoder_cannot():
    torch.manual_seed(0)
    flat = _fit(build(model_cfg(latent_dim=1)))
    torch.manual_seed(0)
    ar = _fit(build(model_cfg(latent_dim=1, pixelcnn_layers=1, pixelcnn_channels=8, pixelcnn_kernel=3)))
    # the floor is the entropy of the grey targets, about 64 * 0.5 = 32 nats; a factorized decoder pays
    # for every column it cannot guess, the head copies the pixel above
    assert ar < flat - 5, (ar, flat)


# ---------------------------------------------------------------------------------------------------------
# end to end: train, evaluate, sample with a learned prior and with the head


def test_runs_with_a_mixture_prior_and_a_head_train_evaluate_and_sample(tmp_path):
    cfg = tiny_config(
        tmp_path, "model.prior=mog", "model.prior_components=3", "model.pixelcnn_layers=1",
        "model.pixelcnn_channels=4", "model.pixelcnn_kernel=3", "data.image_size=12", "train.epochs=1",
        "train.images_every=1",
    )
    from vaelab.train import fit

    run = fit(cfg, quiet=True)["run_dir"]
    assert cli("evaluate", run, "--split", "val", "--no-fid", "--nll-samples", "4") == 0
    ev = json.loads((tmp_path / "tiny" / "eval" / "val.json").read_text())
    assert ev["model"]["prior"] == "mog"
    assert math.isfinite(ev["nll"]["nll"]) and ev["nll"]["nll"] <= ev["loss"]["elbo"] + 5.0
    assert 0.0 < ev["recon_quality"]["ssim"] <= 1.0
    out = tmp_path / "s.png"
    assert cli("sample", run, "-n", "4", "--out", out) == 0 and out.stat().st_size > 0
    assert cli("plot", run, "manifold", "samples", "recon") == 0
    assert all((tmp_path / "tiny" / "figures" / f"{f}.png").stat().st_size > 0 for f in ("manifold", "samples", "recon"))
    from vaelab.run import load_run

    r = load_run(run)
    assert r.model.autoregressive and r.model.prior.mean.shape == (3, 2)


def test_the_manifold_grid_covers_a_learned_prior():
    from vaelab.visualize.latent import dims_plane, prior_plane

    normal = build(model_cfg())
    plane = prior_plane(normal, 0, 2)
    ref = dims_plane(3, 0, 2)
    assert (plane.origin == ref.origin).all() and (plane.u == ref.u).all() and (plane.v == ref.v).all()
    mog = _randomised_model(build(model_cfg(prior="mog", prior_components=4)))
    mean, std = (t.numpy() for t in mog.prior.moments())
    plane = prior_plane(mog, 0, 2)
    assert abs(plane.origin - mean).max() < 1e-6 and abs(plane.u[0] - std[0]) < 1e-6 and plane.u[1] == 0


def _randomised_model(model):
    _randomised(model.prior)
    return model


def test_temperature_scales_the_spread_of_every_sampler():
    from vaelab.latent.samplers import GMMSampler
    from vaelab.models.prior import StandardNormalPrior

    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert abs(StandardNormalPrior(2).sample(20000, generator=g(), temperature=0.5).std().item() - 0.5) < 0.01
    cls = _randomised(ClassPrior(2, 3))
    z = cls.sample(20000, torch.zeros(20000, dtype=torch.long), generator=g(), temperature=0.5)
    assert torch.allclose(z.std(0), 0.5 * torch.exp(0.5 * cls.logvar[0]), rtol=0.05)
    assert torch.allclose(z.mean(0), cls.mean[0], atol=0.02)
    mog = MixturePrior(2, 1)
    with torch.no_grad():
        mog.logvar.fill_(math.log(4.0))
    assert (mog.sample(20000, generator=g(), temperature=0.25).std(0) - 0.5).abs().max() < 0.01
    rng = torch.Generator().manual_seed(0)
    pts = (torch.randn(4000, 2, generator=rng) * torch.tensor([2.0, 0.5])).numpy()
    s = GMMSampler(1, seed=0).fit(pts)
    hot, cold = s.sample(20000), GMMSampler(1, seed=0).fit(pts).sample(20000, temperature=0.5)
    assert abs(cold.std(0) / hot.std(0) - 0.5).max() < 0.03


def test_evaluate_records_its_sampling_temperature(tiny_conditional_run, tmp_path):
    from conftest import copy_run

    run = copy_run(tiny_conditional_run, tmp_path)
    assert cli("evaluate", run, "--temperature", "0") == 2
    assert not (run / "eval" / "test.json").exists()
