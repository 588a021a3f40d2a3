"""Model families (issue 21): IWAE (and MIWAE/CIWAE/PIWAE), VampPrior, stochastic layers, IAF posterior.

The bounds and densities are checked against their definitions; every family builds at 28/64/128 px, moves
every parameter in one step, resumes exactly and runs through the commands.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import cli, make_idx_dir, tiny_config
from vaelab.config import CHOICES, load_config
from vaelab.errors import VaelabError
from vaelab.models import OBJECTIVES, POSTERIORS, PRIORS, build
from vaelab.models.flows import IAFStep
from vaelab.train import fit

# the families of the issue, as overrides of a tiny config
FAMILIES = {
    "iwae": ("model.objective=iwae", "model.iw_samples=3"),
    "piwae": ("model.objective=piwae", "model.iw_samples=2", "model.iw_groups=2"),
    "vamp": ("model.prior=vamp", "model.prior_components=4"),
    "two-layer": ("model.stochastic_layers=2", "model.layer_hidden=[16]"),
    "iaf": ("model.posterior=iaf", "model.flow_steps=2", "model.flow_hidden=16"),
    "two-layer-vamp-iwae": (
        "model.stochastic_layers=2", "model.layer_hidden=[16]", "model.layer_inference=bottomup", "model.prior=vamp", "model.prior_components=4",
        "model.objective=iwae", "model.iw_samples=2",
    ),
}
QUICK = ("train.images_every=0", "train.save_latents=false")


def model_for(*overrides: str, size: int = 28, channels: int = 1):
    cfg = load_config(None, ["model.hidden=[32]", "model.latent_dim=3", *overrides]).model
    cfg.image_size, cfg.channels, cfg.num_classes = size, channels, 0
    torch.manual_seed(0)
    return build(cfg)


def batch(n: int = 8, size: int = 28, channels: int = 1, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.rand(n, channels, size, size, generator=g) * 0.6, generator=g)


def test_registries_match_the_config_choices():
    from vaelab.models.hierarchy import LAYER_INFERENCE

    assert set(CHOICES["model.layer_inference"]) == set(LAYER_INFERENCE)
    assert set(CHOICES["model.objective"]) == set(OBJECTIVES)
    assert set(CHOICES["model.posterior"]) == set(POSTERIORS)
    assert set(CHOICES["model.prior"]) == set(PRIORS)


@pytest.mark.parametrize("extra", [(), ("model.prior=mog",), ("model.stochastic_layers=2",), ("model.posterior=iaf",)])
def test_iwae_with_one_sample_is_the_elbo_exactly(extra):
    model = model_for(*extra)
    x = batch()
    torch.manual_seed(3)
    a = OBJECTIVES["elbo"](model, x)
    torch.manual_seed(3)
    b = OBJECTIVES["iwae"](model, x, k=1)
    assert torch.equal(a.loss, b.loss) and torch.equal(a.elbo_loss, b.elbo_loss)
    # and the same gradients
    ga = torch.autograd.grad(a.loss, list(model.parameters()), allow_unused=True)
    gb = torch.autograd.grad(b.loss, list(model.parameters()), allow_unused=True)
    assert all((u is None and v is None) or torch.allclose(u, v) for u, v in zip(ga, gb, strict=True))


@pytest.mark.parametrize("extra", [(), ("model.stochastic_layers=2",)])
def test_iwae_bound_does_not_decrease_with_k(extra):
    """E[L_1] <= E[L_5] <= E[L_50] on a fixed model (Burda et al. 2016, theorem 1), averaged over repeats."""
    model = model_for(*extra).eval()
    x = batch(16)
    bounds = {}
    with torch.no_grad():
        for k in (1, 5, 50):
            torch.manual_seed(0)
            bounds[k] = -torch.stack([OBJECTIVES["iwae"](model, x, k=k).loss for _ in range(20)]).mean().item()
    assert bounds[1] <= bounds[5] + 0.05 and bounds[5] <= bounds[50] + 0.05, bounds
    assert bounds[50] - bounds[1] > 0.1, bounds  # the bound does tighten on an untrained model


def test_miwae_and_ciwae_reduce_to_their_parts():
    model = model_for("model.iw_samples=4", "model.iw_groups=1", "model.ciwae_beta=0")
    x = batch()
    torch.manual_seed(5)
    a = OBJECTIVES["iwae"](model, x, k=4).loss
    torch.manual_seed(5)
    b = OBJECTIVES["miwae"](model, x).loss
    torch.manual_seed(5)
    c = OBJECTIVES["ciwae"](model, x).loss
    assert torch.allclose(a, b) and torch.allclose(a, c)
    model.cfg.ciwae_beta = 1.0  # all ELBO: the mean of the log weights, >= the -IWAE bound
    torch.manual_seed(5)
    assert OBJECTIVES["ciwae"](model, x).loss.item() >= a.item() - 1e-4


def test_vamp_prior_density_integrates_to_one_in_2d():
    model = model_for("model.prior=vamp", "model.prior_components=5", "model.latent_dim=2")
    lim, n = 12.0, 601
    axis = torch.linspace(-lim, lim, n)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        dens = model.prior.log_prob(grid).exp()
    total = dens.sum().item() * (2 * lim / (n - 1)) ** 2
    assert abs(total - 1.0) < 0.02, total
    # and its samples come from the same mixture: their mean is the mixture's mean
    mean, std = model.prior.moments()
    z = model.prior.sample(4000, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(z.mean(0), mean, atol=4 * float(std.max()) / math.sqrt(4000) + 1e-3)


def test_vamp_prior_pseudo_inputs_are_images_and_learn():
    model = model_for("model.prior=vamp", "model.prior_components=3")
    u = model.prior.pseudo_inputs().detach()
    assert u.shape == (3, 1, 28, 28) and 0 <= float(u.min()) and float(u.max()) <= 1
    OBJECTIVES["elbo"](model, batch()).loss.backward()
    assert model.prior.pseudo_logits.grad is not None and model.prior.pseudo_logits.grad.abs().sum() > 0
    assert not any(k.startswith("prior.encoder") for k in model.state_dict())  # no duplicated weights


def test_components_log_prob_by_matrix_products_equals_the_broadcast_form():
    from vaelab.models.prior import _components_log_prob, _gaussian_log_prob

    g = torch.Generator().manual_seed(0)
    z = 3 * torch.randn(2, 7, 5, generator=g)
    mean, logvar = 2 * torch.randn(11, 5, generator=g), torch.empty(11, 5).uniform_(-6, 2, generator=g)
    direct = _gaussian_log_prob(z.double().unsqueeze(-2), mean.double(), logvar.double())  # (2, 7, 11)
    fast = _components_log_prob(z, mean, logvar)
    assert fast.shape == (2, 7, 11) and fast.dtype == torch.float32
    assert torch.allclose(fast.double(), direct, rtol=1e-6, atol=1e-4)
    mean.requires_grad_(True)
    _components_log_prob(z, mean, logvar).sum().backward()  # differentiable: the VampPrior trains through it
    assert mean.grad is not None and torch.isfinite(mean.grad).all()


def test_vamp_prior_codes_its_pseudo_inputs_once_per_state_of_the_weights_when_gradients_are_off():
    model = model_for("model.prior=vamp", "model.prior_components=3")
    calls = []
    encode = model.prior._encode
    model.prior.bind(lambda u: calls.append(1) or encode(u))
    model.prior._encode.__self__ = model  # noqa: B010 (a lambda stands in for the bound method)
    z = torch.randn(4, 3)
    with torch.no_grad():
        first = model.prior.log_prob(z)
        assert torch.equal(model.prior.log_prob(z), first) and len(calls) == 1  # cached: one encoder pass
        next(model.encoder.parameters()).add_(0.1)  # an optimizer step or a loaded state: a new version
        moved = model.prior.log_prob(z)
        assert len(calls) == 2 and not torch.equal(moved, first)
    fresh = model.prior.log_prob(z)  # with gradients on it is never cached, and the gradient reaches u
    assert len(calls) == 3 and torch.allclose(fresh, moved)
    fresh.sum().backward()
    assert model.prior.pseudo_logits.grad.abs().sum() > 0


def test_vamp_prior_of_a_batch_norm_encoder_leaves_its_running_statistics_to_the_data():
    """A conv encoder with batch norm: the pseudo-inputs are coded with the running statistics in training as
    in evaluation, and never move them (they once pulled them away from the data: 700 nats of val KL)."""
    model = model_for("model.arch=conv", "model.conv_channels=[8,16]", "model.prior=vamp", "model.prior_components=4")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms
    model.train()
    OBJECTIVES["elbo"](model, batch()).loss.backward()  # the data's batch moves the running statistics
    stats = [(m.running_mean.clone(), m.running_var.clone()) for m in norms]
    with torch.no_grad():
        train_mode = model.prior.components()
    assert all(torch.equal(m.running_mean, a) and torch.equal(m.running_var, b) for m, (a, b) in zip(norms, stats, strict=True))
    assert all(m.training for m in norms)  # back in training mode afterwards
    with torch.no_grad():
        eval_mode = model.eval().prior.components()
    assert torch.allclose(train_mode.mean, eval_mode.mean) and torch.allclose(train_mode.logvar, eval_mode.logvar)
    assert model.prior.pseudo_logits.grad is not None and model.prior.pseudo_logits.grad.abs().sum() > 0


@pytest.mark.parametrize("inference", ["ladder", "bottomup"])
def test_two_layer_kl_matches_a_monte_carlo_estimate(inference):
    """The ELBO's KL of a 2-layer model (closed form for z_1 given z_2, and for z_2) has the expectation of
    log q(z_1, z_2|x) - log p(z_1, z_2) (many samples)."""
    model = model_for(
        "model.stochastic_layers=2", "model.layer_dims=[4]", "model.layer_hidden=[16]", f"model.layer_inference={inference}"
    ).eval()
    x = batch(4)
    with torch.no_grad():
        torch.manual_seed(0)
        lat = model.infer(x).rsample(20000)
    analytic = torch.stack(lat.kl).sum(0).mean(0)  # (B,)
    mc = (lat.log_q - lat.log_p).mean(0)
    sd = (lat.log_q - lat.log_p).std(0) / math.sqrt(20000)
    assert torch.all((analytic - mc).abs() < 5 * sd + 1e-3), (analytic, mc, sd)
    assert len(lat.kl) == 2 and lat.z.shape[-1] == 4 and lat.top.shape[-1] == 3


@pytest.mark.parametrize("encode_binary", [False, True])
def test_binarized_evaluation_keeps_the_terms_of_each_layer(encode_binary):
    """The --binarized pass (one shared proposal, or the binary image encoded) reports every stochastic
    layer, as the grey-level pass does: the benchmark's active units read 'of z1 + z2' from it."""
    from vaelab.evaluate.likelihood import likelihood_terms, likelihood_terms_with_binarized

    model = model_for("model.stochastic_layers=2", "model.layer_dims=[4]", "model.layer_hidden=[16]").eval()
    images = (batch(10) * 255).to(torch.uint8)
    grey, binary = likelihood_terms_with_binarized(model, images, k=3, batch_size=4, encode_binary=encode_binary)
    plain = likelihood_terms(model, images, k=3, batch_size=4)
    for t in (grey, binary):
        assert [m.shape for m in t.layer_means] == [(10, 4), (10, 3)]  # bottom first
        assert t.layer_kl.shape == (2, 10)
        assert torch.allclose(torch.from_numpy(t.layer_kl.sum(0)), torch.from_numpy(t.kl), atol=1e-6)
    for a, b in zip(grey.layer_means, plain.layer_means, strict=True):  # the means do not depend on the samples
        assert torch.allclose(torch.from_numpy(a), torch.from_numpy(b), atol=1e-6)


