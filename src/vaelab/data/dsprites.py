"""``dsprites``: the dSprites images (Matthey, Higgins, Hassabis & Lerchner 2017, github.com/deepmind/dsprites-dataset)
rendered locally from their definition, with their ground-truth factors. No download.

The definition (the dsprites-dataset README): 64 x 64 binary images of one white shape on black, every
combination of the latent factors, in this order (the index of an image is the mixed-radix number of its
factor indices, last factor fastest, as in DeepMind's ``latents_classes``):

    shape        3   square, ellipse, heart
    scale        6   linspace(0.5, 1, 6)
    orientation  40  linspace(0, 2 pi, 40)          (radians; 0 and 2 pi are the same picture, as in the original)
    posx         32  linspace(0, 1, 32)
    posy         32  linspace(0, 1, 32)
                     = 737,280 images

Rendering here (DeepMind's own renderer is not published, so pixel-exact equality with their npz is not
possible offline; this follows the definition and is exact to the rule below): a pixel (row r, column c)
is on when its centre (c + 0.5, r + 0.5) lies inside the shape, tested with the shape's implicit equation
in the shape's own frame (rotated by -orientation about the shape's centre, divided by the scale):

    square   |u| <= 1 and |v| <= 1                      half side  8 px x scale
    ellipse  u^2 + (2 v)^2 <= 1                        semi-axes 10 px and 5 px x scale
    heart    (u^2 + w^2 - 1)^3 - u^2 w^3 <= 0, w = -v + 0.15   (the classic heart curve, 8 px unit x scale)

The shape's centre is at pixel (13 + 38 posx, 13 + 38 posy) (x to the right, y down), so every shape at
every orientation stays inside the canvas. Rendering is vectorised NumPy over batches of images (about
10,000 images/s on one core, measured 2026-12-03 on a 2-core CPU on 20,000 images) and deterministic;
the rendered grid is cached as a raw uint8 file under the vaelab cache (written chunk by chunk) and read
back memory-mapped, like the folder cache: the full set (2.9 GiB) is never copied into RAM.

Options (``data.factors``, ``data.limit``, ``data.classes``): a factor subset such as ``shape,scale,posx,posy``
(also written in the spec, ``dsprites:shape,scale,posx,posy``, e.g. for ``--data``) keeps the
named factors varying and holds the others at their first value (orientation 0), here 18,432 images; with
``data.limit`` only a seeded draw of about twice the limit (of the shapes kept by ``data.classes``) is rendered
(no cache needed). The class label
is the shape (3 classes); all factors are in ``ImageSet.factors``.
"""

from __future__ import annotations

import contextlib
import math
import os

import numpy as np
import torch

from ..errors import VaelabError
from .imageset import ImageSet

FACTOR_NAMES = ("shape", "scale", "orientation", "posx", "posy")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPES = ("square", "ellipse", "heart")
SIZE = 64


def factor_values() -> list[list[float]]:
    """The value of every index of each factor (shape: 0, 1, 2 as in DeepMind's 1, 2, 3 minus one)."""
    return [
        [0.0, 1.0, 2.0],
        np.linspace(0.5, 1.0, 6).tolist(),
        np.linspace(0.0, 2 * math.pi, 40).tolist(),
        np.linspace(0.0, 1.0, 32).tolist(),
        np.linspace(0.0, 1.0, 32).tolist(),
    ]


def parse_factors(factors: list[str] | None) -> list[int]:
    """Indices (in FACTOR_NAMES order) of the factors that vary; None or [] = all five."""
    if not factors:
        return list(range(len(FACTOR_NAMES)))
    out = []
    for f in factors:
        name = str(f).strip().lower()
        if name not in FACTOR_NAMES:
            raise VaelabError(f"dsprites has no factor '{f}'", f"choose from: {', '.join(FACTOR_NAMES)}")
        if FACTOR_NAMES.index(name) not in out:
            out.append(FACTOR_NAMES.index(name))
    return sorted(out)


def grid_indices(varying: list[int]) -> np.ndarray:
    """(M, 5) int64 factor indices of the grid where the `varying` factors take every value and the others 0,
    in the original's order (last factor fastest)."""
    sizes = [FACTOR_SIZES[i] if i in varying else 1 for i in range(len(FACTOR_SIZES))]
    mesh = np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1).astype(np.int64)


def render(indices: np.ndarray, batch: int = 512) -> np.ndarray:
    """(M, 5) factor indices -> (M, 64, 64) uint8 images in {0, 255} (the rule in the module docstring)."""
    indices = np.asarray(indices, dtype=np.int64).reshape(-1, len(FACTOR_NAMES))
    vals = factor_values()
    out = np.zeros((len(indices), SIZE, SIZE), dtype=np.uint8)
    centres = np.arange(SIZE, dtype=np.float64) + 0.5
    px, py = centres[None, None, :], centres[None, :, None]  # (1, 1, W) columns, (1, H, 1) rows
    for s in range(0, len(indices), batch):
        f = indices[s : s + batch]
        shape = f[:, 0]
        scale = np.asarray(vals[1])[f[:, 1]][:, None, None]
        theta = np.asarray(vals[2])[f[:, 2]][:, None, None]
        cx = (13 + 38 * np.asarray(vals[3])[f[:, 3]])[:, None, None]
        cy = (13 + 38 * np.asarray(vals[4])[f[:, 4]])[:, None, None]
        dx, dy = px - cx, py - cy  # (B, H, W): offsets of each pixel centre, y down
        # into the shape's frame: rotate by -theta (counter-clockwise on screen is +theta with y up)
        cos, sin = np.cos(theta), np.sin(theta)
        x_up, y_up = dx, -dy
        u = cos * x_up + sin * y_up
        v = -sin * x_up + cos * y_up
        inside = np.zeros(u.shape, dtype=bool)  # (B, H, W)
        for k, unit in ((0, 8.0), (1, 10.0), (2, 8.0)):
            rows = shape == k
            if not rows.any():
                continue
            uk, vk = u[rows] / (unit * scale[rows]), v[rows] / (unit * scale[rows])
            if k == 0:
                m = (np.abs(uk) <= 1) & (np.abs(vk) <= 1)
            elif k == 1:
                m = uk * uk + (2 * vk) ** 2 <= 1
            else:
                w = vk + 0.15  # centre the heart's bounding box on the shape's centre
                m = (uk * uk + w * w - 1) ** 3 - uk * uk * w**3 <= 0
            inside[rows] = m
        out[s : s + batch] = inside.astype(np.uint8) * 255
    return out


