"""Figures as a reader sees them (issue 27, items 13, 14, 16): no text cut off or run together at any image
size, a manifold that covers where the codes are, and no unreadable ellipse tangle above 2-D."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_config


def text_problems(fig) -> list[tuple]:
    """Texts drawn outside the figure, and pairs of texts whose boxes overlap (more than a pixel)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    width, height = canvas.get_width_height()
    boxes = []
    for t in fig.findobj(lambda a: hasattr(a, "get_text") and hasattr(a, "get_window_extent")):
        if t.get_visible() and t.get_text().strip():
            boxes.append((t.get_text(), t.get_window_extent(renderer)))
    bad = [("outside", s) for s, b in boxes if b.x0 < -1 or b.y0 < -1 or b.x1 > width + 1 or b.y1 > height + 1]
    for i, (s, a) in enumerate(boxes):
        for t, b in boxes[i + 1 :]:
            if min(a.x1, b.x1) - max(a.x0, b.x0) > 1 and min(a.y1, b.y1) - max(a.y0, b.y0) > 1:
                bad.append(("overlap", s, t))
    return bad


def tiny_model(px: int, latent_dim: int = 2):
    from vaelab.config import ModelConfig
    from vaelab.models import build

    channels = 1 if px < 64 else 3
    return build(ModelConfig(arch="mlp", hidden=[8], latent_dim=latent_dim, image_size=px, channels=channels, num_classes=3)).eval()


@pytest.mark.parametrize("px", [8, 28, 64, 256])
def test_image_figures_keep_titles_and_captions_apart_at_every_size(px):
    from vaelab.visualize.images import recon_figure, samples_figure
    from vaelab.visualize.latent import interpolation_figure, manifold_figure, traversal_figure

    model = tiny_model(px)
    c = model.image_shape[0]
    x = torch.rand(16, c, px, px, generator=torch.Generator().manual_seed(0))
    figs = {
        "recon": recon_figure(x, x * 0.9, ssim=np.linspace(0.1, 0.99, 16), labels=[f"class {i % 3}" for i in range(16)]),
        "samples": samples_figure({"prior N(0, I)": x, "GMM sampler (3 components)": x}),
        "manifold": manifold_figure(model, 20 if px == 8 else 4),
        "traversal": traversal_figure(model, notes={0: "(KL 1.23)", 1: "(KL 0.01)"}),
        "interpolate": interpolation_figure(model, np.zeros(2), np.ones(2), endpoints=(x[0], x[1]), names=("class 0 (#0)", "class 1 (#5)")),
    }
    for name, fig in figs.items():
        assert text_problems(fig) == [], (name, px)
        w, h = fig.get_size_inches() * fig.dpi
        assert w <= 1700 and h <= 1700, (name, px, w, h)  # large images are shrunk, not drawn huge
    # 8-px cells are enlarged so that each SSIM caption has room; the title is whole
    recon = figs["recon"]
    assert "mean SSIM of these 16" in recon._suptitle.get_text().replace("\n", " ")


def test_manifold_covers_the_range_of_the_codes():
    from vaelab.visualize.latent import dims_plane, manifold_axes, manifold_figure, manifold_latents

    model = tiny_model(8)
    rng = np.random.default_rng(0)
    codes = rng.normal(0, 2.5, (2000, 2)) + [1.0, 0.0]  # a beta < 1 model: codes spread far past +-1.6
    a, b, phrase = manifold_axes(dims_plane(2), 10, codes)
    assert a[0] == pytest.approx(np.quantile(codes[:, 0], 0.01)) and a[-1] == pytest.approx(np.quantile(codes[:, 0], 0.99))
    assert b[-1] == pytest.approx(np.quantile(codes[:, 1], 0.99)) and b[-1] > 4
    assert "percentile of 2000 posterior means" in phrase
    z, _ = manifold_latents(dims_plane(2), 10, codes)
    assert z[:, 0].min() == pytest.approx(a[0]) and z[:, 1].max() == pytest.approx(b[-1])
    fig = manifold_figure(model, 10, codes=codes)
    assert "posterior means" in fig._suptitle.get_text().replace("\n", " ")
    assert float(fig.axes[0].get_xticklabels()[-1].get_text()) > 4
    prior = manifold_figure(model, 10)  # no codes: the prior's range, and the title says so
    assert "prior" in prior._suptitle.get_text() and float(prior.axes[0].get_xticklabels()[-1].get_text()) < 2


def test_run_manifold_uses_the_codes_and_its_caption_says_so(tiny_run):
    from vaelab import load_run
    from vaelab.visualize import RunFigures

    figs = RunFigures(load_run(tiny_run), grid=6)
    (_, _, fig), = figs.figures("manifold")
    z = figs.latents.z
    top = float(fig.axes[0].get_xticklabels()[-1].get_text())
    assert top == pytest.approx(np.quantile(z[:, 0], 0.99), abs=0.06)
    assert "percentiles of the posterior means" in figs.captions["manifold"]


def test_ellipses_are_left_out_above_2d_with_a_note_unless_dims_are_chosen(tmp_path):
    from vaelab import load_run
    from vaelab.latent import classifiers, encode
    from vaelab.latent.fewlabels import classifier_path
    from vaelab.train import fit
    from vaelab.visualize import RunFigures

    run_dir = Path(fit(tiny_config(tmp_path, "model.latent_dim=4", "train.epochs=1"), quiet=True)["run_dir"])
    run = load_run(run_dir)
    lat = encode(run, split="train")
    classifiers.save(classifiers.make("gmm").fit(lat.z, lat.labels), classifier_path(run_dir, "gmm"), run=run, class_names=lat.class_names)
    skip = RunFigures(load_run(run_dir)).skip_reason("ellipses")
    assert skip is not None and "4-D" in skip.reason and "--dims 0,1" in skip.hint
    figs = RunFigures(load_run(run_dir), dims=[2, 0])
    assert figs.skip_reason("ellipses") is None
    (_, _, fig), = figs.figures("ellipses")
    assert fig.axes[0].get_xlabel() == "$z_{2}$"


def test_study_traversals_of_one_trial_keep_their_title():
    from vaelab.sweep.figures import traversal_figure

    fig = traversal_figure([("beta-1 (z=2)", np.zeros((2 * 30, 9 * 30, 1), np.uint8))], title="s: latent traversals")
    assert text_problems(fig) == []