def test_bottom_up_inference_ignores_the_layer_above():
    model = model_for("model.stochastic_layers=2", "model.layer_inference=bottomup", "model.layer_hidden=[16]")
    joint = model.infer(batch(3))
    z_a, z_b = torch.zeros(3, 3), torch.ones(3, 3)
    assert torch.equal(joint._below(0, z_a)[0].mean, joint._below(0, z_b)[0].mean)  # q(z1|x) whatever z2
    assert not torch.equal(joint._below(0, z_a)[1].mean, joint._below(0, z_b)[1].mean)  # p(z1|z2) moves
    ladder = model_for("model.stochastic_layers=2", "model.layer_hidden=[16]").infer(batch(3))
    assert not torch.equal(ladder._below(0, z_a)[0].mean, ladder._below(0, z_b)[0].mean)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_glorot_init_draws_the_papers_uniform_and_leaves_the_flow_alone(arch):
    import torch.nn as nn

    over = ("model.stochastic_layers=2", "model.layer_hidden=[64]", "model.posterior=iaf", "model.flow_hidden=16", f"model.arch={arch}")
    torch_init, glorot = model_for(*over), model_for(*over, "model.init=glorot")
    nets = lambda m: [x for n in ("encoder", "decoder", "stack") for x in m.get_submodule(n).modules()  # noqa: E731
                      if isinstance(x, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]
    assert len(nets(glorot)) >= 6
    for layer, before in zip(nets(glorot), nets(torch_init), strict=True):
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(layer.weight)
        bound = math.sqrt(6 / (fan_in + fan_out))
        w = layer.weight.detach()
        assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound  # U(-a, a), a Glorot & Bengio's
        assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.15 if w.numel() >= 100 else 0.6)
        if layer.bias is not None:
            assert torch.count_nonzero(layer.bias) == 0
        assert not torch.equal(w, before.weight)  # the default (model.init=torch) is PyTorch's own
    # the IAF keeps its own start (the gate biases that make each step start near the identity)
    for a, b in zip(glorot.posterior.parameters(), torch_init.posterior.parameters(), strict=True):
        assert torch.equal(a, b)


