"""Latent-space figures: the decoded manifold, scatter by class (direct, PCA, t-SNE), GMM ellipses,
traversals per dimension, and interpolation between two images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from ..errors import VaelabError
from .images import decode
from .style import (
    as_images,
    cell_centers,
    cell_scale,
    class_colors,
    compose,
    mosaic_size,
    new_figure,
    safe_text,
    show_image,
    wrap_title,
)

# ---------------------------------------------------------------------------------------------------------
# planes through the latent space


@dataclass
class Plane:
    """A 2-D plane in the latent space: z = origin + a * u + b * v, with axis names for the figure."""

    origin: np.ndarray  # (D,)
    u: np.ndarray  # (D,)
    v: np.ndarray  # (D,)
    xlabel: str
    ylabel: str

    def points(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(N,) coordinates a, b -> latent points (N, D)."""
        return self.origin[None] + np.asarray(a)[:, None] * self.u[None] + np.asarray(b)[:, None] * self.v[None]

    def project(self, z: np.ndarray) -> np.ndarray:
        """Latent points (N, D) -> plane coordinates (N, 2) (least squares; exact for points on the plane)."""
        basis = np.stack([self.u, self.v], 1)  # (D, 2)
        coef, *_ = np.linalg.lstsq(basis, (np.asarray(z) - self.origin[None]).T, rcond=None)
        return coef.T


def check_dims(dims, latent_dim: int, need: int | None = None) -> list[int]:
    """Validate latent dimension indices given by a user (e.g. ``--dims 0,3``)."""
    dims = [int(d) for d in dims]
    bad = [d for d in dims if not 0 <= d < latent_dim]
    if bad:
        raise VaelabError(
            f"latent dimension {bad[0]} does not exist in a {latent_dim}-D latent space",
            f"use indices 0..{latent_dim - 1}",
        )
    if need is not None and len(dims) < need:
        raise VaelabError(f"{need} latent dimensions are needed, got {len(dims)}", "give them as --dims i,j")
    if len(set(dims)) != len(dims):
        raise VaelabError(f"latent dimensions repeat in {dims}", "give distinct indices")
    return dims


def dims_plane(latent_dim: int, i: int = 0, j: int = 1) -> Plane:
    """The plane of latent dimensions i and j through the origin (the prior's centre)."""
    i, j = check_dims([i, j], latent_dim, 2)
    e = np.eye(latent_dim, dtype=np.float64)
    return Plane(np.zeros(latent_dim), e[i], e[j], f"$z_{{{i}}}$", f"$z_{{{j}}}$")


def prior_plane(model, i: int = 0, j: int = 1) -> Plane:
    """The plane of latent dimensions i and j, centred and scaled to the model's prior (its mean and standard
    deviation per dimension): the dims plane itself for N(0, I); a learned prior's grid covers where its mass is."""
    d = model.latent_dim
    if d < 2:
        return Plane(np.zeros(1), np.ones(1), np.zeros(1), "$z_{0}$", "")
    plane = dims_plane(d, i, j)
    prior = getattr(model, "prior", None)
    if prior is None or not prior.learned:
        return plane
    mean, std = (t.double().numpy() for t in prior.moments())
    return Plane(mean, plane.u * std, plane.v * std, f"$z_{{{i}}}$ (prior sd units)", f"$z_{{{j}}}$ (prior sd units)")


def pca_plane(z: np.ndarray, scaled: bool = True) -> Plane:
    """The plane of the first two principal axes of latents `z` (N, D), through their mean; `scaled`: one
    unit is one standard deviation along each axis (for the manifold grid), else one latent unit."""
    from sklearn.decomposition import PCA

    z = np.asarray(z, dtype=np.float64)
    pca = PCA(n_components=2).fit(z)
    std = np.sqrt(np.maximum(pca.explained_variance_, 1e-12)) if scaled else np.ones(2)
    share = pca.explained_variance_ratio_ * 100
    unit = ", in std" if scaled else ""
    return Plane(
        pca.mean_,
        pca.components_[0] * std[0],
        pca.components_[1] * std[1],
        f"PC 1 ({share[0]:.0f}% of variance{unit})",
        f"PC 2 ({share[1]:.0f}% of variance{unit})",
    )


