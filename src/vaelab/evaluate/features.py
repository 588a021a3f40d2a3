"""The domain feature network behind FID: a small ResNet-style classifier trained on the dataset itself.

Inception-v3 features mean little on 28 px grey digits and its weights cannot be downloaded everywhere, so,
like the Fashion-MNIST seed project's ResNet-18, vaelab trains a small classifier per dataset and shape and
uses its 128-d penultimate (global-average-pooled) features for FID and precision/recall; its class
predictions judge class-conditional samples.

    (B, C, H, W) in [0, 1]
      -> stem: 3x3 conv to 32 ch (stride-2 convs instead, until the side is <= 32 px, so 256 px photos stay cheap)
      -> 3 stages of a residual basic block each (32, 64, 128 ch), each stage halving the side
      -> global average pool -> (B, 128) features -> linear -> (B, K) logits

A trained network is a folder: ``model.safetensors`` (weights, no pickle) and ``meta.json`` (the data spec,
image shape, class names, widths, test accuracy, training time). `cache_path(spec, shape)` is where
`vaelab features train` puts it and where `vaelab evaluate` looks for it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import ImageSet, load, to_float
from ..errors import VaelabError

WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"
FORMAT = "vaelab-feature-net-1"


# ---------------------------------------------------------------------------------------------------------
# the network


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut (1x1 conv when the shape changes), then ReLU (He et al. 2016)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.short = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.short = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.short(x))


def stem_downsamples(image_size: int, work_size: int = 32) -> int:
    """How many stride-2 stem convs bring `image_size` down to at most `work_size` px."""
    return max(0, math.ceil(math.log2(image_size / work_size))) if image_size > work_size else 0


class FeatureNet(nn.Module):
    """Small ResNet classifier; `features(x)` gives the (B, widths[-1]) penultimate features."""

    def __init__(self, channels: int, image_size: int, num_classes: int, widths: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        self.channels, self.image_size, self.num_classes = channels, image_size, num_classes
        self.widths = tuple(widths)
        w0 = widths[0]
        down = stem_downsamples(image_size)
        stem: list[nn.Module] = []
        c = channels
        for i in range(max(1, down)):  # the first conv already strides when the image is large
            stem += [nn.Conv2d(c, w0, 3, 2 if i < down else 1, 1, bias=False), nn.BatchNorm2d(w0), nn.ReLU(inplace=True)]
            c = w0
        self.stem = nn.Sequential(*stem)
        blocks, c = [], w0
        for w in widths:
            blocks.append(BasicBlock(c, w, 2))
            c = w
        self.stages = nn.Sequential(*blocks)
        self.fc = nn.Linear(c, num_classes)

    @property
    def feature_dim(self) -> int:
        return self.widths[-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) in [0, 1] -> (B, F) pooled features."""
        h = self.stages(self.stem(x * 2.0 - 1.0))
        return h.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


# ---------------------------------------------------------------------------------------------------------
# a trained network with its description


@dataclass
class TrainedFeatureNet:
    """A feature network plus what it was trained on and how well it does."""

    net: FeatureNet
    meta: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.meta.get("name", "feature-net")

    @property
    def class_names(self) -> list[str]:
        return list(self.meta.get("class_names", []))

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.net.channels, self.net.image_size, self.net.image_size)

    def describe(self) -> dict:
        """What goes into evaluation JSON, so numbers from different feature networks are never mixed up."""
        keys = ("name", "kind", "spec", "shape", "test_accuracy", "held_out", "weights_sha256", "train_images")
        out = {k: self.meta.get(k) for k in keys if k in self.meta}
        if self.path is not None:
            out["path"] = str(self.path)
        return out

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 500) -> np.ndarray:
        """Features (N, F) of images: uint8 (N, C, H, W), or float in [0, 1]."""
        return self._map(images, batch_size, self.net.features)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 500) -> np.ndarray:
        """Predicted class index (N,) into `class_names`."""
        return self._map(images, batch_size, lambda x: self.net(x).argmax(1)).astype(np.int64)

    def _map(self, images: torch.Tensor, batch_size: int, fn) -> np.ndarray:
        if tuple(images.shape[1:]) != self.shape:
            raise VaelabError(
                f"the feature network {self.name} takes images of shape {self.shape}, got {tuple(images.shape[1:])}",
                "train one for this data with 'vaelab features train SPEC --image-size S --channels C'",
            )
        self.net.eval()
        device = next(self.net.parameters()).device
        out = []
        for s in range(0, images.shape[0], batch_size):
            x = images[s : s + batch_size]
            x = to_float(x) if x.dtype == torch.uint8 else x.float()
            out.append(fn(x.to(device)).cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.net.feature_dim), np.float32)