def test_iaf_log_determinant_matches_autograd_jacobian():
    torch.manual_seed(0)
    step = IAFStep(dim=4, context=3, hidden=9)
    with torch.no_grad():  # move away from the identity start so the test sees a real triangle
        for p in step.parameters():
            p.add_(0.5 * torch.randn_like(p))
    ctx = torch.randn(1, 3)
    z = torch.randn(1, 4)
    jac = torch.autograd.functional.jacobian(lambda v: step(v.view(1, 4), ctx)[0].view(4), z.view(4))
    _, logdet = step(z, ctx)
    assert torch.allclose(torch.triu(jac, diagonal=1), torch.zeros(4, 4), atol=1e-6)  # autoregressive
    assert torch.allclose(logdet.squeeze(), torch.linalg.slogdet(jac)[1], atol=1e-5)


def test_iaf_posterior_log_prob_is_the_change_of_variables():
    model = model_for("model.posterior=iaf", "model.flow_steps=3", "model.latent_dim=2", "model.flow_hidden=8")
    q = model.encode(batch(1))
    torch.manual_seed(0)
    z, log_q = q.rsample_with_log_prob(1)
    torch.manual_seed(0)
    z0 = q.base.rsample(1)

    def flow(v):
        return q._flow(v.view(1, 1, 2))[0].view(2)

    jac = torch.autograd.functional.jacobian(flow, z0.view(2))
    expect = q.base.log_prob(z0).squeeze() - torch.linalg.slogdet(jac)[1]
    assert torch.allclose(log_q.squeeze(), expect, atol=1e-4)
    with pytest.raises(VaelabError, match="no density at an arbitrary z"):
        q.log_prob(z)


