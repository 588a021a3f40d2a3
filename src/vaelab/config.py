"""Typed configs: dataclasses, YAML load/save, and ``key=value`` overrides with clear errors.

A run's whole behaviour is one `Config`. It is written to ``RUN_DIR/config.yaml`` and into every
checkpoint, so `vaelab.load_run(path)` rebuilds the model without flags. Overrides address fields by
dotted path (``model.latent_dim=2``); an unknown key fails with the closest valid key suggested.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import VaelabError


@dataclass
class DataConfig:
    """Where the images come from and how they are prepared (see `vaelab.data.load`)."""

    source: str = "mnist-sample"  # data spec: mnist, fashion-mnist, npz:PATH, folder:PATH, ...
    val: str | None = None  # optional spec whose images form the validation split
    test: str | None = None  # optional spec whose images form the test split
    image_size: int | None = None  # resize (center crop for non-square photos); None keeps the native size
    channels: int | None = None  # 1 or 3; None keeps the source's
    classes: list[str] | None = None  # keep only these classes (names or indices), relabelled 0..k-1
    val_fraction: float = 0.1  # held out of train (stratified) when the source has no validation split
    limit: int | None = None  # at most this many images per split (for quick runs)
    seed: int = 0  # seed of the validation split and of `limit`'s subsample
    images_key: str | None = None  # npz/npy: array name of the images (guessed when None)
    labels_key: str | None = None  # npz/npy: array name of the labels (guessed when None)
    workers: int = 0  # shards: data-loader worker processes per rank (each reads its own shards)
    shuffle_buffer: int = 1000  # shards: samples shuffled in a buffer as they stream
    factors: list[str] | None = None  # dsprites: the factors that vary (e.g. shape,scale,posx,posy); the others stay at their first value


@dataclass
class ModelConfig:
    """The VAE. ``image_size``, ``channels`` and ``num_classes`` are filled in from the data."""

    arch: str = "mlp"  # mlp | conv
    conditional: bool = False  # condition encoder and decoder on the one-hot class label
    latent_dim: int = 16
    likelihood: str = "bernoulli"  # bernoulli | gaussian
    gaussian_scale: str = "learned"  # fixed | learned (per channel), for the gaussian likelihood
    gaussian_sigma: float = 0.1  # the fixed scale, or the learned scale's start value
    beta: float = 1.0  # weight of the KL term; beta-VAE is this number
    free_bits: float = 0.0  # nats per latent dimension below which the KL is not penalised
    ssim_weight: float = 0.0  # weight of a (1 - SSIM) reconstruction term added to the loss (not the ELBO); 0 = off
    # model families (docs/families.md): objective x posterior x prior x stochastic layers
    objective: str = "elbo"  # elbo | iwae (Burda 2016) | miwae | ciwae | piwae (Rainforth 2018)
    iw_samples: int = 5  # K, importance samples per image of iwae / miwae / ciwae / piwae
    iw_groups: int = 1  # M, independent K-sample bounds averaged by miwae (piwae: for the encoder)
    ciwae_beta: float = 0.5  # ciwae: weight of the ELBO against the K-sample bound
    # disentangling objectives (docs/disentanglement.md): tc (beta-TCVAE: model.beta weighs the TC), factor, dip
    gamma: float = 35.0  # factor: weight of the total-correlation term (Kim & Mnih 2018 use 35 on dSprites)
    disc_hidden: list[int] = field(default_factory=lambda: [1000] * 6)  # factor: the discriminator's MLP widths
    disc_lr: float = 1e-4  # factor: the discriminator's Adam learning rate (its own optimizer)
    dip_lambda: float = 10.0  # dip: lambda_od, weight of the off-diagonal covariance penalty
    dip_type: str = "ii"  # dip: i (Cov of the means, lambda_d = 10 lambda_od) | ii (+ E[Sigma], lambda_d = lambda_od)
    dataset_size: int | None = None  # tc: filled from the data (training images), for minibatch-weighted sampling
    posterior: str = "gaussian"  # gaussian | iaf (inverse autoregressive flow, Kingma 2016)
    flow_steps: int = 2  # IAF steps
    flow_hidden: int = 0  # width of each IAF step's MADE; 0 = 4 x latent_dim
    stochastic_layers: int = 1  # layers of latents z_1 -> ... -> z_L (ladder VAE, Sonderby 2016); latent_dim is the top's
    layer_dims: list[int] = field(default_factory=list)  # sizes of the layers below the top, bottom first; [] = 2 x latent_dim
    layer_hidden: list[int] = field(default_factory=lambda: [100, 100])  # MLP widths between stochastic layers
    layer_inference: str = "ladder"  # ladder (top-down, precision-weighted, Sonderby 2016) | bottomup (q(z_l|x), Burda 2016)
    prior: str = "normal"  # normal N(0, I) | mog (learned mixture) | class (N(mu_y, sigma_y) per class) | vamp (Tomczak 2018)
    prior_components: int = 10  # components of the mog prior; pseudo-inputs of the vamp prior
    # regularised autoencoders (docs/generators.md): objective=mmd (InfoVAE / WAE-MMD) and objective=rae
    mmd_weight: float = 10.0  # weight of MMD^2(q(z), p(z)) (Zhao 2019's alpha + lambda - 1; Tolstikhin 2018's lambda)
    mmd_kernel: str = "imq"  # imq | rbf
    rae_reg: str = "l2"  # l2 (decoder weights) | gp (decoder gradient penalty), Ghosh et al. 2020
    rae_weight: float = 1e-3  # weight of the RAE's decoder regulariser; model.beta weighs its 1/2 ||z||^2
    latent: str = "gaussian"  # gaussian | vq (VQ-VAE, van den Oord 2017; train with model.objective=vq)
    codebook_size: int = 64  # K codebook entries
    code_dim: int = 4  # size of each code vector; latent_dim / code_dim positions form the code map
    commitment: float = 0.25  # beta of the VQ-VAE's commitment term
    codebook_update: str = "ema"  # ema (moving averages) | loss (the codebook term of the loss)
    ema_decay: float = 0.99
    dead_code: float = 0.01  # restart codes whose moving-average use falls below this (vectors per batch)
    # autoregressive head (PixelVAE): 0 = a factorized decoder; n >= 1 = masked conv layers over earlier pixels
    pixelcnn_layers: int = 0
    pixelcnn_channels: int = 32  # features of the head
    pixelcnn_kernel: int = 7  # the first masked layer's kernel (odd); sets how many rows above a pixel sees
    # mlp
    hidden: list[int] = field(default_factory=lambda: [512, 256])
    # conv
    conv_channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    kernel: int = 4  # stride-2 conv kernel of the encoder
    norm: str = "batch"  # encoder norm: batch | instance | none
    decoder_norm: str | None = None  # decoder norm; None means the same as `norm`
    activation: str = "leaky_relu"  # relu | leaky_relu | tanh
    init: str = "torch"  # torch (PyTorch's default) | glorot (Glorot & Bengio 2010, as Burda et al. 2016's MLPs)
    decoder: str = "transpose"  # transpose | upsample (nearest upsample + conv)
    res_blocks: int = 0  # residual blocks (3x3 conv, norm, act, 3x3 conv + skip) after each resolution change
    dropout: float = 0.0
    # filled from the data when the model is built
    image_size: int | None = None
    channels: int | None = None
    num_classes: int | None = None


@dataclass
class TrainConfig:
    """The optimisation loop."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | adamw
    weight_decay: float = 0.0
    schedule: str = "none"  # none | cosine | plateau
    grad_clip: float | None = None  # max gradient norm
    warmup_epochs: float = 0.0  # KL weight rises linearly from 0 to beta over this many epochs
    warmup_steps: int = 0  # ...or over this many optimizer steps (takes precedence when > 0)
    early_stop: int | None = None  # stop after this many epochs without a better validation loss
    seed: int = 0
    log_every: int = 50  # steps between host syncs for the progress bar and TensorBoard
    on_nan: str = "stop"  # stop | skip_batch
    compile: bool = False  # torch.compile the model
    binarize: bool = False  # dynamic binarisation (Bernoulli draw of each pixel per batch)
    perturb: float = 0.0  # share of pixels replaced by uniform noise in each batch: a background model (Ren et al. 2019)
    images_every: int = 1  # write recon/sample grids every N epochs (0: never)
    save_latents: bool = True  # keep the validation latents of each epoch (for the scatter animation)
    eval_batch_size: int = 1000
    # experiment trackers: tensorboard | csv (RUN/metrics.csv) | wandb | mlflow | none; several with commas
    logger: str = "tensorboard"
    logger_project: str = "vaelab"  # W&B project / MLflow experiment of the run
    keep_checkpoints: int | str = 0  # also keep per-epoch checkpoints/epoch_N.ckpt: the newest N, or all