def ppf_grid(n: int, lo: float = 0.05, hi: float = 0.95) -> np.ndarray:
    """`n` points evenly spaced in probability under N(0, 1): norm.ppf(linspace(lo, hi, n)).

    Equal prior mass per cell, so the decoded manifold shows the latent space as the prior weighs it.
    """
    from scipy.stats import norm

    return norm.ppf(np.linspace(lo, hi, n))


# ---------------------------------------------------------------------------------------------------------
# manifold


CODE_QUANTILES = (0.01, 0.99)  # the manifold grid spans these quantiles of the posterior means


def manifold_axes(plane: Plane, grid: int = 20, codes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """The grid values along the plane's two axes and a phrase saying where the range comes from.

    With `codes` (posterior means (N, D) of real images) each axis runs evenly between the 1st and 99th
    percentiles of the codes projected on the plane: where the encoder puts images (a beta < 1 model spreads
    them to +-4 and more, far beyond the prior's bulk). Without codes: the prior's 5-95% range, spaced by the
    inverse normal CDF (equal prior mass per cell)."""
    if codes is None or len(codes) < 2:
        values = ppf_grid(grid)
        return values, values.copy(), "inverse-normal-CDF grid over the prior's 5-95% range"
    ab = plane.project(np.asarray(codes, dtype=np.float64))
    lo, hi = np.quantile(ab, CODE_QUANTILES, axis=0)
    flat = hi - lo < 1e-6  # an axis the encoder does not use: a unit range around its value
    lo, hi = np.where(flat, lo - 0.5, lo), np.where(flat, hi + 0.5, hi)
    q0, q1 = (round(q * 100) for q in CODE_QUANTILES)
    phrase = f"range: {q0}st-{q1}th percentile of {len(ab)} posterior means"
    return np.linspace(lo[0], hi[0], grid), np.linspace(lo[1], hi[1], grid), phrase


def manifold_latents(plane: Plane, grid: int = 20, codes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Latent points of a grid x grid manifold, row-major with the top row at the largest b (so the picture
    has the orientation of a scatter plot). Returns (z (grid*grid, D), coordinates along a (grid,)); the
    range is the prior's, or that of `codes` (see `manifold_axes`)."""
    a_values, b_values, _ = manifold_axes(plane, grid, codes)
    b, a = np.meshgrid(b_values[::-1], a_values, indexing="ij")  # (grid, grid): rows b descending, cols a
    return plane.points(a.ravel(), b.ravel()), a_values


def _tick_labels(values: np.ndarray) -> list[str]:
    """Tick labels with as many decimals as the spacing needs, so that neighbours never read the same."""
    step = float(np.min(np.abs(np.diff(values)))) if len(values) > 1 else 1.0
    digits = 1 if step >= 0.1 else 2 if step >= 0.01 else 3
    return [f"{v:.{digits}f}" for v in values]


def manifold_figure(
    model,
    grid: int = 20,
    plane: Plane | None = None,
    classes: list[tuple[int, str]] | None = None,
    scale: float = 1.5,
    codes: np.ndarray | None = None,
) -> Figure:
    """Decoded images on a grid x grid of latent points: over the range of `codes` (posterior means, N x D:
    their 1st-99th percentiles on the plane) when given, else over the prior's 5-95% range spaced by the
    inverse normal CDF. The title says which.

    `plane` defaults to latent dims 0 and 1 (a 2-D model's whole latent space). A conditional model decodes
    the same grid once per (index, name) in `classes`: one axes per class. Otherwise one axes, one image
    made of exactly grid * grid decoded images.
    """
    if grid < 2:
        raise VaelabError(f"the manifold grid is {grid} x {grid}", "use a grid of at least 2")
    if plane is None:
        plane = prior_plane(model)
    a_values, b_values, spacing = manifold_axes(plane, grid, codes)
    z, _ = manifold_latents(plane, grid, codes)
    panels = classes if model.conditional else [(None, None)]
    if model.conditional and not classes:
        panels = [(k, str(k)) for k in range(model.num_classes)]
    mosaics = []
    for k, _ in panels:
        y = None if k is None else np.full(len(z), k)
        mosaics.append(compose(decode(model, z, y), grid, pad=0))
    h, w = model.image_shape[1:]
    width, height = mosaic_size(mosaics[0], cell_scale(w, scale, min_cell=14), extra=(0.9, 0.9))
    cols = min(len(mosaics), 4)
    rows = -(-len(mosaics) // cols)
    title = wrap_title(f"Decoded latent manifold ({grid} x {grid}; {spacing})", max(width * cols, 3.0))
    fig = new_figure(max(width * cols, 3.0), height * rows + 0.2 * title.count("\n"))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    step = 1 if grid <= 12 else 2
    for ax, mosaic, (_, name) in zip(axes, mosaics, panels, strict=False):
        show_image(ax, mosaic)
        ticks = cell_centers(grid, w, pad=0)[::step]
        ax.set_xticks(ticks, _tick_labels(a_values[::step]), fontsize=6)
        ax.set_yticks(cell_centers(grid, h, pad=0)[::step], _tick_labels(b_values[::-1][::step]), fontsize=6)
        ax.set_xlabel(plane.xlabel, fontsize=8)
        ax.set_ylabel(plane.ylabel, fontsize=8)
        if name is not None:
            ax.set_title(f"class {safe_text(name)}", fontsize=9)
    for ax in axes[len(mosaics) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    return fig


# ---------------------------------------------------------------------------------------------------------
# scatter and ellipses


def pca_project(z: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(N, D) -> the first two principal components (N, 2) and their axis labels."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2).fit(z)
    share = pca.explained_variance_ratio_ * 100
    return pca.transform(z), [f"PC 1 ({share[0]:.0f}%)", f"PC 2 ({share[1]:.0f}%)"]


def tsne_project(z: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, D) -> a 2-D t-SNE embedding (N, 2), PCA-initialised, perplexity fitted to small N."""
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(z) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(z)


def _scatter_classes(ax, xy: np.ndarray, labels, class_names, alpha: float = 0.7):
    """Points coloured by class; returns legend handles (one per class present)."""
    n = len(xy)
    size = float(np.clip(3000 / max(n, 1), 2, 30))
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=size, alpha=alpha, color="tab:blue", linewidths=0)
        return []
    labels = np.asarray(labels)
    k = max(len(class_names or []), int(labels.max()) + 1 if n else 0)
    names = list(class_names or []) + [str(i) for i in range(len(class_names or []), k)]
    colors = class_colors(k)
    handles = []
    for c in range(k):
        m = labels == c
        if not m.any():
            continue
        handles.append(
            ax.scatter(xy[m, 0], xy[m, 1], s=size, alpha=alpha, color=colors[c], linewidths=0, label=safe_text(names[c]))
        )
    return handles


def _legend(fig, handles, title: str = "class"):
    if not handles:
        return
    ncol = 1 if len(handles) <= 16 else 2 if len(handles) <= 40 else 3
    fig.legend(
        handles=handles, loc="outside right upper", title=title, fontsize=7, title_fontsize=8, markerscale=2.5, ncol=ncol
    )


def scatter_figure(
    z: np.ndarray,
    labels: np.ndarray | None = None,
    class_names: list[str] | None = None,
    dims: tuple[int, int] | None = None,
    tsne: bool = True,
    seed: int = 0,
    title: str = "Latent means",
) -> Figure:
    """Latent points coloured by class with a legend of class names.

    2-D latents (or two chosen `dims`): one axes with the latents directly. Larger latents: a PCA axes and,
    with `tsne`, a t-SNE axes. 1-D latents: the value against the class.
    """
    z = np.asarray(z, dtype=np.float64)
    d = z.shape[1]
    views: list[tuple[str, np.ndarray, list[str]]] = []
    if dims is not None:
        i, j = check_dims(dims, d, 2)[:2]
        views.append(("latent dimensions", z[:, [i, j]], [f"$z_{{{i}}}$", f"$z_{{{j}}}$"]))
    elif d == 1:
        y = np.asarray(labels, dtype=np.float64) if labels is not None else np.zeros(len(z))
        jitter = np.random.default_rng(seed).uniform(-0.3, 0.3, len(z))
        views.append(("latent value", np.stack([z[:, 0], y + jitter], 1), ["$z_{0}$", "class"]))
    elif d == 2:
        views.append(("latent space", z, ["$z_{0}$", "$z_{1}$"]))
    else:
        xy, axis_labels = pca_project(z)
        views.append(("PCA", xy, axis_labels))
        if tsne and len(z) > 3:
            views.append(("t-SNE", tsne_project(z, seed), ["t-SNE 1", "t-SNE 2"]))
    fig = new_figure(4.2 * len(views) + 1.2, 4.2)
    axes = fig.subplots(1, len(views), squeeze=False)[0]
    handles = []
    for ax, (name, xy, (xl, yl)) in zip(axes, views, strict=False):
        handles = _scatter_classes(ax, xy, labels, class_names)
        ax.set_xlabel(xl, fontsize=8)
        ax.set_ylabel(yl, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25)
        if len(views) > 1 or dims is not None:
            ax.set_title(name, fontsize=9)
        if name in ("latent space", "latent dimensions"):
            ax.set_aspect("equal", adjustable="datalim")
        if d == 1 and labels is not None and dims is None:
            ax.set_yticks(range(len(class_names or [])), [safe_text(c) for c in class_names or []], fontsize=7)
    _legend(fig, handles)
    fig.suptitle(f"{title} ({len(z)} images, {d}-D)", fontsize=10)
    return fig


def _ellipse(mean, cov, n_std: float, **kwargs):
    from matplotlib.patches import Ellipse

    vals, vecs = np.linalg.eigh(np.asarray(cov, dtype=np.float64))
    vals = np.maximum(vals, 0)
    angle = np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1]))  # direction of the largest eigenvalue
    return Ellipse(mean, 2 * n_std * np.sqrt(vals[1]), 2 * n_std * np.sqrt(vals[0]), angle=angle, **kwargs)


def ellipses_figure(
    means: np.ndarray,
    covariances: np.ndarray,
    component_classes,
    z: np.ndarray,
    labels: np.ndarray | None = None,
    class_names: list[str] | None = None,
    axis_labels: tuple[str, str] = ("$z_{0}$", "$z_{1}$"),
    title: str = "Gaussian mixture over the latent means",
) -> Figure:
    """GMM components as 1- and 2-sigma ellipses over the latent scatter, coloured by the class each
    component maps to.

    means (K, 2), covariances (K, 2, 2), component_classes (K,) class indices, z (N, 2) points with
    `labels` (N,). One axes.
    """
    means = np.asarray(means, dtype=np.float64)
    covariances = np.asarray(covariances, dtype=np.float64)
    if means.ndim != 2 or means.shape[1] != 2 or covariances.shape != (len(means), 2, 2):
        raise VaelabError(
            f"ellipses need means (K, 2) and covariances (K, 2, 2), got {means.shape} and {covariances.shape}",
            "project the mixture onto a plane first",
        )
    component_classes = np.asarray(component_classes).astype(int)
    k = max(len(class_names or []), int(component_classes.max()) + 1 if len(component_classes) else 0)
    if labels is not None and len(labels):
        k = max(k, int(np.max(labels)) + 1)
    colors = class_colors(k)
    fig = new_figure(6.4, 5.2)
    ax = fig.subplots()
    handles = _scatter_classes(ax, np.asarray(z, dtype=np.float64), labels, class_names, alpha=0.35)
    from matplotlib.lines import Line2D

    for mean, cov, c in zip(means, covariances, component_classes, strict=False):
        for n_std, style in ((1, "-"), (2, "--")):
            ax.add_patch(_ellipse(mean, cov, n_std, fill=False, edgecolor=colors[c], linestyle=style, linewidth=1.8))
        ax.plot(*mean, marker="X", markersize=9, color=colors[c], markeredgecolor="black", linestyle="none")
    ax.set_xlabel(axis_labels[0], fontsize=8)
    ax.set_ylabel(axis_labels[1], fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.25)
    ax.set_aspect("equal", adjustable="datalim")
    ax.autoscale_view()
    handles = handles + [
        Line2D([], [], color="gray", linestyle="-", label="1 sigma"),
        Line2D([], [], color="gray", linestyle="--", label="2 sigma"),
        Line2D([], [], color="gray", marker="X", markeredgecolor="black", linestyle="none", label="component mean"),
    ]
    _legend(fig, handles)
    ax.set_title(f"{title} ({len(means)} components)", fontsize=10)
    return fig


# ---------------------------------------------------------------------------------------------------------
# traversals


def traversal_latents(base: np.ndarray, dims: list[int], values: np.ndarray) -> np.ndarray:
    """Row r, column c: `base` with dimension dims[r] moved by values[c]. Returns (len(dims)*len(values), D)."""
    base = np.asarray(base, dtype=np.float32)
    z = np.repeat(base[None], len(dims) * len(values), 0)
    for r, d in enumerate(dims):
        z[r * len(values) : (r + 1) * len(values), d] += np.asarray(values, dtype=np.float32)
    return z


def traversal_grid_figure(images, row_labels: list[str], values: np.ndarray, title: str, scale: float = 2.0) -> Figure:
    """An (R*S, C, H, W) traversal (R rows of S values) as one labelled mosaic: one axes, one image."""
    x = as_images(images)
    s = len(values)
    mosaic = compose(x, s)
    width, height = mosaic_size(mosaic, cell_scale(x.shape[-1], scale, [f"{v:+.1f}" for v in values], min_cell=24), extra=(1.3, 0.9))
    title = wrap_title(title, width, 9)
    fig = new_figure(width, height)
    ax = fig.subplots()
    _draw_traversal(ax, mosaic, x.shape[2:], row_labels, values)
    ax.set_title(title, fontsize=9)
    return fig


def _draw_traversal(ax, mosaic, hw, row_labels, values):
    h, w = hw
    show_image(ax, mosaic)
    ax.set_xticks(cell_centers(len(values), w), [f"{v:+.1f}" for v in values], fontsize=7)
    ax.set_yticks(cell_centers(len(row_labels), h), row_labels, fontsize=7)
    ax.tick_params(length=0)
    ax.set_xlabel("change of the dimension", fontsize=8)


def traversal_figure(
    model,
    base: np.ndarray | None = None,
    dims: list[int] | None = None,
    values: np.ndarray | None = None,
    y: int | None = None,
    notes: dict[int, str] | None = None,
    around: str = "the origin",
) -> Figure:
    """One row per latent dimension, the dimension moved from -3 to +3 around `base` (default the origin),
    the others held. `notes[d]` is appended to row d's label (e.g. its KL). One axes, one image."""
    images, dims, values = traversal_images(model, base, dims, values, y)
    labels = [f"$z_{{{k}}}$" + (f" {notes[k]}" if notes and k in notes else "") for k in dims]
    return traversal_grid_figure(images, labels, values, f"Latent traversals around {around}")


def traversal_images(model, base=None, dims=None, values=None, y: int | None = None):
    """Decoded traversal grid: (len(dims) * len(values), C, H, W) images, with the dims and values used
    (defaults: every dim, 9 values from -3 to 3, around the origin). For `compare_traversals_figure`."""
    d = model.latent_dim
    dims = check_dims(range(d) if dims is None else dims, d)
    values = np.linspace(-3, 3, 9) if values is None else np.asarray(values, dtype=np.float32)
    base = np.zeros(d, np.float32) if base is None else np.asarray(base, dtype=np.float32).reshape(d)
    z = traversal_latents(base, dims, values)
    return decode(model, z, None if y is None else np.full(len(z), y)), dims, values


def compare_traversals_figure(panels: dict[str, tuple[object, list[str]]], values: np.ndarray, scale: float = 1.5) -> Figure:
    """Traversal grids of several models side by side (e.g. one per beta): {title: (images (R*S, C, H, W),
    row labels)}, the images from `traversal_images` with the same `values`. One axes per panel."""
    mosaics = {t: (compose(as_images(im), len(values)), as_images(im).shape[2:], rl) for t, (im, rl) in panels.items()}
    widths = [mosaic_size(m, scale, extra=(1.0, 0.9)) for m, _, _ in mosaics.values()]
    fig = new_figure(sum(w for w, _ in widths), max(h for _, h in widths))
    axes = fig.subplots(1, len(mosaics), squeeze=False)[0]
    for ax, (title, (mosaic, hw, rl)) in zip(axes, mosaics.items(), strict=False):
        _draw_traversal(ax, mosaic, hw, rl, values)
        ax.set_title(safe_text(title), fontsize=9)
    return fig


# ---------------------------------------------------------------------------------------------------------
# interpolation


def interpolate_latents(za: np.ndarray, zb: np.ndarray, steps: int = 10, method: str = "linear") -> np.ndarray:
    """`steps` points from za to zb (D,): straight line, or 'spherical' (slerp, White 2016), which keeps the
    norm typical of Gaussian samples. Returns (steps, D)."""
    za, zb = np.asarray(za, dtype=np.float64), np.asarray(zb, dtype=np.float64)
    t = np.linspace(0, 1, steps)[:, None]
    if method == "linear":
        return (1 - t) * za[None] + t * zb[None]
    if method != "spherical":
        raise VaelabError(f"unknown interpolation '{method}'", "use linear or spherical")
    na, nb = np.linalg.norm(za), np.linalg.norm(zb)
    cos = float(np.dot(za, zb) / max(na * nb, 1e-12))
    omega = np.arccos(np.clip(cos, -1, 1))
    if na < 1e-8 or nb < 1e-8 or np.sin(omega) < 1e-6:  # (anti)parallel or at the origin: slerp is undefined
        return (1 - t) * za[None] + t * zb[None]
    return (np.sin((1 - t) * omega) * za[None] + np.sin(t * omega) * zb[None]) / np.sin(omega)


def interpolation_figure(
    model,
    za: np.ndarray,
    zb: np.ndarray,
    steps: int = 10,
    spherical: bool = True,
    y: int | None = None,
    endpoints: tuple | None = None,
    names: tuple[str, str] = ("a", "b"),
    scale: float = 2.0,
) -> Figure:
    """Decoded points between two latents, one row per method (linear, and spherical when asked); the two
    original images, when given as `endpoints` ((C, H, W) each), frame each row. One axes, one image."""
    methods = ["linear"] + (["spherical"] if spherical else [])
    rows = []
    for m in methods:
        z = interpolate_latents(za, zb, steps, m)
        imgs = as_images(decode(model, z, None if y is None else np.full(len(z), y)))
        if endpoints is not None:
            a, b = (as_images(np.asarray(e)[None]) for e in endpoints)
            imgs = np.concatenate([a, imgs, b])
        rows.append(imgs)
    x = np.concatenate(rows)
    cols = len(rows[0])
    mosaic = compose(x, cols)
    ts = [f"{t:.2f}" for t in np.linspace(0, 1, steps)]
    if endpoints is not None:
        ts = [safe_text(names[0])] + ts + [safe_text(names[1])]
    width, height = mosaic_size(mosaic, cell_scale(x.shape[-1], scale, ts, fontsize=7), extra=(1.2, 0.9))
    fig = new_figure(width, height)
    ax = fig.subplots()
    show_image(ax, mosaic)
    h, w = x.shape[2:]
    if endpoints is not None:
        from matplotlib.patches import Rectangle

        for r in range(len(methods)):  # frame the two originals so they read apart from decoded images
            for c in (0, cols - 1):
                x0, y0 = c * (w + 2) - 1.5, r * (h + 2) - 1.5
                ax.add_patch(Rectangle((x0, y0), w + 2, h + 2, fill=False, edgecolor="tab:red", linewidth=1.2))
    ax.set_xticks(cell_centers(cols, w), ts, fontsize=7)
    ax.set_yticks(cell_centers(len(methods), h), methods, fontsize=8)
    ax.tick_params(length=0)
    ax.set_xlabel("interpolation weight t (originals, framed, at the ends)" if endpoints is not None else "t", fontsize=8)
    ax.set_title(f"Interpolation from {safe_text(names[0])} to {safe_text(names[1])}", fontsize=9)
    return fig