# ---------------------------------------------------------------------------------------------------------
# names, cache, save and load


def net_name(spec: str, shape: tuple[int, int, int], limit: int | None = None) -> str:
    """A file-system-safe name for a data spec and image shape, e.g. 'mnist-1x28x28' or 'folder-photos-3f2a1b0c-3x64x64'."""
    from ..data import parse_spec

    kind, arg = parse_spec(spec)
    base = kind
    if arg:  # a path: its last part plus a short hash of the whole spec, so two folders named 'train' differ
        tail = Path(arg.rstrip("/\\")).name or "data"
        base = f"{kind}-{tail}-{hashlib.sha256(spec.encode()).hexdigest()[:8]}"
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-").lower() or "data"
    name = f"{base}-{'x'.join(map(str, shape))}"
    return f"{name}-limit{limit}" if limit else name


def cache_root() -> Path:
    from ..data.sources import cache_dir

    return cache_dir() / "features"


def cache_path(spec: str, shape: tuple[int, int, int], limit: int | None = None) -> Path:
    return cache_root() / net_name(spec, shape, limit)


def find_cached(spec: str, shape: tuple[int, int, int]) -> Path | None:
    """The cached feature network for a full dataset spec at this shape, or None."""
    p = cache_path(spec, shape)
    return p if (p / WEIGHTS_FILE).is_file() and (p / META_FILE).is_file() else None


def save_feature_net(trained: TrainedFeatureNet, folder: str | Path) -> Path:
    """Write ``model.safetensors`` + ``meta.json`` into `folder` (each atomically)."""
    from safetensors.torch import save as st_save

    from ..train.checkpoint import atomic_write

    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in trained.net.state_dict().items()}
    blob = st_save(state)
    meta = dict(trained.meta, weights_sha256=hashlib.sha256(blob).hexdigest()[:16])
    try:
        atomic_write(folder / WEIGHTS_FILE, lambda f: f.write(blob))
        atomic_write(folder / META_FILE, lambda f: f.write(json.dumps(meta, indent=2).encode()))
    except OSError as e:
        raise VaelabError(f"cannot write the feature network to {folder}: {e.strerror}", "choose a writable --out") from None
    trained.meta, trained.path = meta, folder
    return folder