def _loss_and_grads(model, name, x, seed=5, **cfg):
    """One loss of `name` and every parameter's gradient (zeros where none), from the same noise."""
    for key, value in cfg.items():
        setattr(model.cfg, key, value)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    t = OBJECTIVES[name](model, x)
    t.loss.backward()
    return t, {k: torch.zeros_like(p) if p.grad is None else p.grad.clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize(
    "extra",
    [(), ("model.prior=vamp", "model.prior_components=4"), ("model.stochastic_layers=2", "model.layer_hidden=[16]"),
     ("model.posterior=iaf", "model.flow_steps=2", "model.flow_hidden=16")],
)
def test_piwae_trains_the_encoder_on_miwae_and_the_decoder_on_iwae(extra):
    """PIWAE(M=2, K=3): the inference network's gradient is MIWAE(2, 3)'s, every other parameter's (decoder,
    prior incl. the VampPrior's pseudo-inputs, top-down layers) the 6-sample IWAE's, on the same samples."""
    model = model_for("model.objective=piwae", *extra)
    x = batch(4)
    p, gp = _loss_and_grads(model, "piwae", x, iw_samples=3, iw_groups=2)
    m, gm = _loss_and_grads(model, "miwae", x)
    i, gi = _loss_and_grads(model, "iwae", x, iw_samples=6, iw_groups=1)
    inference = tuple(f"{name}." for name in model.INFERENCE)
    assert any(k.startswith(inference) for k in gp) and any(not k.startswith(inference) for k in gp)
    for k, g in gp.items():
        want, other = (gm[k], gi[k]) if k.startswith(inference) else (gi[k], gm[k])
        assert torch.allclose(g, want, rtol=1e-4, atol=1e-6), k
        if "pseudo" not in k and g.abs().sum() > 0:  # the two bounds' gradients do differ: the test can fail
            assert not torch.allclose(g, other, rtol=1e-3, atol=1e-6) or torch.equal(want, other), k
    # the loss reads the IWAE bound of all M*K samples; train/miwae the encoder's; IWAE(6) >= MIWAE(2, 3)
    assert p.loss.item() == pytest.approx(i.loss.item(), abs=1e-4)
    assert p.extra["miwae"].item() == pytest.approx(m.loss.item(), abs=1e-4) and p.loss.item() <= m.loss.item() + 1e-4
    assert p.recon.item() == pytest.approx(i.recon.item(), abs=1e-4) and p.kl.item() == pytest.approx(i.kl.item(), abs=1e-4)
    model.cfg.iw_samples, model.cfg.iw_groups = 3, 2
    with torch.no_grad():  # validation: one pass, the same values and the same use of the RNG
        torch.manual_seed(5)
        v = OBJECTIVES["piwae"](model, x)
        after_eval = torch.rand(1)
    torch.manual_seed(5)
    OBJECTIVES["piwae"](model, x)
    assert v.loss.item() == pytest.approx(p.loss.item(), abs=1e-4) and torch.equal(after_eval, torch.rand(1))


def test_piwae_through_the_fabric_wrapper_leaves_the_parameters_in_place():
    """Its detached passes swap parameters in and out of the wrapped model: afterwards every one is the model's
    own Parameter again (the wrapper holds the module under two names), and every one got a gradient."""
    from vaelab.train.fabric import fabric_class

    fabric = fabric_class()(accelerator="cpu", devices=1)
    model = model_for(*FAMILIES["piwae"], "model.prior=vamp", "model.prior_components=3")
    own = dict(model.named_parameters())
    wrapped, opt = fabric.setup(model, torch.optim.Adam(model.parameters(), lr=1e-3))
    for _ in range(2):
        opt.zero_grad()
        fabric.backward(OBJECTIVES["piwae"](wrapped, batch(4)).loss)
        opt.step()
    now = dict(model.named_parameters())
    assert now.keys() == own.keys() and all(now[k] is own[k] and own[k].requires_grad for k in own)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in own.values())