def _cache_path(varying: list[int]):
    from .paths import cache_dir

    tag = "all" if len(varying) == len(FACTOR_NAMES) else "-".join(FACTOR_NAMES[i] for i in varying)
    return cache_dir() / "dsprites" / f"dsprites-v1-{tag}.u8"


RENDER_CHUNK = 8192  # images rendered (and written) at a time while filling the cache: 32 MiB


def _cached_render(varying: list[int], indices: np.ndarray) -> tuple[torch.Tensor, str | None]:
    """The whole grid of a factor subset as (M, 1, 64, 64) uint8 and the cache file it is mapped from: the
    raw cache file memory-mapped (`imageset.open_map`: pages read on demand, never a copy in RAM; all
    737,280 images are 2.9 GiB), rendered into it chunk by chunk when it is missing. Without a usable cache
    (``VAELAB_NO_CACHE=1``, a read-only cache) the grid is rendered into RAM: (images, None)."""
    from .imageset import open_map

    shape = (len(indices), 1, SIZE, SIZE)
    if os.environ.get("VAELAB_NO_CACHE") != "1":
        path = _cache_path(varying)
        if not (path.is_file() and path.stat().st_size == math.prod(shape)):  # missing, torn or foreign: render
            try:
                from ..train.checkpoint import atomic_write

                def write(f):
                    for s in range(0, len(indices), RENDER_CHUNK):
                        f.write(render(indices[s : s + RENDER_CHUNK]).tobytes())

                atomic_write(path, write)
            except OSError:
                path = None  # a read-only cache only costs the rendering next time
            else:  # the .npy of earlier versions (the same grid, read into RAM) is not read any more
                with contextlib.suppress(OSError):
                    path.with_suffix(".npy").unlink(missing_ok=True)
        if path is not None:
            return open_map(path, shape), str(path)
    return torch.from_numpy(render(indices)).unsqueeze(1), None


def _shape_indices(classes) -> list[int] | None:
    """The shapes named by a class filter (names or indices); None when it names none (load's own class
    filter then says what is wrong)."""
    out = []
    for c in classes or []:
        c = str(c).strip().lower()
        k = SHAPES.index(c) if c in SHAPES else int(c) if c.isdigit() and int(c) < len(SHAPES) else None
        if k is not None and k not in out:
            out.append(k)
    return out or None


def read_dsprites(
    arg: str = "", spec: str = "dsprites", factors: list[str] | None = None, limit: int | None = None, seed: int = 0,
    classes: list | None = None, **_
) -> ImageSet:
    """The dSprites images of a factor subset (all five by default); with `limit`, a seeded draw of
    min(grid, 2 x limit + 2) of them (of the shapes in `classes` when given), rendered on the spot."""
    if arg.strip():  # dsprites:shape,scale -> those factors vary (the spec says it, e.g. for --data)
        named = [f for f in arg.split(",") if f.strip()]
        if factors and parse_factors(factors) != parse_factors(named):
            raise VaelabError(f"{spec} and data.factors={','.join(factors)} name different factors", "give the factors once")
        factors = named
    varying = parse_factors(factors)
    indices = grid_indices(varying)
    shapes = _shape_indices(classes)
    pool = np.arange(len(indices)) if shapes is None else np.flatnonzero(np.isin(indices[:, 0], shapes))
    if limit is not None and 2 * limit + 2 < len(pool):
        rng = np.random.default_rng(seed + 7)
        pick = pool[np.sort(rng.choice(len(pool), size=2 * limit + 2, replace=False))]
        indices = indices[pick]
        tensor, map_path = torch.from_numpy(render(indices)).unsqueeze(1), None  # (N, 1, 64, 64) in RAM
    else:
        tensor, map_path = _cached_render(varying, indices)  # memory-mapped from the cache
    names = [FACTOR_NAMES[i] for i in varying]
    vals = factor_values()
    return ImageSet(
        tensor,
        torch.from_numpy(indices[:, 0].copy()),
        list(SHAPES),
        None,
        f"dsprites (rendered from its definition; factors {', '.join(names)})",
        factors=torch.from_numpy(indices[:, varying].copy()),
        factor_names=names,
        factor_values=[vals[i] for i in varying],
        map_path=map_path,
    )


def spec_factors(spec: str, factors: list[str] | None) -> list[str] | None:
    """The `factors` option to load `spec` with, for a run trained with data.factors=`factors`: a bare
    ``dsprites`` spec gets the run's subset (the images it was trained on); another spec gets none."""
    from .load import parse_spec

    kind, arg = parse_spec(spec)
    return factors if kind == "dsprites" and not arg.strip() else None
