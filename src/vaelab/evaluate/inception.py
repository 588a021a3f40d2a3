"""Inception-v3 pool features (2048-d) from a local weights file, for FID numbers comparable across papers.

vaelab downloads nothing. With ``--inception PATH`` it reads one of these files, which the user fetched:

- ``pt_inception-2015-12-05-6726825d.pth``: the TensorFlow FID Inception ported by pytorch-fid (the same file
  torch-fidelity and torchmetrics use as ``weights-inception-2015-12-05-6726825d.pth``); 1008 classes. The
  network is built with the FID variants of its blocks (TensorFlow's average pools that ignore padding, and
  the max pool in the last block), as pytorch-fid does.
- ``inception_v3_google-*.pth``: torchvision's ImageNet Inception-v3 state dict; 1000 classes.

Both are plain state dicts with torchvision's parameter names, read with ``torch.load(weights_only=True)``
(a ``.safetensors`` file with the same names works too). The architecture below is written here because
torchvision is not a dependency; its module names match those files key for key. Images are resized
bilinearly to 299 x 299, grey is repeated to RGB, and [0, 1] is mapped to [-1, 1] (pytorch-fid's
preprocessing; TensorFlow's own resize differs slightly, so numbers match pytorch-fid, not TF bit for bit).
Inception at 299 px costs about 6 GFLOPs per image: tens of minutes for 10,000 images on a CPU.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import VaelabError

FEATURE_DIM = 2048
INPUT_SIZE = 299


class Conv(nn.Module):
    """conv (no bias) + BatchNorm(eps 1e-3) + ReLU: torchvision's BasicConv2d (names conv, bn)."""

    def __init__(self, c_in: int, c_out: int, **kw):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, bias=False, **kw)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: torch.Tensor, tf: bool) -> torch.Tensor:
    # TensorFlow's 3x3 average pool leaves the zero padding out of the mean
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=not tf)


class BlockA(nn.Module):
    def __init__(self, c: int, pool: int, tf: bool):
        super().__init__()
        self.tf = tf
        self.branch1x1 = Conv(c, 64, kernel_size=1)
        self.branch5x5_1 = Conv(c, 48, kernel_size=1)
        self.branch5x5_2 = Conv(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = Conv(c, 64, kernel_size=1)
        self.branch3x3dbl_2 = Conv(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = Conv(96, 96, kernel_size=3, padding=1)
        self.branch_pool = Conv(c, pool, kernel_size=1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool(x, self.tf))], 1)