@pytest.mark.parametrize(
    "overrides,conflict",
    [
        (("model.objective=iwae", "model.free_bits=0.5"), "free_bits conflicts with model.objective=iwae"),
        (("model.objective=iwae", "model.ssim_weight=0.5"), "ssim_weight conflicts"),
        (("model.objective=piwae", "model.free_bits=0.5"), "free_bits conflicts with model.objective=piwae"),
        (("model.objective=piwae", "model.ssim_weight=0.5"), "ssim_weight conflicts"),
        (("model.posterior=iaf", "model.free_bits=0.5"), "free_bits conflicts with model.posterior=iaf"),
        (("model.prior=vamp", "model.free_bits=0.5"), "free_bits conflicts with model.prior=vamp"),
        (("model.prior=vamp", "model.posterior=iaf"), "vamp conflicts with model.posterior=iaf"),
        (("model.prior=vamp", "model.conditional=true"), "vamp conflicts with model.conditional"),
        (("model.stochastic_layers=2", "model.layer_dims=[4,4]"), "2 stochastic layers"),
        (("model.objective=vq",), "model.objective"),
    ],
)
def test_nonsense_combinations_get_one_line(overrides, conflict):
    with pytest.raises(VaelabError) as err:
        load_config(None, list(overrides))
    assert conflict in str(err.value) and "\n" not in str(err.value)