def load_feature_net(folder: str | Path, device: str | torch.device = "cpu") -> TrainedFeatureNet:
    """Read a feature network folder (or its meta.json / model.safetensors file)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    meta_path, weights = folder / META_FILE, folder / WEIGHTS_FILE
    if not meta_path.is_file() or not weights.is_file():
        raise VaelabError(
            f"{folder} is not a vaelab feature network (needs {META_FILE} and {WEIGHTS_FILE})",
            "train one with 'vaelab features train SPEC', or use --features auto",
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        c, s, _ = meta["shape"]
        net = FeatureNet(int(c), int(s), int(meta["num_classes"]), tuple(meta["widths"]))
        net.load_state_dict(load_file(str(weights)))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as e:
        raise VaelabError(
            f"{folder} holds a broken feature network ({str(e).splitlines()[0][:100]})", "train it again with 'vaelab features train'"
        ) from None
    return TrainedFeatureNet(net.to(device).eval(), meta, folder)


# ---------------------------------------------------------------------------------------------------------
# training


def _accuracy(net: FeatureNet, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    net.eval()
    device = next(net.parameters()).device
    correct = 0
    with torch.no_grad():
        for s in range(0, len(images), batch_size):
            x = to_float(images[s : s + batch_size]).to(device)
            correct += int((net(x).argmax(1).cpu() == labels[s : s + batch_size]).sum())
    return correct / max(1, len(images))


def _shift(x: torch.Tensor, pad: int, g: torch.Generator) -> torch.Tensor:
    """Random translation by up to `pad` px (zero fill): the one augmentation that suits digits and clothes.

    One slice copy per distinct offset keeps the result a plain NCHW tensor (a permuted index result can
    look channels-last to oneDNN, which crashed a CPU conv backward on 1-channel input in torch 2.13).
    """
    b, _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    offsets = torch.randint(0, (2 * pad + 1) ** 2, (b,), generator=g)
    out = torch.empty_like(x)
    for o in offsets.unique().tolist():
        dy, dx = divmod(o, 2 * pad + 1)
        m = (offsets == o).to(x.device)
        out[m] = xp[m, :, dy : dy + h, dx : dx + w]
    return out


@torch.enable_grad()  # callers (evaluate_run) may run under no_grad
def train_feature_net(
    data: ImageSet,
    *,
    spec: str = "",
    epochs: int = 8,
    batch_size: int = 128,
    lr: float = 2e-3,
    weight_decay: float = 5e-4,
    patience: int = 2,
    augment: bool = True,
    widths: tuple[int, ...] = (32, 64, 128),
    seed: int = 0,
    device: str | torch.device = "cpu",
    limit: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> TrainedFeatureNet:
    """Train the classifier on data's 'train' split, stop early on 'val' accuracy, score it on 'test'.

    One-cycle AdamW schedule over `epochs`; the best-on-validation weights are kept. Where the data has no
    test split, the validation accuracy is reported (``held_out: 'val'``).
    """
    if data.labels is None or data.num_classes < 2:
        raise VaelabError(
            f"{data.source or 'the data'} has no class labels, so no feature classifier can be trained on it",
            "give a labelled spec, pass --inception PATH, or use --no-fid",
        )
    if epochs < 1:
        raise VaelabError(f"epochs is {epochs}", "train the feature network for at least one epoch")
    train = data.split("train")
    val = data.split("val") if data.has_split("val") else None
    test = data.split("test") if data.has_split("test") else None
    if val is None:
        raise VaelabError(f"{data.source} has no validation split for early stopping", "load it with val_fraction > 0")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    c, s, _ = data.shape
    net = FeatureNet(c, s, data.num_classes, widths).to(device)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.2)
    pad = max(1, s // 14)
    best, best_state, best_epoch, history = -1.0, None, 0, []
    start = time.perf_counter()
    tick = getattr(progress, "update", None)  # a bar with ETA over all steps, when the caller has one
    for epoch in range(1, epochs + 1):
        net.train()
        order = torch.randperm(len(train), generator=g)
        total = 0.0
        for i in range(steps_per_epoch):
            idx = order[i * batch_size : (i + 1) * batch_size]
            x = to_float(train.gather(idx)).to(device)
            if augment:
                x = _shift(x, pad, g)
            loss = F.cross_entropy(net(x), train.labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            if tick is not None and (i + 1) % 10 == 0:
                tick((epoch - 1) * steps_per_epoch + i + 1, epochs * steps_per_epoch)
        acc = _accuracy(net, val.pixels, val.labels)
        history.append({"epoch": epoch, "train_loss": total / len(train), "val_accuracy": acc, "seconds": time.perf_counter() - start})
        if progress:
            progress(f"epoch {epoch}/{epochs}: train loss {total / len(train):.4f}, val accuracy {acc:.4f} ({time.perf_counter() - start:.0f} s)")
        if acc > best:
            best, best_epoch = acc, epoch
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        elif epoch - best_epoch >= patience:
            break
    net.load_state_dict(best_state)
    seconds = time.perf_counter() - start
    held = test if test is not None else val
    acc = _accuracy(net, held.pixels, held.labels)
    meta = {
        "format": FORMAT,
        "name": net_name(spec or data.source, data.shape, limit),
        "kind": "vaelab-resnet",
        "spec": spec or data.source,
        "shape": list(data.shape),
        "num_classes": data.num_classes,
        "class_names": list(data.class_names),
        "widths": list(widths),
        "feature_dim": widths[-1],
        "test_accuracy": acc,
        "held_out": "test" if test is not None else "val",
        "val_accuracy": best,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "train_images": len(train),
        "train_seconds": seconds,
        "history": history,
        "device": str(device),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    return TrainedFeatureNet(net.eval(), meta)


def load_training_data(spec: str, image_size: int | None = None, channels: int | None = None, limit: int | None = None, seed: int = 0) -> ImageSet:
    """The data a feature network trains on: every class of the spec, a validation split held out of train."""
    return load(spec, image_size=image_size, channels=channels, val_fraction=0.1, limit=limit, seed=seed)


def ensure_feature_net(
    spec: str,
    shape: tuple[int, int, int],
    *,
    device: str | torch.device = "cpu",
    progress: Callable[[str], None] | None = None,
    **train_kwargs,
) -> TrainedFeatureNet:
    """The cached feature network for (spec, shape); trained on the full spec and cached when there is none."""
    found = find_cached(spec, shape)
    if found is not None:
        return load_feature_net(found, device)
    c, s, _ = shape
    if progress:
        progress(
            f"no feature network for {spec} at {c}x{s}x{s} yet: training one once (minutes on a CPU; "
            f"vaelab features train {spec}); it will be cached in {cache_path(spec, shape)} ..."
        )
    data = load_training_data(spec, image_size=s, channels=c)
    trained = train_feature_net(data, spec=spec, device=device, progress=progress, **train_kwargs)
    save_feature_net(trained, cache_path(spec, shape))
    if progress:
        progress(
            f"trained feature network {trained.name} in {trained.meta['train_seconds']:.0f} s, "
            f"{trained.meta['held_out']} accuracy {trained.meta['test_accuracy']:.4f}; cached in {trained.path}"
        )
    return trained