class BlockB(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.branch3x3 = Conv(c, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = Conv(c, 64, kernel_size=1)
        self.branch3x3dbl_2 = Conv(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = Conv(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, 2)], 1)


class BlockC(nn.Module):
    def __init__(self, c: int, c7: int, tf: bool):
        super().__init__()
        self.tf = tf
        self.branch1x1 = Conv(c, 192, kernel_size=1)
        self.branch7x7_1 = Conv(c, c7, kernel_size=1)
        self.branch7x7_2 = Conv(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = Conv(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = Conv(c, c7, kernel_size=1)
        self.branch7x7dbl_2 = Conv(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = Conv(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = Conv(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = Conv(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = Conv(c, 192, kernel_size=1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg_pool(x, self.tf))], 1)


class BlockD(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.branch3x3_1 = Conv(c, 192, kernel_size=1)
        self.branch3x3_2 = Conv(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = Conv(c, 192, kernel_size=1)
        self.branch7x7x3_2 = Conv(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = Conv(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = Conv(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, 2)], 1)


class BlockE(nn.Module):
    """pool: 'avg' (torchvision), 'avg_tf' (FID Mixed_7b), 'max' (FID Mixed_7c)."""

    def __init__(self, c: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = Conv(c, 320, kernel_size=1)
        self.branch3x3_1 = Conv(c, 384, kernel_size=1)
        self.branch3x3_2a = Conv(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = Conv(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = Conv(c, 448, kernel_size=1)
        self.branch3x3dbl_2 = Conv(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = Conv(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = Conv(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = Conv(c, 192, kernel_size=1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        p = F.max_pool2d(x, 3, 1, 1) if self.pool == "max" else _avg_pool(x, self.pool == "avg_tf")
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(p)], 1)


class InceptionV3(nn.Module):
    """Inception-v3 up to the 2048-d average pool (+ fc, so a state dict loads whole). (B, 3, 299, 299) -> (B, 2048)."""

    def __init__(self, num_classes: int = 1008, fid_variant: bool = True):
        super().__init__()
        tf = fid_variant
        self.Conv2d_1a_3x3 = Conv(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = Conv(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = Conv(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = Conv(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = Conv(80, 192, kernel_size=3)
        self.Mixed_5b = BlockA(192, 32, tf)
        self.Mixed_5c = BlockA(256, 64, tf)
        self.Mixed_5d = BlockA(288, 64, tf)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b = BlockC(768, 128, tf)
        self.Mixed_6c = BlockC(768, 160, tf)
        self.Mixed_6d = BlockC(768, 160, tf)
        self.Mixed_6e = BlockC(768, 192, tf)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b = BlockE(1280, "avg_tf" if tf else "avg")
        self.Mixed_7c = BlockE(2048, "max" if tf else "avg")
        self.fc = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, 299, 299) in [-1, 1] -> (B, 2048)."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, 2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, 2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean(dim=(2, 3))


def _read_state(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle with code, a truncated file, not a torch file at all
        raise VaelabError(
            f"cannot read Inception weights from {path}: {str(e).splitlines()[0][:120]}",
            "give a state-dict file such as pt_inception-2015-12-05-6726825d.pth (pytorch-fid) or inception_v3_google-*.pth (torchvision)",
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VaelabError(f"{path} is not a state dict of tensors", "give the Inception-v3 weights file itself")
    return state


class InceptionFeatures:
    """The Inception feature extractor with the interface of `TrainedFeatureNet` (features, name, describe)."""

    class_names: list[str] = []  # ImageNet classes say nothing about class-conditional samples here

    def __init__(self, net: InceptionV3, path: Path, variant: str, sha: str):
        self.net, self.path, self.variant, self.sha = net, path, variant, sha

    @property
    def name(self) -> str:
        return f"inception-v3-{self.variant}"

    def describe(self) -> dict:
        return {"name": self.name, "kind": "inception-v3", "path": str(self.path), "weights_sha256": self.sha, "feature_dim": FEATURE_DIM}

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 50) -> np.ndarray:
        """(N, F) features of uint8 or [0, 1] float images of any size, gray or RGB."""
        device = next(self.net.parameters()).device
        out = []
        bs = max(1, min(batch_size, 50))  # 299 px activations: keep a batch small
        for s in range(0, images.shape[0], bs):
            x = images[s : s + bs]
            x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            x = F.interpolate(x.to(device), size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
            out.append(self.net.features(x * 2.0 - 1.0).cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, FEATURE_DIM), np.float32)


def load_inception(path: str | Path, device: str | torch.device = "cpu") -> InceptionFeatures:
    """Build Inception-v3 from a local weights file (see the module doc for which files)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise VaelabError(
            f"Inception weights file not found: {path}",
            "vaelab downloads nothing: fetch pt_inception-2015-12-05-6726825d.pth (pytorch-fid's release) yourself, "
            "or drop --inception to use vaelab's domain feature network",
        )
    state = _read_state(path)
    fc = state.get("fc.weight")
    if fc is None or fc.ndim != 2 or fc.shape[1] != FEATURE_DIM:
        raise VaelabError(
            f"{path} does not look like Inception-v3 weights (no fc.weight of shape (K, 2048))",
            "give pt_inception-2015-12-05-6726825d.pth or torchvision's inception_v3_google-*.pth",
        )
    fid_variant = fc.shape[0] == 1008  # the TensorFlow FID graph has 1008 outputs, torchvision's ImageNet 1000
    net = InceptionV3(int(fc.shape[0]), fid_variant)
    state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise VaelabError(
            f"{path} does not match Inception-v3 ({len(missing)} missing, {len(unexpected)} unexpected parameters, "
            f"e.g. {(missing or unexpected)[0]})",
            "give a torchvision-named state dict such as pt_inception-2015-12-05-6726825d.pth",
        )
    sha = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return InceptionFeatures(net.to(device).eval(), path, "fid" if fid_variant else "torchvision", sha)