def test_free_bits_work_per_dimension_of_every_layer():
    model = model_for("model.stochastic_layers=2", "model.free_bits=5", "model.layer_hidden=[16]")
    t = OBJECTIVES["elbo"](model, batch(), free_bits=5.0)
    # each of the 6 + 3 dimensions is floored at 5 nats: the loss is at least recon + 45
    assert t.loss.item() >= t.recon.item() + 45 - 1e-3


@pytest.mark.parametrize("size", [28, 64, 128])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_builds_and_one_step_moves_every_parameter(family, size):
    arch = ("model.arch=conv", "model.conv_channels=[4,8]", "model.norm=none") if size > 28 else ()
    model = model_for(*FAMILIES[family], *arch, size=size)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = batch(4, size)
    t = OBJECTIVES[model.cfg.objective](model, x)
    t.loss.backward()
    opt.step()
    still = [k for k, v in model.named_parameters() if torch.equal(v.detach(), before[k])]
    assert not still, still
    assert torch.isfinite(t.loss) and model.sample(2).shape == (2, 1, size, size)
    assert model.reconstruct(x).shape == x.shape


def test_two_layer_logs_the_kl_of_each_layer(tmp_path):
    cfg = tiny_config(tmp_path, *FAMILIES["two-layer"], *QUICK, "train.epochs=1")
    out = fit(cfg, quiet=True)
    row = out["last"]
    assert {"train/kl_1", "train/kl_2", "val/kl_1", "val/kl_2"} <= set(row)
    assert row["train/kl_1"] + row["train/kl_2"] == pytest.approx(row["train/kl"], rel=1e-4)