@dataclass
class TrainerConfig:
    """What Lightning Fabric gets: devices, precision and distribution."""

    accelerator: str = "auto"  # auto | cpu | cuda | mps
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp
    precision: str = "32"  # 32 | bf16-mixed | 16-mixed
    threads: int = 0  # CPU threads per process; 0: the physical cores, split among the DDP ranks on a machine


@dataclass
class Config:
    """A run: data + model + training + devices, and where it is written."""

    name: str = "run"
    out_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


# Allowed values of the string choices; `validate` checks them so a typo fails before training starts.
CHOICES: dict[str, tuple[str, ...]] = {
    "model.arch": ("mlp", "conv"),
    "model.likelihood": ("bernoulli", "gaussian"),
    "model.prior": ("normal", "mog", "class", "vamp"),  # models.PRIORS
    "model.objective": ("elbo", "iwae", "miwae", "ciwae", "piwae", "mmd", "rae", "vq", "tc", "factor", "dip"),  # models.OBJECTIVES
    "model.posterior": ("gaussian", "iaf", "delta"),  # models.POSTERIORS
    "model.layer_inference": ("ladder", "bottomup"),  # models.hierarchy.LAYER_INFERENCE
    "model.mmd_kernel": ("imq", "rbf"),
    "model.rae_reg": ("l2", "gp"),
    "model.latent": ("gaussian", "vq"),  # models.vq.LATENTS
    "model.codebook_update": ("ema", "loss"),
    "model.dip_type": ("i", "ii"),
    "model.gaussian_scale": ("fixed", "learned"),
    "model.norm": ("batch", "instance", "none"),
    "model.decoder_norm": ("batch", "instance", "none"),
    "model.activation": ("relu", "leaky_relu", "tanh"),
    "model.init": ("torch", "glorot"),  # models.blocks.INITS
    "model.decoder": ("transpose", "upsample"),
    "train.optimizer": ("adam", "adamw"),
    "train.schedule": ("none", "cosine", "plateau"),
    "train.on_nan": ("stop", "skip_batch"),
    "trainer.strategy": ("auto", "ddp"),
    "trainer.precision": ("32", "bf16-mixed", "16-mixed"),
    "trainer.accelerator": ("auto", "cpu", "cuda", "gpu", "mps"),
}

