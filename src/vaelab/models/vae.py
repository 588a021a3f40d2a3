"""The VAE: an encoder to q(z|x), a decoder to p(x|z), a prior p(z) and a likelihood. No optimizer, loss, I/O
or plots. Every family is this one class composing registry entries: the architecture (`ARCHS`), the
stochastic layers above it (`hierarchy.StochasticStack`, empty for one layer), the posterior over the top
layer (`POSTERIORS`: gaussian, iaf), the prior (`PRIORS`: normal, mog, class, vamp) and the likelihood
(`LIKELIHOODS`); the objective (`OBJECTIVES`) is a function of the model, not part of it.

"The latent" of the tools (encode, sample, manifold, classify) is the top layer, of size ``latent_dim``:
``encode`` returns q(z_L|x) and ``decode`` takes a top-layer z down through the means of the layers below.
``infer(x)`` gives the joint posterior of all layers, which the objectives and the NLL sample and score. With ``pixelcnn_layers`` the decoder ends in an autoregressive head (`autoregressive.PixelCNNHead`):
scoring an image then takes it as context (``decode(z, y, context=x)``), and decoding without one generates
pixel by pixel.

The constructor's `ModelConfig` *is* the model's description: it is saved beside the weights, so
`build(cfg)` + `load_state_dict` rebuilds any checkpoint.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import VaelabError
from ..pretrained import PretrainedMixin
from .autoregressive import PixelCNNHead
from .blocks import ARCHS, INITS
from .hierarchy import JointPosterior, StochasticStack, layer_dims
from .likelihoods import build_likelihood
from .objective import OBJECTIVES
from .posterior import POSTERIORS, DiagonalGaussian
from .prior import build_prior
from .vq import LATENTS


class VAE(PretrainedMixin, nn.Module):
    """One VAE for every family: encoder -> q(z|x), decoder -> p(x|z), prior and likelihood, from a ModelConfig.

    ``save_pretrained(folder)`` / ``VAE.from_pretrained(folder_or_repo_id)`` (see `vaelab.pretrained`)."""

    # the inference network: its submodules (the rest, decoder, top-down p(z_l|z_l+1), prior incl. the VampPrior's
    # pseudo-inputs, likelihood and head, is the generative network); PIWAE trains the two on different bounds
    INFERENCE = ("encoder", "stack.up", "posterior")

    def __init__(self, cfg):
        super().__init__()
        if cfg.image_size is None or cfg.channels is None:
            raise VaelabError("model.image_size and model.channels are not set", "build the model with models.build(cfg, data)")
        if cfg.conditional and not cfg.num_classes:
            raise VaelabError("a conditional VAE needs labelled data", "use a labelled source or set model.conditional=false")
        self.cfg = copy.deepcopy(cfg)
        dims = layer_dims(cfg)  # bottom first; the architecture maps x <-> z_1
        base = copy.deepcopy(cfg)
        base.latent_dim = dims[0]
        self.encoder, self.decoder = ARCHS[cfg.arch](base)
        self.stack = StochasticStack(
            dims, list(getattr(cfg, "layer_hidden", None) or [100, 100]), cfg.activation, getattr(cfg, "layer_inference", "ladder")
        )
        # an objective may fix its family's encoder (the RAE's is deterministic: objective.posterior = "delta")
        fixed = getattr(OBJECTIVES.get(getattr(cfg, "objective", "elbo")), "posterior", None)
        self.posterior = POSTERIORS[fixed or getattr(cfg, "posterior", "gaussian")](cfg)
        self.likelihood = build_likelihood(cfg)
        self.prior = build_prior(cfg)
        if hasattr(self.prior, "bind"):  # a prior made of the model's own posteriors (VampPrior)
            self.prior.bind(self._top_gaussian)
        self.quantizer = LATENTS[getattr(cfg, "latent", "gaussian")](cfg)  # None for the Gaussian latent

        from .disentangle import AUXILIARY  # an objective's own module (FactorVAE's discriminator), or None

        aux = AUXILIARY.get(getattr(cfg, "objective", "elbo"))
        self.aux = aux(cfg) if aux is not None else None
        layers = int(getattr(cfg, "pixelcnn_layers", 0) or 0)
        self.head = (
            PixelCNNHead(cfg.channels, int(cfg.pixelcnn_channels), layers, int(cfg.pixelcnn_kernel)) if layers > 0 else None
        )
        # last, so the other parts draw the same start whatever model.init is
        INITS[getattr(cfg, "init", "torch")](self.encoder, self.decoder, self.stack)

    # -- properties --------------------------------------------------------------------------------------
    @property
    def latent_dim(self) -> int:
        return self.cfg.latent_dim

    @property
    def conditional(self) -> bool:
        return bool(self.cfg.conditional)

    @property
    def num_classes(self) -> int:
        return int(self.cfg.num_classes or 0)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.cfg.channels, self.cfg.image_size, self.cfg.image_size)

    def _onehot(self, y: torch.Tensor | None) -> torch.Tensor | None:
        if not self.conditional:
            return None
        if y is None:
            raise VaelabError("this conditional VAE needs class labels", "pass labels (e.g. --label k)")
        return F.one_hot(y.long(), self.num_classes).float()

    # -- the two halves ----------------------------------------------------------------------------------
    def _statistics(self, x: torch.Tensor, y: torch.Tensor | None) -> list[torch.Tensor]:
        """The bottom-up pass: every stochastic layer's (B, 2 D_l) statistics, bottom first."""
        h = self.encoder(x * 2.0 - 1.0, self._onehot(y))  # centred input; (B, 2 D_1)
        return self.stack.bottom_up(h.float())

    def _top_gaussian(self, x: torch.Tensor) -> DiagonalGaussian:
        """The Gaussian part of q(z_L|x) of unlabelled inputs (the VampPrior's components).

        Batch-norm layers see the pseudo-inputs with their running statistics and do not update them: in
        training mode a batch of K pseudo-inputs would otherwise normalise itself by its own statistics and
        pull the running ones towards them, and the encoder would then code real images at evaluation with
        statistics that are not theirs (a conv VampPrior's validation KL read 700 nats against 13 in training)."""
        norms = [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
        for m in norms:
            m.eval()
        try:
            mean, logvar = self._statistics(x, None)[-1].chunk(2, dim=-1)
        finally:
            for m in norms:
                m.train()
        return DiagonalGaussian(mean, logvar)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None):
        """x: (B, C, H, W) in [0, 1] -> q(z|x) over the top latent (B, D): a `DiagonalGaussian` or a flow
        (a VQ model: a `vq.VQCode`, whose ``mean`` is the quantised code)."""
        q = self.posterior(self._statistics(x, y)[-1])
        return q if self.quantizer is None else self.quantizer(q.mean)[0]

    def infer(self, x: torch.Tensor, y: torch.Tensor | None = None) -> JointPosterior:
        """q(z_1..z_L | x): ``.rsample(n)`` draws and scores every layer (see `hierarchy.Latents`)."""
        return JointPosterior(self, self._statistics(x, y), y)

    @property
    def no_density(self) -> str | None:
        """Why this family has no likelihood bound to importance-sample (None when it has one): a property of
        its registry entries (a deterministic encoder, a quantised latent), so evaluate needs no name checks."""
        return getattr(self.quantizer, "no_density", None) or getattr(self.posterior, "no_density", None)

    @property
    def native_sampler(self) -> str | None:
        """The sampler of a latent with no Gaussian prior (a VQ model's code prior), else None."""
        return "vq-prior" if self.quantizer is not None else None

    @property
    def autoregressive(self) -> bool:
        return self.head is not None

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None, context: torch.Tensor | None = None) -> torch.Tensor:
        """A top-layer z: (B, D) -> the likelihood's parameters (B, C, H, W) (logits for Bernoulli); with
        stochastic layers below, through the means of p(z_l | z_{l+1})."""
        return self.decode_bottom(self.stack.descend(z), y, context)

    def decode_bottom(
        self, z: torch.Tensor, y: torch.Tensor | None = None, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """z_1: (B, D_1) -> the likelihood's parameters (B, C, H, W).

        An autoregressive model needs the image being scored as ``context`` (B, C, H, W) in [0, 1] (teacher
        forcing); without one it generates the image pixel by pixel and returns the parameters it drew from.
        A factorized decoder ignores ``context``."""
        base = self.decoder(z, self._onehot(y))
        if self.head is None:
            return base
        if context is None:
            return self.head.generate(base, self.likelihood.mean)
        return self.head(base, context)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, target: torch.Tensor | None = None, n: int | None = None
    ):
        """One pass for the objectives: (latents, scored images, decoder output).

        Draws every stochastic layer from q(z|x) (`hierarchy.Latents`, with log q and log p; (n, B, ...) when
        `n` is given) and decodes the bottom layer with `target` (default x) as the scored image, repeated n
        times: (n*B, C, H, W) with sample i of image b at row i*B + b. The objectives call the model only
        through here, so a wrapper (Fabric's DDP, mixed precision) sees one forward per step."""
        target = x if target is None else target
        if self.quantizer is not None:  # VQ: ((code, stats), target, params), the straight-through code decoded
            code, stats = self.quantizer(self.posterior(self._statistics(x, y)[-1]).mean, update=self.training)
            return (code, stats), target, self.decode_bottom(code.mean, y, context=target)
        lat = self.infer(x, y).rsample(n)
        if n is None:
            return lat, target, self.decode_bottom(lat.z, y, context=target)
        tk = target.unsqueeze(0).expand(n, *target.shape).reshape(n * target.shape[0], *target.shape[1:])
        yk = None if y is None else y.repeat(n)  # (n*B,) matches z's (n, B) flattening
        return lat, tk, self.decode_bottom(lat.z.reshape(n * x.shape[0], -1), yk, context=tk)

    # -- conveniences (no gradient) ----------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The decoded posterior mean, as images in [0, 1]."""
        if self.quantizer is not None:
            return self.likelihood.mean(self.decode_bottom(self.encode(x, y).mean, y))
        return self.likelihood.mean(self.decode_bottom(self.infer(x, y).layer_means()[0], y))

    @torch.no_grad()
    def generate(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Decode latent points to images in [0, 1] (the likelihood's mean)."""
        return self.likelihood.mean(self.decode(z, y))

    @torch.no_grad()
    def sample(
        self,
        n: int | None = None,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """Images from the prior p(z) (p(z|y) for model.prior=class); a conditional model draws class `labels[i]` for image i."""
        device = next(self.parameters()).device
        if labels is not None:
            labels = torch.as_tensor(labels, device=device).long().flatten()
            n = len(labels) if n is None else n
            if len(labels) != n:
                raise VaelabError(f"{len(labels)} labels for {n} samples", "give one label per sample")
            if self.num_classes and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise VaelabError(f"labels must be in 0..{self.num_classes - 1}", "pick an existing class")
        elif self.conditional:
            n = 64 if n is None else n
            labels = torch.arange(n, device=device) % self.num_classes
        n = 64 if n is None else n
        z = self.prior.sample(n, labels, generator=generator, temperature=temperature)
        return self.generate(z.to(device), labels if self.conditional else None)