@pytest.mark.parametrize("family", ["iwae", "piwae", "vamp", "two-layer", "iaf"])
def test_every_family_resumes_exactly(tmp_path, family):
    from vaelab.train.checkpoint import load_checkpoint

    over = (*FAMILIES[family], *QUICK, "data.limit=128")
    straight = fit(tiny_config(tmp_path, "train.epochs=2", "name=straight", *over), quiet=True)["run_dir"]
    part = fit(tiny_config(tmp_path, "train.epochs=1", "name=part", *over), quiet=True)["run_dir"]
    fit(tiny_config(tmp_path, "train.epochs=2", "name=part", *over), run_dir=part, resume=True, quiet=True)
    a, b = (load_checkpoint(Path(d) / "checkpoints/last.ckpt")["model"] for d in (straight, part))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_layer_resumes_mid_epoch_with_the_kl_of_each_layer(tmp_path):
    """A SIGINT mid-epoch, then --resume: the weights and every logged term (kl_1, kl_2 too) as if straight."""
    import os
    import signal

    from vaelab.run import read_metrics
    from vaelab.train import Callback, TrainingInterrupted, default_callbacks

    class SignalAt(Callback):
        def __init__(self):
            self.sent = False

        def on_train_batch_end(self, ctx, batch, n_batches, loss, kl_weight):
            if not self.sent and ctx.state.epoch == 1 and batch == 2:
                self.sent = True
                os.kill(os.getpid(), signal.SIGINT)

    over = (*FAMILIES["two-layer"], *QUICK, "train.log_every=1", "train.epochs=2", "data.limit=200")
    straight = fit(tiny_config(tmp_path, "name=straight", *over), quiet=True)["run_dir"]
    cfg = tiny_config(tmp_path, "name=stopped", *over)
    with pytest.raises(TrainingInterrupted):
        fit(cfg, callbacks=default_callbacks(cfg, quiet=True) + [SignalAt()])
    fit(cfg, run_dir=tmp_path / "stopped", resume=True, quiet=True)
    drop = ("epoch_time", "time")
    a, b = ([{k: v for k, v in r.items() if k not in drop} for r in read_metrics(d)] for d in (straight, tmp_path / "stopped"))
    assert a == b and "train/kl_2" in a[-1]


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory) -> Path:
    return make_idx_dir(tmp_path_factory.mktemp("fam-idx"), n_train=60, n_test=15, size=12)


@pytest.mark.parametrize("family", ["iwae", "piwae", "vamp", "two-layer", "iaf"])
def test_every_family_runs_through_the_commands(tmp_path, idx_dir, family):
    run = tmp_path / family
    base = [f"data.source=idx:{idx_dir}", "model.hidden=[16]", "model.latent_dim=2", "train.epochs=2",
            "train.batch_size=16", *FAMILIES[family]]
    assert cli("train", *base, "--run-dir", run, "-q") == 0
    assert cli("evaluate", run, "--nll-samples", "20", "--no-fid") == 0
    result = json.loads((run / "eval" / "test.json").read_text())
    assert math.isfinite(result["nll"]["nll"]) and result["nll"]["nll"] <= result["loss"]["elbo"] + 1e-6
    if family == "two-layer":
        assert len(result["active_units_per_layer"]) == 2 and len(result["loss"]["kl_per_layer"]) == 2
    assert cli("sample", run, "-n", "4", "--out", tmp_path / "s.png") == 0 and (tmp_path / "s.png").is_file()
    assert cli("plot", run, "recon", "samples", "manifold", "scatter") == 0
    assert any((run / "figures").glob("manifold*"))
    assert cli("classify", run, "--method", "gmm") == 0


def test_sweep_over_objectives(tmp_path, idx_dir, fast_trial_reports):
    study = tmp_path / "study"
    code = cli("sweep", f"data.source=idx:{idx_dir}", "model.hidden=[16]", "model.latent_dim=2", "train.epochs=1",
               "train.batch_size=16", "model.iw_samples=3", "--grid", "model.objective=elbo,iwae",
               "--study-dir", study, "--no-evaluate", "-q")
    assert code == 0
    trials = sorted(p.name for p in (study / "trials").iterdir())
    assert len(trials) == 2 and any("iwae" in t for t in trials), trials


def test_config_show_lists_every_family():
    from vaelab.config import FAMILIES

    assert set(FAMILIES["model.objective"]) == set(OBJECTIVES)
    assert set(FAMILIES["model.posterior"]) == set(POSTERIORS)
    assert set(FAMILIES["model.prior"]) == set(PRIORS)
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "vaelab", "config", "show"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    import yaml

    assert yaml.safe_load(out.stdout)["model"]["objective"] == "elbo"  # still valid YAML
    for key, entries in FAMILIES.items():
        for value in entries:
            assert f"{key}={value}:" in out.stdout
    assert "Burda et al. 2016" in out.stdout and "Tomczak & Welling 2018" in out.stdout
