"""Figures: each function on tiny inputs gives the expected axes and images; only the CLI writes files."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Ellipse

from conftest import cli
from vaelab.errors import VaelabError
from vaelab.visualize import (
    budget_figure,
    compare_traversals_figure,
    conditional_samples_figure,
    confusion_figure,
    curves_figure,
    eda_figures,
    ellipses_figure,
    encode_gif,
    examples_figure,
    figure_bytes,
    interpolate_latents,
    interpolation_figure,
    manifold_figure,
    manifold_latents,
    mean_images_figure,
    recon_figure,
    samples_figure,
    scatter_figure,
    scatter_frames,
    ssim_per_image,
    traversal_figure,
    traversal_images,
    traversal_sweep_frames,
)
from vaelab.visualize.latent import dims_plane, ppf_grid

H = 16  # tiny images keep matplotlib fast


def images(n: int, seed: int = 0, c: int = 1) -> torch.Tensor:
    return torch.rand(n, c, H, H, generator=torch.Generator().manual_seed(seed))


def n_images(fig: Figure) -> int:
    return sum(isinstance(a, AxesImage) for ax in fig.axes for a in ax.get_images())


def build_model(latent_dim: int = 2, num_classes: int = 0):
    from vaelab.config import ModelConfig
    from vaelab.models import build

    cfg = ModelConfig(
        arch="mlp", latent_dim=latent_dim, hidden=[8], image_size=H, channels=1,
        conditional=num_classes > 0, num_classes=num_classes or None,
    )
    torch.manual_seed(0)
    return build(cfg).eval()


class CountingModel:
    """Wraps a VAE and counts the images its `generate` decodes."""

    def __init__(self, model):
        self.model, self.decoded = model, 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def parameters(self):
        return self.model.parameters()

    def generate(self, z, y=None):
        self.decoded += len(z)
        return self.model.generate(z, y)


# -- images ------------------------------------------------------------------------------------------------


def test_ssim_is_one_for_identical_images_and_lower_for_noisy():
    x = images(4)
    assert np.allclose(ssim_per_image(x, x), 1.0, atol=1e-4)
    noisy = (x + 0.3 * torch.randn_like(x)).clamp(0, 1)
    s = ssim_per_image(x, noisy)
    assert s.shape == (4,) and (s < 0.9).all()


def test_recon_figure_one_axes_per_block_with_ssim_under_each():
    x = images(6)
    fig = recon_figure(x, x.flip(0), labels=list("abcdef"), ncols=8)
    assert len(fig.axes) == 1 + 0 and n_images(fig) == 1
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert len(ticks) == 6 and all(-1 <= float(t) <= 1 for t in ticks) and "SSIM" in fig.axes[0].get_xlabel()
    assert fig.axes[0].get_images()[0].get_array().shape == (2 * H + 2, 6 * H + 5 * 2)
    fig = recon_figure(images(10), images(10, 1), ncols=4)
    assert n_images(fig) == 3  # blocks of 4, 4, 2


def test_samples_figures():
    fig = samples_figure({"prior": images(16), "GMM": images(16, 1)}, nrow=4)
    assert len(fig.axes) == 2 and n_images(fig) == 2
    assert [ax.get_title() for ax in fig.axes] == ["prior", "GMM"]
    fig = conditional_samples_figure(images(12).reshape(3, 4, 1, H, H), ["one", "four", "eight"])
    assert n_images(fig) == 1
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["one", "four", "eight"]


# -- latent ------------------------------------------------------------------------------------------------


def test_manifold_of_a_2d_model_decodes_exactly_grid_squared_images():
    model = CountingModel(build_model(2))
    fig = manifold_figure(model, grid=7)
    assert model.decoded == 49
    assert n_images(fig) == 1
    assert fig.axes[0].get_images()[0].get_array().shape == (7 * H, 7 * H)
    z, values = manifold_latents(dims_plane(2), 7)
    assert np.allclose(values, ppf_grid(7)) and z.shape == (49, 2)
    assert z[0, 1] == values.max() and z[-1, 1] == values.min()  # top row is the largest z_1


def test_manifold_of_a_conditional_model_has_one_panel_per_class():
    model = CountingModel(build_model(2, num_classes=3))
    fig = manifold_figure(model, grid=4, classes=[(0, "a"), (1, "b"), (2, "c")])
    assert model.decoded == 3 * 16 and n_images(fig) == 3
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["class a", "class b", "class c"]


def test_manifold_over_two_chosen_dims_of_a_larger_latent():
    model = CountingModel(build_model(5))
    manifold_figure(model, grid=3, plane=dims_plane(5, 1, 3))
    assert model.decoded == 9
    with pytest.raises(VaelabError, match="does not exist"):
        dims_plane(5, 0, 7)


def test_scatter_direct_for_2d_and_pca_tsne_for_larger():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 15)
    fig = scatter_figure(rng.normal(size=(45, 2)), labels, ["one", "four", "<b>eight</b>"])
    assert len(fig.axes) == 1
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["one", "four", "<b>eight</b>"]
    fig = scatter_figure(rng.normal(size=(45, 5)), labels, ["one", "four", "eight"])
    assert [ax.get_title() for ax in fig.axes] == ["PCA", "t-SNE"]
    assert len(scatter_figure(rng.normal(size=(45, 5)), labels, tsne=False).axes) == 1
    assert len(scatter_figure(rng.normal(size=(45, 5)), None, dims=(1, 4)).axes) == 1


def test_ellipses_at_one_and_two_sigma_per_component():
    means = np.array([[0.0, 0.0], [3.0, 0.0]])
    covs = np.array([np.diag([4.0, 1.0]), np.eye(2)])
    z = np.random.default_rng(0).normal(size=(30, 2))
    fig = ellipses_figure(means, covs, [1, 0], z, np.repeat([0, 1], 15), ["a", "b"])
    assert len(fig.axes) == 1
    ells = [p for p in fig.axes[0].patches if isinstance(p, Ellipse)]
    assert len(ells) == 4
    widths = sorted(max(e.width, e.height) for e in ells)
    assert np.allclose(widths, [2, 4, 4, 8])  # 2 * n_sigma * sqrt(largest eigenvalue)
    with pytest.raises(VaelabError, match="covariances"):
        ellipses_figure(means, covs[:, :1], [0, 1], z)


def test_traversal_one_row_per_dim():
    model = CountingModel(build_model(4))
    fig = traversal_figure(model, base=np.ones(4), dims=[0, 2, 3], values=np.linspace(-3, 3, 7), notes={0: "(KL 1.0)"})
    assert model.decoded == 21 and n_images(fig) == 1
    assert fig.axes[0].get_images()[0].get_array().shape == (3 * H + 2 * 2, 7 * H + 6 * 2)
    rows = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert rows[0].endswith("(KL 1.0)") and len(rows) == 3
    values = np.linspace(-3, 3, 3)
    grids = {f"beta {b}": traversal_images(build_model(2), values=values)[0] for b in (1, 4)}
    assert grids["beta 1"].shape == (6, 1, H, H)
    fig = compare_traversals_figure({t: (g, ["z0", "z1"]) for t, g in grids.items()}, values)
    assert n_images(fig) == 2 and [ax.get_title() for ax in fig.axes] == ["beta 1", "beta 4"]


def test_interpolation_linear_and_spherical():
    a, b = np.array([3.0, 0.0]), np.array([0.0, 3.0])
    lin = interpolate_latents(a, b, 5)
    assert np.allclose(lin[0], a) and np.allclose(lin[-1], b) and np.allclose(lin[2], [1.5, 1.5])
    sph = interpolate_latents(a, b, 5, "spherical")
    assert np.allclose(np.linalg.norm(sph, axis=1), 3.0)
    with pytest.raises(VaelabError, match="unknown interpolation"):
        interpolate_latents(a, b, 3, "cubic")
    model = CountingModel(build_model(2))
    fig = interpolation_figure(model, a, b, steps=6, endpoints=(images(1)[0], images(1, 1)[0]), names=("x", "y"))
    assert model.decoded == 12 and n_images(fig) == 1
    assert fig.axes[0].get_images()[0].get_array().shape == (2 * H + 2, 8 * H + 7 * 2)


# -- curves, EDA, classification ----------------------------------------------------------------------------


def rows(n: int = 5, beta_gap: float = 0.0) -> list[dict]:
    out = []
    for e in range(1, n + 1):
        r = {"epoch": e, "lr": 1e-3 / e, "kl_weight": min(1.0, e / 3)}
        for s in ("train", "val"):
            r.update({f"{s}/loss": 100 / e, f"{s}/recon": 90 / e, f"{s}/kl": 10 / e, f"{s}/elbo": 100 / e + beta_gap})
        out.append(r)
    return out


def test_curves_four_panels_and_elbo_when_beta_differs():
    fig = curves_figure(rows())
    assert len(fig.axes) == 5  # loss, recon, KL, lr + the KL-weight twin axis (it changes)
    assert len(fig.axes[0].get_lines()) == 3  # train, val, best-epoch marker
    fig = curves_figure(rows(beta_gap=5.0))
    assert len(fig.axes[0].get_lines()) == 5  # + train and val -ELBO
    with_ssim = rows()
    for i, r in enumerate(with_ssim):
        r["val/ssim"] = 0.5 + 0.05 * i
    fig = curves_figure(with_ssim)  # + a twin axis on the reconstruction panel
    twin = [a for a in fig.axes if a.get_ylabel() == "val SSIM"]
    assert len(fig.axes) == 6 and len(twin) == 1 and list(twin[0].get_lines()[0].get_ydata()) == [0.5, 0.55, 0.6, 0.65, 0.7]
    with pytest.raises(VaelabError, match="no training epochs"):
        curves_figure([])


def test_eda_figures_on_a_tiny_imageset():
    from vaelab.data import ImageSet

    x = (images(30) * 255).to(torch.uint8)
    labels = torch.arange(30) % 3
    ds = ImageSet(x, labels, ["a", "b", "$c"], torch.tensor([0] * 24 + [1] * 6, dtype=torch.int8), "tiny")
    figs = eda_figures(ds)
    assert set(figs) == {"eda_classes", "eda_pixels", "eda_means", "eda_examples"}
    assert len(figs["eda_means"].axes) == 3 and n_images(figs["eda_means"]) == 3
    assert n_images(figs["eda_examples"]) == 1
    assert len(figs["eda_classes"].axes[0].patches) == 6  # 3 classes x 2 splits
    for f in figs.values():  # '$c' must not start mathtext
        assert figure_bytes(f, dpi=30).startswith(b"\x89PNG")
    unlabelled = eda_figures(ImageSet(x, source="tiny"))
    assert set(unlabelled) == {"eda_pixels", "eda_means", "eda_examples"}
    assert len(mean_images_figure(x, None, []).axes) == 1
    assert n_images(examples_figure(x, None, [], per_class=4)) == 1


def test_confusion_matrix_and_budget():
    fig = confusion_figure([[5, 1], [2, 7]], ["one", "two"])
    assert len(fig.axes) == 2  # matrix and colour bar
    assert len(fig.axes[0].texts) == 4
    assert "accuracy 80.0%" in fig.axes[0].get_title()
    with pytest.raises(VaelabError, match="square"):
        confusion_figure([[1, 2, 3], [4, 5, 6]], ["a", "b"])
    table = [{"method": m, "labels_per_class": n, "accuracy": a} for m in ("gmm", "knn") for n, a in ((1, 0.5), (10, 0.8), ("all", 0.9))]
    fig = budget_figure(table)
    assert len(fig.axes) == 1 and len(fig.axes[0].get_legend().get_texts()) == 2
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1", "10", "all"]


# -- animations ----------------------------------------------------------------------------------------------


def test_scatter_animation_and_gif():
    from PIL import Image

    rng = np.random.default_rng(0)
    snaps = [(e, rng.normal(size=(20, 2)) * e, np.arange(20) % 2) for e in (1, 2, 3)]
    frames = scatter_frames(snaps, ["a", "b"], size=(3, 2.5), dpi=40)
    assert len(frames) == 3 and len({f.shape for f in frames}) == 1 and frames[0].shape[-1] == 3
    assert not np.array_equal(frames[0], frames[2])
    gif = Image.open(io.BytesIO(encode_gif(frames)))
    assert gif.format == "GIF" and gif.n_frames == 3
    many = [(e, rng.normal(size=(10, 4)), None) for e in range(1, 8)]
    assert len(scatter_frames(many, None, max_frames=4, size=(3, 2.5), dpi=40)) == 4


def test_traversal_sweep_frames_and_mp4():
    model = build_model(3)
    frames = traversal_sweep_frames(model, values=np.linspace(-3, 3, 4), dpi=40)
    assert len(frames) == 4 and len({f.shape for f in frames}) == 1
    from vaelab.visualize.animate import encode_mp4, video_available

    if video_available():
        assert encode_mp4(frames, fps=4)[4:8] == b"ftyp"


# -- a whole run: RunFigures / render_run / vaelab plot -------------------------------------------------------




def run_copy(src: Path, dst: Path) -> Path:
    return Path(shutil.copytree(src, dst / src.name))


def listing(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_render_run_writes_nothing_and_knows_what_applies(tiny_run, tmp_path, monkeypatch):
    from vaelab import load_run
    from vaelab.visualize import render_run

    monkeypatch.chdir(tmp_path)
    before = listing(tiny_run)
    out, skipped = render_run(load_run(tiny_run), dpi=30, video=False)
    names = {r.filename for r in out}
    assert {
        "curves.png", "eda_classes.png", "eda_pixels.png", "eda_means.png", "eda_examples.png", "recon.png", "samples.png",
        "manifold.png", "scatter.png", "traversal.png", "interpolate.png", "latent_evolution.gif", "traversal_sweep.gif",
    } <= names
    assert all(r.data[:4] in (b"\x89PNG", b"GIF8") for r in out)
    assert set(skipped) == {"ellipses", "confusion", "budget", "quality"}
    assert "vaelab classify" in skipped["ellipses"].hint
    assert list(tmp_path.iterdir()) == []  # figure functions write no files
    assert listing(tiny_run) == before
    with pytest.raises(VaelabError, match="did you mean 'scatter'"):
        render_run(load_run(tiny_run), ["scater"])
    with pytest.raises(VaelabError, match="cannot plot 'ellipses'"):
        render_run(load_run(tiny_run), ["ellipses"])


def test_ellipses_from_a_saved_gmm(tiny_run, tmp_path):
    """The GMM that `vaelab classify --method gmm` saves is read back and drawn: 1 and 2 sigma per component."""
    from vaelab import load_run
    from vaelab.latent import classifiers, encode
    from vaelab.latent.fewlabels import classifier_path
    from vaelab.visualize import RunFigures

    run_dir = run_copy(tiny_run, tmp_path)
    run = load_run(run_dir)
    lat = encode(run, split="train")
    clf = classifiers.make("gmm").fit(lat.z, lat.labels)
    classifiers.save(clf, classifier_path(run_dir, "gmm"), run=run, class_names=lat.class_names)
    figs = RunFigures(load_run(run_dir))
    assert figs.skip_reason("ellipses") is None
    assert figs.gmm["covariances"].shape == (3, 2, 2)
    assert list(figs.gmm["component_classes"]) == [0, 1, 2]
    (_, _, fig), = figs.figures("ellipses")
    assert len([p for p in fig.axes[0].patches if isinstance(p, Ellipse)]) == 6


def test_plot_cli_writes_files_and_prints_paths(tiny_run, tmp_path, capsys):
    run_dir = run_copy(tiny_run, tmp_path)
    (run_dir / "classify").mkdir()
    (run_dir / "classify" / "knn.json").write_text(
        json.dumps({"method": "knn", "accuracy": 0.9, "confusion": [[9, 1, 0], [0, 10, 0], [1, 1, 8]], "class_names": ["1", "4", "8"]})
    )
    args = ["--format", "pdf", "--dpi", "30", "--dims", "1,0", "--image-index", "2,5"]
    assert cli("plot", str(run_dir), "recon", "confusion", "traversal", *args) == 0
    out = capsys.readouterr().out
    files = sorted(p.name for p in (run_dir / "figures").iterdir())
    assert files == ["confusion_knn.pdf", "recon.pdf", "traversal.pdf"]
    assert all((run_dir / "figures" / f).read_bytes().startswith(b"%PDF") for f in files)
    assert out.split() == [str(run_dir / "figures" / f) for f in ("recon.pdf", "confusion_knn.pdf", "traversal.pdf")]
    for bad, match in ((["--dims", "0,x"], "not a list of integers"), (["--dims", "0,9"], "does not exist"), (["--image-index", "0,99999"], "out of range")):
        assert cli("plot", str(run_dir), "interpolate", *bad) == 2
        assert match in capsys.readouterr().err


def test_conditional_run_samples_one_row_per_class(tiny_conditional_run):
    from vaelab import load_run
    from vaelab.visualize import RunFigures

    figs = RunFigures(load_run(tiny_conditional_run), grid=4)
    (_, _, fig), = figs.figures("samples")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["1", "4", "8"]
    (_, _, fig), = figs.figures("manifold")
    assert n_images(fig) == 3