# train.logger: one of these, or several joined with commas (tensorboard,csv); see train/loggers.py
LOGGERS = ("tensorboard", "csv", "wandb", "mlflow", "none")


def logger_names(text: str) -> list[str]:
    """'tensorboard,csv' -> ['tensorboard', 'csv']; an unknown name is a one-line error."""
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    for name in names:
        if name not in LOGGERS:
            close = difflib.get_close_matches(name, LOGGERS, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise VaelabError(f"'train.logger' has {name!r}", f"{hint}choose from {', '.join(LOGGERS)} (several with commas)")
    if "none" in names and len(names) > 1:
        raise VaelabError(f"'train.logger' is {text!r}", "'none' goes alone")
    return [n for n in names if n != "none"]
# The model families: one line and one reference per registry entry (`vaelab config show` and the README
# list them; tests check every entry of models.OBJECTIVES / POSTERIORS / PRIORS has its line here).
FAMILIES: dict[str, dict[str, str]] = {
    "model.objective": {
        "elbo": "the evidence lower bound, with beta, KL warm-up and free bits (Kingma & Welling 2014)",
        "iwae": "the K-sample importance-weighted bound, K = model.iw_samples (Burda et al. 2016)",
        "miwae": "the mean of model.iw_groups K-sample bounds (Rainforth et al. 2018)",
        "ciwae": "model.ciwae_beta x ELBO + (1 - beta) x the K-sample bound (Rainforth et al. 2018)",
        "piwae": "model.iw_groups groups of K samples train the encoder (MIWAE), all M x K the decoder and prior (IWAE) (PIWAE, Rainforth et al. 2018)",
        "mmd": "recon + beta KL + model.mmd_weight MMD(q(z), p(z)) (InfoVAE, Zhao et al. 2019); with model.posterior=delta, WAE-MMD (Tolstikhin et al. 2018)",
        "vq": "the VQ-VAE loss: recon + codebook + model.commitment x commitment (van den Oord et al. 2017; with model.latent=vq)",
        "rae": "deterministic encoder, recon + beta ||z||^2 / 2 + model.rae_weight x decoder L2 or gradient penalty (RAE, Ghosh et al. 2020)",
        "tc": "beta-TCVAE: the KL split into MI + TC + dimension-wise KL, model.beta on the TC (Chen et al. 2018)",
        "factor": "FactorVAE: -ELBO + model.gamma x TC from a discriminator with its own optimizer (Kim & Mnih 2018)",
        "dip": "DIP-VAE I/II (model.dip_type): -ELBO + model.dip_lambda x a covariance penalty (Kumar et al. 2018)",
    },
    "model.posterior": {
        "gaussian": "a diagonal Gaussian q(z|x) (Kingma & Welling 2014)",
        "iaf": "an inverse autoregressive flow of model.flow_steps steps on the Gaussian (Kingma et al. 2016)",
        "delta": "a deterministic encoder z = E(x), no density (WAE, Tolstikhin et al. 2018; the RAE's)",
    },
    "model.prior": {
        "normal": "N(0, I) (Kingma & Welling 2014)",
        "mog": "a learned mixture of model.prior_components Gaussians (Dilokthanakul et al. 2016)",
        "class": "a learned Gaussian per class, for conditional models (Sohn et al. 2015)",
        "vamp": "the mixture of the posteriors of model.prior_components learned pseudo-inputs (Tomczak & Welling 2018)",
    },
    "model.latent": {
        "gaussian": "a continuous latent of model.latent_dim",
        "vq": "a map of model.latent_dim / model.code_dim codes from a learned codebook (VQ-VAE, van den Oord et al. 2017)",
    },
    "model.stochastic_layers": {
        "1": "one layer of latents",
        "2": "z1 -> z2 (or more), top-down inference, KL per layer (ladder VAE, Sonderby et al. 2016)",
    },
    "model.layer_inference": {
        "ladder": "a lower layer's posterior precision-weights its bottom-up estimate with p(z_l|z_l+1) (Sonderby et al. 2016)",
        "bottomup": "a lower layer's posterior is its bottom-up estimate q(z_l|x) (close to Burda et al. 2016)",
    },
}


def families_text() -> str:
    """The model families as YAML comments (the tail of `vaelab config show`)."""
    lines = ["# model families: combine one of each (see docs/families.md)"]
    for key, entries in FAMILIES.items():
        for value, text in entries.items():
            lines.append(f"#   {key}={value}: {text}")
    return "\n".join(lines)


# (lower bound, inclusive?) for numbers a user can get wrong; checked by `validate`.
BOUNDS: dict[str, tuple[float, bool]] = {
    "model.latent_dim": (1, True),
    "model.beta": (0, True),
    "model.free_bits": (0, True),
    "model.ssim_weight": (0, True),
    "model.prior_components": (1, True),
    "model.mmd_weight": (0, True),
    "model.codebook_size": (2, True),
    "model.code_dim": (1, True),
    "model.commitment": (0, True),
    "model.ema_decay": (0, True),
    "model.dead_code": (0, True),
    "model.rae_weight": (0, True),
    "model.iw_samples": (1, True),
    "model.iw_groups": (1, True),
    "model.ciwae_beta": (0, True),
    "model.gamma": (0, True),
    "model.disc_lr": (0, False),
    "model.dip_lambda": (0, True),
    "model.flow_steps": (1, True),
    "model.flow_hidden": (0, True),
    "model.stochastic_layers": (1, True),
    "model.pixelcnn_layers": (0, True),
    "model.pixelcnn_channels": (1, True),
    "model.pixelcnn_kernel": (3, True),
    "model.gaussian_sigma": (0, False),
    "model.kernel": (1, True),
    "model.dropout": (0, True),
    "model.res_blocks": (0, True),
    "train.epochs": (1, True),  # 0 would write a run that trained nothing
    "train.batch_size": (1, True),
    "train.eval_batch_size": (1, True),
    "train.lr": (0, False),
    "train.weight_decay": (0, True),
    "train.grad_clip": (0, False),
    "train.warmup_epochs": (0, True),
    "train.warmup_steps": (0, True),
    "train.early_stop": (1, True),
    "train.log_every": (1, True),
    "train.images_every": (0, True),
    "trainer.devices": (1, True),
    "trainer.num_nodes": (1, True),
    "trainer.threads": (0, True),
    "data.val_fraction": (0, True),
    "data.limit": (1, True),
    "data.workers": (0, True),
    "data.shuffle_buffer": (0, True),
    "data.image_size": (8, True),
}

# sane upper bounds: far above any real use, low enough that a typo (latent_dim=100000000000) is refused up
# front instead of ending in the allocator's traceback or a process that grows until the machine swaps
MAX_IMAGE_SIZE = 4096
MAX_LAYER = 65536  # units of an MLP layer, the latent size
UPPER: dict[str, int] = {
    "model.latent_dim": MAX_LAYER,
    "model.prior_components": 100_000,
    "model.pixelcnn_layers": 1000,
    "model.pixelcnn_channels": 4096,
    "model.pixelcnn_kernel": 63,
    "model.kernel": 63,
    "model.res_blocks": 1000,
    "train.epochs": 10_000_000,
    "train.batch_size": 2**20,
    "train.eval_batch_size": 2**20,
    "data.image_size": MAX_IMAGE_SIZE,
}
LAYER_UPPER = {"model.hidden": MAX_LAYER, "model.conv_channels": 4096}


# ---------------------------------------------------------------------------------------------------------
# dict <-> dataclass


def to_dict(cfg: Any) -> dict:
    """A plain, YAML-safe dict of a config dataclass."""
    return dataclasses.asdict(cfg)


def all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of a config class, e.g. ``model.latent_dim``."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        sub = hints[f.name]
        if dataclasses.is_dataclass(sub):
            keys.extend(all_keys(sub, key + "."))
        else:
            keys.append(key)
    return keys


def _unknown_key(key: str, where: str = "") -> VaelabError:
    sections = [f.name for f in dataclasses.fields(Config) if dataclasses.is_dataclass(typing.get_type_hints(Config)[f.name])]
    close = difflib.get_close_matches(key, all_keys() + sections, n=1, cutoff=0.5)
    if not close:  # a last-component match helps with 'latent_dim' -> 'model.latent_dim'
        tail = key.split(".")[-1]
        close = [k for k in all_keys() if k.split(".")[-1] == tail][:1]
    hint = f"did you mean '{close[0]}'?" if close else "run 'vaelab config show' to list the keys"
    return VaelabError(f"unknown config key '{key}'{where}", hint)


def _example(key: str) -> str:
    """'write it like model.latent_dim=16': the key with its default value (or a generic hint)."""
    default = flatten(to_dict(Config())).get(key)
    if default is None or isinstance(default, (list, dict)):
        return f"see 'vaelab config show' for the type of {key}"
    return f"write it like {key}={default}"


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert one YAML value to the field's annotated type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except VaelabError as e:
                errors.append(e)
        raise errors[0]
    if origin is list:
        (item,) = args
        if isinstance(value, str):  # a,b,c on the command line
            value = [_plain_scalar(v) for v in value.split(",") if v.strip() != ""]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_coerce(v, item, key) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise VaelabError(f"'{key}' must be true or false, got {value!r}", f"write {key}=true or {key}=false")
    if tp is int:
        if isinstance(value, bool):
            raise VaelabError(f"'{key}' must be an integer, got {value!r}", _example(key))
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise VaelabError(f"'{key}' must be an integer, got {value!r}", _example(key))
    if tp is float:
        if isinstance(value, bool):
            raise VaelabError(f"'{key}' must be a number, got {value!r}", _example(key))
        number = None
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise VaelabError(f"'{key}' must be a number, got {value!r}", _example(key))
        if not math.isfinite(number):  # NaN passes every range check, so refuse it here
            raise VaelabError(f"'{key}' is {value!r}", "give a finite number")
        return number
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise VaelabError(f"'{key}' must be a string, got {value!r}", _example(key))
    return value


def _plain_scalar(text: str) -> Any:
    """One item of an ``a,b,c`` list: YAML-read when it parses, else the text itself."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text.strip()


def from_dict(data: dict | None, cls: type = Config, prefix: str = "", where: str = "") -> Any:
    """Build a config dataclass from a (possibly partial) nested dict, checking keys and types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        section = prefix.rstrip(".") or "config"
        raise VaelabError(f"'{section}'{where} must be a mapping, got {data!r:.60}", f"write '{section}:' then its keys indented below it")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        key = prefix + str(k)
        if k not in names:
            raise _unknown_key(key, where)
        tp = hints[k]
        if dataclasses.is_dataclass(tp):
            kwargs[k] = from_dict(v, tp, key + ".", where)
        else:
            kwargs[k] = _coerce(v, tp, key)
    return cls(**kwargs)


# ---------------------------------------------------------------------------------------------------------
# YAML files and overrides


def _names_data(text: str) -> bool:
    """Whether `text` is a data spec (a named dataset or kind:PATH) rather than a config name or file."""
    from .data.sources import READERS, named_names

    kind = text.split(":", 1)[0]
    return text in named_names() or (":" in text and kind in READERS)


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping with `yaml.safe_load` (plain data only, never objects)."""
    from .recipes import resolve, suggestion

    p = resolve(path)  # a shipped config's name (fashion-mlp-z2) reads the packaged file
    if not p.is_file():
        close = suggestion(p)
        hint = f"did you mean '{close}'? " if close else ""
        if _names_data(str(path)):  # `vaelab train mnist`: a data spec where a config goes
            hint = f"'{path}' is a data spec, not a config: vaelab train data.source={path}; "
        raise VaelabError(f"config file not found: {p}", f"{hint}check the path; 'vaelab config list' names the shipped configs")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.constructor.ConstructorError as e:  # e.g. !!python/object: plain YAML only, nothing runs
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise VaelabError(
            f"{p}{line} has a tag that is not plain YAML ({' '.join(str(e.problem).split())[:80]})",
            "configs hold plain values only; remove the !!tag",
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise VaelabError(f"{p}{line} is not valid YAML", "fix the syntax (indentation, colons)") from None
    except UnicodeDecodeError:
        raise VaelabError(f"{p} is not a text file", "pass a YAML config") from None
    except RecursionError:
        raise VaelabError(f"{p} is nested too deeply to be a config", "pass a YAML config") from None
    except OSError as e:
        raise VaelabError(f"cannot read config {p}: {e.strerror}", "check the file's permissions") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise VaelabError(f"{p} does not hold a mapping of config keys", "write it like 'model:' then '  latent_dim: 2' (see configs/)")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """``'model.latent_dim=2'`` -> ``('model.latent_dim', 2)``; the value is read as YAML."""
    if "=" not in text:
        raise VaelabError(f"override '{text}' is not key=value", "write it like model.latent_dim=2")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part.isidentifier() for part in key.split(".")):
        raise VaelabError(f"override '{text}' has no valid key", "write it like model.latent_dim=2")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.constructor.ConstructorError:  # !!python/object and friends: never built, refused
        raise VaelabError(f"override '{text}' has a YAML tag", "give a plain value, e.g. model.latent_dim=2") from None
    except (yaml.YAMLError, RecursionError):
        value = raw
    if isinstance(value, (dict, set)) or (value is not None and not isinstance(value, (str, int, float, bool, list))):
        value = raw
    return key, value


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Set dotted keys in a nested dict (a copy); keys are checked against the config classes."""
    import copy

    data = copy.deepcopy(data)
    valid = set(all_keys())
    for text in overrides or []:
        key, value = parse_override(text)
        if key not in valid:
            raise _unknown_key(key, " (command line)")
        set_dotted(data, key, value)
    return data


def set_dotted(data: dict, key: str, value: Any) -> None:
    """``set_dotted(d, 'model.beta', 4)`` sets ``d['model']['beta'] = 4``, creating the mappings on the way."""
    node = data
    *parents, last = key.split(".")
    for p in parents:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[last] = value


def validate(cfg: Config) -> Config:
    """Check choices and numeric ranges; return the config unchanged or raise one clear error."""
    flat = flatten(to_dict(cfg))
    for key, allowed in CHOICES.items():
        value = flat.get(key)
        if value is not None and str(value) not in allowed:
            raise VaelabError(f"'{key}' is {value!r}", f"choose one of: {', '.join(allowed)}")
    for key, (low, inclusive) in BOUNDS.items():
        value = flat.get(key)
        if value is None:
            continue
        if value < low or (not inclusive and value == low):
            op = ">=" if inclusive else ">"
            raise VaelabError(f"'{key}' is {value}, it must be {op} {low:g}", f"set {key} to a valid value")
    logger_names(cfg.train.logger)  # an unknown tracker name fails here, before training
    for key, high in UPPER.items():
        value = flat.get(key)
        if value is not None and value > high:
            raise VaelabError(f"'{key}' is {value}, it must be <= {high:,}", f"set {key} to a sane size")
    if cfg.data.val_fraction >= 1:
        raise VaelabError(f"'data.val_fraction' is {cfg.data.val_fraction}, it must be below 1", "use e.g. 0.1 (10% of train)")
    if not 0 <= cfg.train.perturb < 1:
        raise VaelabError(f"'train.perturb' is {cfg.train.perturb}", "give a share of pixels in [0, 1), e.g. 0.2 for a background model")
    if cfg.data.channels not in (None, 1, 3):
        raise VaelabError(f"'data.channels' is {cfg.data.channels}", "use 1 (gray) or 3 (RGB)")
    _check_family(cfg.model)
    if cfg.model.prior == "class" and not cfg.model.conditional:
        raise VaelabError("model.prior=class is a learned prior per class label, for conditional models", "set model.conditional=true, or use model.prior=mog")
    if cfg.model.pixelcnn_layers and cfg.model.pixelcnn_kernel % 2 == 0:
        raise VaelabError(f"'model.pixelcnn_kernel' is {cfg.model.pixelcnn_kernel}, it must be odd", "use 3, 5 or 7")
    if cfg.model.arch == "mlp" and not cfg.model.hidden:
        raise VaelabError("'model.hidden' is empty", "give the MLP at least one hidden size, e.g. [512, 256]")
    if cfg.model.arch == "conv" and not cfg.model.conv_channels:
        raise VaelabError("'model.conv_channels' is empty", "give at least one conv layer, e.g. [32, 64, 128]")
    keep = cfg.train.keep_checkpoints
    if (isinstance(keep, str) and keep != "all") or (isinstance(keep, int) and keep < 0):
        raise VaelabError(f"'train.keep_checkpoints' is {keep!r}", "use a number of epochs (0: none) or all, e.g. train.keep_checkpoints=5")
    for key in ("model.hidden", "model.conv_channels"):
        if any(int(v) < 1 for v in flat[key]):
            raise VaelabError(f"'{key}' has a size below 1: {flat[key]}", "every layer needs at least one unit or channel")
        if any(int(v) > LAYER_UPPER[key] for v in flat[key]):
            raise VaelabError(f"'{key}' has a size above {LAYER_UPPER[key]:,}: {flat[key]}", "give every layer a sane size")
    return cfg


def _check_family(m: ModelConfig) -> None:
    """Combinations of the model-family choices that make no sense: one line naming the conflict."""
    if m.objective in ("mmd", "rae", "vq") and (m.free_bits > 0 or m.ssim_weight > 0):
        what = "model.free_bits" if m.free_bits > 0 else "model.ssim_weight"
        raise VaelabError(f"{what} is not part of model.objective={m.objective}", f"set {what}=0, or use model.objective=elbo")
    if m.objective in ("tc", "factor", "dip"):
        _check_disentangling(m)  # then the checks below that still apply (vq, ema_decay, layer sizes, ...)
    weighted = m.objective not in ("elbo", "tc", "factor", "dip")
    if m.free_bits > 0 and (m.prior in ("mog", "vamp") or m.posterior == "iaf" or weighted):
        what = f"model.objective={m.objective}" if weighted else f"model.prior={m.prior}" if m.prior in ("mog", "vamp") else "model.posterior=iaf"
        why = "is an importance-weighted bound" if weighted else "has no closed-form KL per latent dimension"
        raise VaelabError(f"model.free_bits conflicts with {what}, which {why}", f"use model.free_bits=0 with {what}")
    if weighted and m.ssim_weight > 0:
        raise VaelabError(f"model.ssim_weight conflicts with model.objective={m.objective} (an importance-weighted bound)", "use model.ssim_weight=0, or model.objective=elbo")
    if m.posterior == "delta" and m.objective not in ("mmd", "rae"):
        raise VaelabError(f"model.posterior=delta (a deterministic encoder) has no KL for model.objective={m.objective}", "use model.objective=mmd (WAE-MMD) or rae")
    if m.objective == "rae" and m.posterior == "iaf":
        raise VaelabError("model.objective=rae has a deterministic encoder; model.posterior=iaf does not apply", "drop model.posterior (or set it to delta)")
    if (m.latent == "vq") != (m.objective == "vq"):
        raise VaelabError("model.latent=vq and model.objective=vq go together", "set both (a VQ-VAE) or neither")
    if m.latent == "vq" and (m.stochastic_layers > 1 or m.posterior != "gaussian" or m.conditional or m.pixelcnn_layers):
        raise VaelabError("model.latent=vq is one quantised layer with a plain decoder", "use stochastic_layers=1, posterior=gaussian, conditional=false, pixelcnn_layers=0")
    if m.ema_decay >= 1:
        raise VaelabError(f"'model.ema_decay' is {m.ema_decay}, it must be below 1", "use e.g. 0.99")
    if m.ciwae_beta > 1:
        raise VaelabError(f"'model.ciwae_beta' is {m.ciwae_beta}, it must be at most 1", "use a weight in [0, 1], e.g. 0.5")
    if m.prior == "vamp" and m.conditional:
        raise VaelabError("model.prior=vamp conflicts with model.conditional=true (its pseudo-inputs have no label)", "use model.prior=class for a conditional model")
    if m.prior == "vamp" and m.posterior == "iaf":
        raise VaelabError("model.prior=vamp conflicts with model.posterior=iaf (the VampPrior needs q's density at any z)", "use model.posterior=gaussian with the VampPrior")
    if m.layer_dims and len(m.layer_dims) != m.stochastic_layers - 1:
        raise VaelabError(
            f"'model.layer_dims' has {len(m.layer_dims)} sizes for {m.stochastic_layers} stochastic layers",
            f"give {m.stochastic_layers - 1} sizes (the layers below the top), or [] for 2 x latent_dim",
        )
    if any(int(v) < 1 for v in list(m.layer_dims) + list(m.layer_hidden)):
        raise VaelabError("'model.layer_dims' / 'model.layer_hidden' has a size below 1", "every layer needs at least one unit")


def _check_disentangling(m: ModelConfig) -> None:
    """tc / factor / dip work on one layer of a Gaussian posterior under the N(0, I) prior, without free bits
    or the SSIM term."""
    o = f"model.objective={m.objective}"
    for bad, what in (
        (m.posterior != "gaussian", "model.posterior=gaussian"),
        (m.stochastic_layers != 1, "model.stochastic_layers=1"),
        (m.latent != "gaussian", "model.latent=gaussian"),
        # the decompositions and the DIP moments are taken against p(z) = N(0, I) (Chen et al. 2018 sec. 3,
        # Kim & Mnih 2018 sec. 2, Kumar et al. 2018 sec. 3); a learned prior makes the terms mean something else
        (m.prior != "normal", "model.prior=normal"),
        (m.free_bits > 0, "model.free_bits=0"),
        (m.ssim_weight > 0, "model.ssim_weight=0"),
    ):
        if bad:
            raise VaelabError(f"{o} needs {what} (one layer of Gaussian latents under N(0, I), the terms as published)", f"set {what} with {o}")
    if m.objective == "factor" and (not m.disc_hidden or any(int(v) < 1 for v in m.disc_hidden)):
        raise VaelabError("'model.disc_hidden' has a size below 1 (or none)", "give the discriminator's widths, e.g. [1000, 1000]")


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """The config of a YAML file (or the defaults) with ``key=value`` overrides, validated."""
    data = load_yaml(path) if path is not None else {}
    where = f" in {path}" if path is not None else ""
    from_dict(data, Config, where=where)  # file errors name the file
    data = apply_overrides(data, overrides)
    return validate(from_dict(data, Config))


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(dump_config(cfg), encoding="utf-8")


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
