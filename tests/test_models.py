"""vaelab.models: shapes at every size, the math of the posterior and likelihoods, gradients, overfitting."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from vaelab.config import ModelConfig, load_config
from vaelab.errors import VaelabError
from vaelab.models import build, vae_loss
from vaelab.models.blocks import conv_sizes
from vaelab.models.posterior import DiagonalGaussian, standard_normal_log_prob

SIZES = [28, 32, 64, 128, 256]

# tiny versions of every architecture choice (channel lists of 2-4 so 256 px stays cheap)
ARCHS = {
    "mlp": dict(arch="mlp", hidden=[8]),
    "conv-transpose": dict(arch="conv", conv_channels=[2, 4], kernel=4, decoder="transpose"),
    "conv-transpose-k3": dict(arch="conv", conv_channels=[2, 3, 4], kernel=3, decoder="transpose", norm="none"),
    "conv-upsample": dict(arch="conv", conv_channels=[2, 4], decoder="upsample", norm="instance", activation="relu"),
    "conv-classic5": dict(
        arch="conv", conv_channels=[2, 2, 2, 2, 2], kernel=3, norm="batch", decoder_norm="instance", decoder="upsample"
    ),
    "cond-mlp": dict(arch="mlp", hidden=[8], conditional=True),
    "cond-conv": dict(arch="conv", conv_channels=[2, 4], conditional=True),
}


def model_cfg(size: int = 28, channels: int = 1, classes: int = 3, **kw) -> ModelConfig:
    base = dict(latent_dim=3, image_size=size, channels=channels, num_classes=classes)
    return dataclasses.replace(ModelConfig(), **{**base, **kw})


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", list(ARCHS))
def test_shapes_every_arch_every_size(name, size):
    torch.manual_seed(0)
    channels = 3 if size >= 64 else 1
    spec = ARCHS[name]
    if spec.get("conv_channels") and len(spec["conv_channels"]) == 5 and size < 32:
        spec = {**spec, "conv_channels": [2, 2, 2, 2]}  # 28 px takes at most 4 stride-2 layers with kernel 3
    model = build(model_cfg(size, channels, **spec))
    x = torch.rand(2, channels, size, size)
    y = torch.tensor([0, 2]) if model.conditional else None
    q = model.encode(x, y)
    assert q.mean.shape == q.std.shape == (2, 3)
    out = model.decode(q.rsample(), y)
    assert out.shape == (2, channels, size, size)
    assert model.likelihood.log_prob(out, x).shape == (2,)
    rec = model.reconstruct(x, y)
    assert rec.shape == x.shape and rec.min() >= 0 and rec.max() <= 1  # the data's range, never Tanh's
    labels = torch.tensor([1, 1, 0, 2]) if model.conditional else None
    assert model.sample(4, labels=labels).shape == (4, channels, size, size)


def test_classic_128_design_by_config():
    """The seed-000 design, exactly as the configs table (docs/train.md) writes it."""
    cfg = load_config(
        None,
        [
            "model.arch=conv",
            "model.conv_channels=[32,64,128,256,512]",
            "model.norm=batch",
            "model.decoder_norm=instance",
            "model.decoder=upsample",
            "model.kernel=3",
            "model.latent_dim=128",
        ],
    )
    model = build(dataclasses.replace(cfg.model, image_size=128, channels=3, num_classes=0))
    convs = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256, 512]
    assert all(c.stride == (2, 2) for c in convs)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.encoder.modules()) == 5
    assert sum(isinstance(m, torch.nn.LeakyReLU) for m in model.encoder.modules()) == 5
    assert model.encoder.head.out_features == 2 * 128
    ups = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Upsample)]
    dconvs = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(ups) == 5 and [c.out_channels for c in dconvs] == [256, 128, 64, 32, 3]
    assert sum(isinstance(m, torch.nn.InstanceNorm2d) for m in model.decoder.modules()) == 4  # none on the output
    assert isinstance(model.decoder.fc, torch.nn.Linear) and model.decoder.start == (512, 4, 4)


def test_conv_sizes_invert_odd_sizes():
    assert conv_sizes(28, 3, 4) == [28, 14, 7, 3]
    for kernel in (3, 4, 5):
        model = build(model_cfg(28, arch="conv", conv_channels=[2, 2, 2], kernel=kernel))
        assert model.decode(torch.zeros(1, 3)).shape == (1, 1, 28, 28)


def test_residual_blocks_add_depth_without_changing_shapes():
    from vaelab.models.blocks import ResBlock

    plain = build(model_cfg(28, arch="conv", conv_channels=[8, 16]))
    deep = build(model_cfg(28, arch="conv", conv_channels=[8, 16], res_blocks=2))
    # 2 per encoder stage (2 stages) + 2 at the decoder's start + 2 after its one inner up-layer
    assert sum(isinstance(m, ResBlock) for m in deep.encoder.modules()) == 4
    assert sum(isinstance(m, ResBlock) for m in deep.decoder.modules()) == 4
    assert sum(p.numel() for p in deep.parameters()) > sum(p.numel() for p in plain.parameters())
    x = torch.rand(3, 1, 28, 28)
    latents, _, logits = deep(x)
    assert latents.top.shape == (3, 3) and logits.shape == x.shape
    assert deep.decode(torch.zeros(2, 3)).shape == (2, 1, 28, 28)
    block = ResBlock(4, "none", "relu")
    torch.nn.init.zeros_(block.body[3].weight), torch.nn.init.zeros_(block.body[3].bias)  # branch off: act(x)
    h = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(block(h), torch.relu(h))


def test_image_too_small_for_the_architecture():
    with pytest.raises(VaelabError, match=r"too small for 5 stride-2 conv layers.*at most 3"):
        build(model_cfg(8, arch="conv", conv_channels=[2] * 5, kernel=3))


def test_latent_dim_below_one_is_refused():
    with pytest.raises(VaelabError, match="model.latent_dim"):
        load_config(None, ["model.latent_dim=0"])


def test_kl_matches_torch_distributions():
    torch.manual_seed(0)
    mean, logvar = torch.randn(5, 4), torch.randn(5, 4)
    q = DiagonalGaussian(mean, logvar)
    ref = kl_divergence(Normal(mean, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(q.kl(), ref)
    z = q.rsample(3)  # (3, 5, 4)
    torch.testing.assert_close(q.log_prob(z), Normal(mean, q.std).log_prob(z).sum(-1))
    torch.testing.assert_close(standard_normal_log_prob(z), Normal(0.0, 1.0).log_prob(z).sum(-1))


def test_bernoulli_log_prob_matches_torch():
    torch.manual_seed(0)
    model = build(model_cfg(likelihood="bernoulli"))
    logits = torch.randn(4, 1, 28, 28) * 3
    x = (torch.rand(4, 1, 28, 28) > 0.5).float()
    ref = Bernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(model.likelihood.log_prob(logits, x), ref)
    torch.testing.assert_close(model.likelihood.mean(logits), torch.sigmoid(logits))


@pytest.mark.parametrize("scale", ["fixed", "learned"])
def test_gaussian_log_prob_matches_torch(scale):
    torch.manual_seed(0)
    model = build(model_cfg(channels=3, likelihood="gaussian", gaussian_scale=scale, gaussian_sigma=0.2))
    out, x = torch.randn(2, 3, 28, 28), torch.rand(2, 3, 28, 28)
    ref = Normal(torch.sigmoid(out), 0.2).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(model.likelihood.log_prob(out, x), ref)
    assert any(p is model.likelihood.log_sigma for p in model.parameters()) == (scale == "learned")


def _loss_with_seed(model, x, seed: int = 1, **kw):
    """vae_loss with the z sample fixed by `seed`, so calls with different weights see the same z."""
    torch.manual_seed(seed)
    return vae_loss(model, x, **kw)


def _small_model_and_batch():
    torch.manual_seed(0)
    return build(model_cfg(latent_dim=4)), torch.rand(6, 1, 28, 28)


def test_loss_terms_beta_and_free_bits():
    model, x = _small_model_and_batch()
    t1 = _loss_with_seed(model, x, kl_weight=1.0)
    t4 = _loss_with_seed(model, x, kl_weight=4.0)
    torch.testing.assert_close(t1.elbo_loss, t1.recon + t1.kl)
    torch.testing.assert_close(t4.loss, t4.recon + 4.0 * t4.kl)
    fb = _loss_with_seed(model, x, kl_weight=1.0, free_bits=100.0)  # every dimension under the floor
    torch.testing.assert_close(fb.loss, fb.recon + torch.tensor(400.0))
    assert t1.recon > 0 and t1.kl >= 0


def test_ssim_weight_adds_one_minus_ssim_of_the_decoder_mean():
    from vaelab.evaluate.reconstruction import ssim_per_image

    model, x = _small_model_and_batch()
    plain = _loss_with_seed(model, x, kl_weight=1.0)
    torch.manual_seed(1)
    _, _, params = model(x)
    with_ssim = _loss_with_seed(model, x, kl_weight=1.0, ssim_weight=50.0)
    mean = model.likelihood.mean(params)
    expected = 50.0 * (1 - ssim_per_image(mean.detach(), x)).mean()  # the index vaelab evaluate reports
    torch.testing.assert_close(with_ssim.loss - plain.loss, expected, rtol=1e-4, atol=1e-4)
    assert expected > 1.0  # an untrained decoder's mean is far from x in structure
    torch.testing.assert_close(with_ssim.recon, plain.recon)  # the ELBO's terms are untouched
    torch.testing.assert_close(with_ssim.elbo_loss, plain.elbo_loss)
    torch.testing.assert_close(ssim_per_image(x, x), torch.ones(6))
    # it is differentiable through the decoder
    model.zero_grad()
    _loss_with_seed(model, x, 2, ssim_weight=50.0).loss.backward()
    g_ssim = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    _loss_with_seed(model, x, 2).loss.backward()  # the same z, so only the SSIM term can change the gradient
    assert any(not torch.allclose(a, p.grad) for a, p in zip(g_ssim, [p for p in model.parameters() if p.grad is not None], strict=True))


def test_ssim_weight_must_not_be_negative():
    with pytest.raises(VaelabError, match="ssim_weight"):
        load_config(None, ["model.ssim_weight=-1"])


@pytest.mark.parametrize("name", ["mlp", "conv-transpose", "conv-classic5", "cond-mlp", "cond-conv"])
def test_one_step_changes_every_parameter(name):
    torch.manual_seed(0)
    spec = ARCHS[name]
    size = 32 if name == "conv-classic5" else 28
    model = build(model_cfg(size, likelihood="gaussian", gaussian_scale="learned", **spec))
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.rand(4, 1, size, size)
    y = torch.tensor([0, 1, 2, 0]) if model.conditional else None
    vae_loss(model, x, y).loss.backward()
    opt.step()
    unchanged = [k for k, v in model.named_parameters() if torch.equal(v, before[k])]
    assert not unchanged, f"not trained: {unchanged}"


def test_overfits_a_tiny_batch():
    from vaelab.data import load, to_float

    torch.manual_seed(0)
    x = to_float(load("mnist-sample", limit=8, val_fraction=0).images)  # 8 real digits
    model = build(model_cfg(hidden=[64], latent_dim=4))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = vae_loss(model, x).loss.item()
    for _ in range(300):
        loss = vae_loss(model, x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.4 * first, (first, loss.item())


def test_conditional_sampling_follows_labels():
    torch.manual_seed(0)
    model = build(model_cfg(arch="mlp", hidden=[8], conditional=True, latent_dim=2)).eval()
    labels = torch.tensor([2, 0, 1, 2, 2])
    z = torch.randn(1, 2).expand(5, 2)  # one latent point for every row
    assert model.sample(labels=labels).shape == (5, 1, 28, 28)
    # the label changes the image for the same z, and the same label gives the same image
    a, b = model.generate(z, torch.zeros(5, dtype=torch.long)), model.generate(z, torch.ones(5, dtype=torch.long))
    assert not torch.allclose(a, b)
    torch.testing.assert_close(model.generate(z, labels)[0], model.generate(z, labels)[3])
    with pytest.raises(VaelabError, match="labels must be in 0..2"):
        model.sample(labels=torch.tensor([3]))
    with pytest.raises(VaelabError, match="one label per sample"):
        model.sample(4, labels=torch.tensor([0, 1]))
    with pytest.raises(VaelabError, match="needs class labels"):
        model.encode(torch.rand(1, 1, 28, 28))
