"""Disentanglement (issue 22): beta-TCVAE, FactorVAE and DIP-VAE objectives (step, resume, commands) and the
dSprites source on a tiny factor subset. The metrics' known answers are in test_disentanglement_metrics.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import cli
from vaelab.config import load_config
from vaelab.data import load
from vaelab.data.dsprites import FACTOR_NAMES, FACTOR_SIZES, grid_indices, render
from vaelab.errors import VaelabError
from vaelab.models import OBJECTIVES, build
from vaelab.models.disentangle import permute_dims, tc_decomposition
from vaelab.train import fit

OBJ = {
    "tc": ("model.objective=tc", "model.beta=6"),
    "factor": ("model.objective=factor", "model.gamma=35", "model.disc_hidden=[16,16]"),
    "dip": ("model.objective=dip", "model.dip_lambda=10"),
    "dip-i": ("model.objective=dip", "model.dip_type=i"),
}
QUICK = ("train.images_every=0", "train.save_latents=false")
# a tiny dSprites: 3 shapes x 6 scales (18 images), rendered from the definition
DS = ("data.source=dsprites", "data.factors=shape,scale", "data.val_fraction=0.2", "model.hidden=[32]", "model.latent_dim=3")


# -- the generator --------------------------------------------------------------------------------------


def test_dsprites_counts_and_factor_order():
    assert math.prod(FACTOR_SIZES) == 737_280 and FACTOR_NAMES == ("shape", "scale", "orientation", "posx", "posy")
    idx = grid_indices([0, 1, 3, 4])
    assert idx.shape == (3 * 6 * 32 * 32, 5) and (idx[:, 2] == 0).all()
    # last factor fastest, as DeepMind's latents_classes
    assert idx[1].tolist() == [0, 0, 0, 0, 1] and idx[32].tolist() == [0, 0, 0, 1, 0]


def test_dsprites_pixels_match_their_factors():
    # square, scale 1 (index 5), orientation 0, posx = posy = 0: centre (13, 13), half side 8 -> pixels 5..20
    img = render(np.array([[0, 5, 0, 0, 0]]))[0]
    on = np.argwhere(img == 255)
    assert img.dtype == np.uint8 and set(np.unique(img)) <= {0, 255}
    assert on[:, 0].min() == 5 and on[:, 0].max() == 20 and on[:, 1].min() == 5 and on[:, 1].max() == 20
    assert len(on) == 16 * 16
    # the same square moved to posx = 1 (index 31): centre x = 51, columns 43..58, rows unchanged
    moved = np.argwhere(render(np.array([[0, 5, 0, 31, 0]]))[0] == 255)
    assert moved[:, 1].min() == 43 and moved[:, 1].max() == 58 and moved[:, 0].min() == 5
    # the ellipse (semi-axes 10, 5) at 90 degrees (orientation index 10 of 40 ~ 0.51 pi) stands upright
    e0, e90 = render(np.array([[1, 5, 0, 16, 16], [1, 5, 10, 16, 16]]))
    def extent(im, axis):
        return np.ptp(np.argwhere(im == 255)[:, axis]) + 1
    assert extent(e0, 1) > 1.8 * extent(e0, 0) and extent(e90, 0) > 1.8 * extent(e90, 1)
    # scale halves the area (x 0.25), every shape stays inside the canvas at every orientation
    small = render(np.array([[0, 0, 0, 16, 16]]))[0]
    assert (small == 255).sum() == 8 * 8
    edges = render(np.array([[s, 5, o, p, p] for s in range(3) for o in range(0, 40, 3) for p in (0, 31)]))
    assert not edges[:, 0].any() and not edges[:, -1].any() and not edges[:, :, 0].any() and not edges[:, :, -1].any()


def test_dsprites_source_subset_limit_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path))
    ds = load("dsprites", factors=["shape", "posx"], val_fraction=0.0)
    assert len(ds) == 3 * 32 and ds.factor_names == ["shape", "posx"] and ds.factors.shape == (96, 2)
    assert ds.class_names == ["square", "ellipse", "heart"] and torch.equal(ds.labels, ds.factors[:, 0])
    assert list((tmp_path / "dsprites").glob("*.u8"))  # cached, and read back the same, memory-mapped
    again = load("dsprites", factors=["shape", "posx"], val_fraction=0.0)
    assert again.mapped and ds.mapped and torch.equal(again.images, ds.images)
    full = np.zeros((96, 5), dtype=np.int64)
    full[:, 0], full[:, 3] = again.factors[:, 0].numpy(), again.factors[:, 1].numpy()
    assert np.array_equal(again.images[:, 0].numpy(), render(full))
    import pickle  # a mapped set pickles as its file (data-loader workers) and keeps its factors

    back = pickle.loads(pickle.dumps(again.split("train").subset([3, 1])))
    assert back.mapped and torch.equal(back.images, again.images[[3, 1]]) and back.factors.tolist() == again.factors[[3, 1]].tolist()
    monkeypatch.setenv("VAELAB_NO_CACHE", "1")
    assert not load("dsprites", factors=["shape", "posx"], val_fraction=0.0).mapped
    monkeypatch.delenv("VAELAB_NO_CACHE")
    lim = load("dsprites", limit=20, seed=3)
    assert lim.split_counts()["train"] == 20 and lim.factors.shape[1] == 5
    assert np.array_equal(lim.images[:, 0].numpy(), render(_rows(lim)))
    with pytest.raises(VaelabError, match="no factor 'colour'"):
        load("dsprites", factors=["colour"])
    with pytest.raises(VaelabError, match="varying factors of dsprites"):
        load("mnist-sample", factors=["shape"])


def _rows(ds):
    return ds.factors.numpy()  # all five factors: the rows are the render indices


def test_npz_factors_are_read(tmp_path):
    x = np.random.default_rng(0).integers(0, 255, (12, 8, 8), dtype=np.uint8)
    f = np.stack([np.arange(12) % 3, (np.arange(12) // 3) * 0.5], 1)
    np.savez(tmp_path / "a.npz", x=x, factors=f, factor_names=np.array(["a", "b"]))
    ds = load(f"npz:{tmp_path / 'a.npz'}", val_fraction=0.25)
    assert ds.factor_names == ["a", "b"] and ds.factor_values[1] == [0.0, 0.5, 1.0, 1.5]
    assert ds.factors.shape == (12, 2) and ds.split_counts() == {"train": 9, "val": 3}


def test_data_info_lists_factors(capsys):
    assert cli("data", "info", "dsprites", "--factors", "shape,scale", "--val-fraction", "0") == 0
    out = capsys.readouterr().out
    assert "factors: shape 3, scale 6" in out and "18" in out


# -- the objectives -------------------------------------------------------------------------------------


def model_for(*overrides, size=16):
    cfg = load_config(None, ["model.hidden=[32]", "model.latent_dim=3", *overrides]).model
    cfg.image_size, cfg.channels, cfg.num_classes = size, 1, 0
    torch.manual_seed(0)
    return build(cfg)


def batch(n=8, size=16):
    g = torch.Generator().manual_seed(1)
    return torch.bernoulli(torch.rand(n, 1, size, size, generator=g) * 0.6, generator=g)


def test_tc_decomposition_sums_to_the_sampled_kl():
    m = model_for(*OBJ["tc"])
    lat, _, _ = m(batch())
    parts = tc_decomposition(lat.top, lat.q, lat.log_p, dataset_size=100)
    total = parts["mi"] + parts["tc"] + parts["dwkl"]
    assert torch.allclose(total, lat.q.log_prob(lat.top) - lat.log_p, atol=1e-4)
    # TC of independent dimensions is estimated near 0, of a copied dimension far above
    z = torch.randn(400, 2)
    from vaelab.models.posterior import DiagonalGaussian

    q = DiagonalGaussian(z, torch.full_like(z, -6.0))
    log_p = -0.5 * (z**2).sum(1)
    indep = tc_decomposition(z, q, log_p, 400)["tc"].mean()
    zc = torch.stack([z[:, 0], z[:, 0]], 1)
    copied = tc_decomposition(zc, DiagonalGaussian(zc, torch.full_like(zc, -6.0)), log_p, 400)["tc"].mean()
    assert copied > indep + 1.0


def test_permute_dims_keeps_each_marginal():
    z = torch.arange(40.0).view(10, 4)
    p = permute_dims(z)
    assert all(torch.equal(p[:, j].sort().values, z[:, j]) for j in range(4)) and not torch.equal(p, z)


@pytest.mark.parametrize("name", list(OBJ))
def test_one_step_moves_every_parameter(name):
    model = model_for(*OBJ[name])
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    from vaelab.train.loop import make_aux_optimizers

    cfg = load_config(None, ["model.hidden=[32]", "model.latent_dim=3", *OBJ[name]])
    main = torch.optim.Adam([p for k, p in model.named_parameters() if not k.startswith("aux.")], lr=1e-3)
    aux = make_aux_optimizers(cfg, model)
    t = OBJECTIVES[model.cfg.objective](model, batch())
    assert torch.isfinite(t.loss) and all(torch.isfinite(v) for v in t.extra.values())
    t.loss.backward()
    if t.aux_loss is not None:
        for o in aux:
            o.zero_grad()
        t.aux_loss.backward()
    main.step()
    for o in aux:
        o.step()
    still = [k for k, v in model.named_parameters() if torch.equal(v.detach(), before[k])]
    assert not still, still
    assert (model.aux is not None) == (name == "factor") and len(aux) == (name == "factor")


def test_conflicts_are_one_line():
    with pytest.raises(VaelabError, match="needs model.posterior=gaussian"):
        load_config(None, ["model.objective=tc", "model.posterior=iaf"])
    with pytest.raises(VaelabError, match="dip_type"):
        load_config(None, ["model.objective=dip", "model.dip_type=iii"])


@pytest.mark.parametrize("name", ["tc", "factor", "dip"])
def test_resumes_exactly_with_every_optimizer(tmp_path, name):
    from conftest import tiny_config
    from vaelab.train.checkpoint import load_checkpoint

    over = (*OBJ[name], *QUICK, "data.limit=96", "train.batch_size=32")
    straight = fit(tiny_config(tmp_path, "train.epochs=2", "name=straight", *over), quiet=True)["run_dir"]
    part = fit(tiny_config(tmp_path, "train.epochs=1", "name=part", *over), quiet=True)["run_dir"]
    fit(tiny_config(tmp_path, "train.epochs=2", "name=part", *over), run_dir=part, resume=True, quiet=True)
    a, b = (load_checkpoint(Path(d) / "checkpoints/last.ckpt") for d in (straight, part))
    assert a["model"].keys() == b["model"].keys() and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert len(a["aux_optimizers"]) == (name == "factor")
    for sa, sb in zip(a["aux_optimizers"], b["aux_optimizers"], strict=True):
        assert all(torch.equal(sa["state"][i]["exp_avg"], sb["state"][i]["exp_avg"]) for i in sa["state"])
    rows = [json.loads(line) for line in (Path(straight) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    want = {"tc": "train/tc", "factor": "train/disc_loss", "dip": "train/dip"}[name]
    assert want in rows[-1] and math.isfinite(rows[-1][want])


def test_evaluate_disentanglement_on_dsprites(tmp_path):
    run = tmp_path / "tc"
    assert cli("train", *DS, *OBJ["tc"], "train.epochs=1", "train.batch_size=32", *QUICK, "--run-dir", run, "-q") == 0
    assert cli("evaluate", run, "--no-fid", "--nll-samples", "2", "--disentanglement", "--metric-scale", "0.01") == 0
    doc = json.loads((run / "eval" / "val.json").read_text())
    d = doc["disentanglement"]
    # beta-TCVAE's beta weighs the TC, not the KL: evaluate's 'objective' is the ELBO's, and a note says so
    assert doc["loss"]["objective"] == pytest.approx(doc["loss"]["recon"] + doc["loss"]["kl"], rel=1e-6)
    assert any("model.objective=tc" in n for n in doc["notes"])
    assert set(d["metrics"]) == {"beta_vae", "factor_vae", "mig", "sap", "dci"} and d["seed"] == 0
    assert d["metrics"]["mig"]["num_train"] == 100 and d["factors"] == ["shape", "scale"]
    assert all(0 <= v <= 1 for v in d["headline"].values())
    from vaelab.report import disentanglement_html

    html = disentanglement_html({"val": {"disentanglement": d}, "test": {"loss": {}}})
    assert "MIG" in html and "DCI completeness" in html and "shape, scale" in html
    assert disentanglement_html({"test": {"loss": {}}}) == ""


def test_evaluate_disentanglement_needs_factors(tmp_path, tiny_run):
    assert cli("evaluate", tiny_run, "--no-fid", "--nll-samples", "2", "--disentanglement") == 2


def test_a_two_trial_sweep_on_tiny_dsprites_has_the_metric_columns(tmp_path, monkeypatch):
    import sys
    import types

    import yaml

    from vaelab.sweep import steps
    from vaelab.sweep.grid import build_plan
    from vaelab.sweep.results import build_results
    from vaelab.sweep.study import prepare_study, run_workers, study_status

    def fake_evaluate_run(run, split="test"):  # the loss terms only: FID's feature network is not the point here
        from vaelab.train import evaluate_terms

        part = run.data().split("val")
        t = evaluate_terms(run.model, part.images, part.labels, run.config)
        return {"split": "val", "n_images": t["n"], "loss": {"objective": t["loss"], "recon": t["recon"], "kl": t["kl"]}, "active_units": 2}

    mod = types.ModuleType("fake_disent_steps")
    mod.evaluate_run = fake_evaluate_run
    monkeypatch.setitem(sys.modules, "fake_disent_steps", mod)
    monkeypatch.setattr(steps, "EVALUATE", ("fake_disent_steps", "evaluate_run"))
    monkeypatch.setattr(steps, "report_trial", lambda run_dir: None)  # the per-trial HTML pages are tested elsewhere
    study = yaml.safe_load(Path("configs/dsprites-study.yaml").read_text()) if Path("configs/dsprites-study.yaml").is_file() else None
    assert study is not None and len(study["sweep"]["variants"]) == 6  # the published study's file parses
    cfg = {
        "name": "tiny", "out_dir": str(tmp_path),
        "data": {"source": "dsprites", "factors": ["shape", "scale"]},  # 18 images, few classes: DCI's trees stay quick
        "model": {"hidden": [32], "latent_dim": 3, "disc_hidden": [16]},
        "train": {"epochs": 1, "batch_size": 32, "images_every": 0, "save_latents": False},
        "sweep": {"evaluate": True, "disentanglement": 0.01, "variants": [
            {"name": "tc", "overrides": {"model.objective": "tc", "model.beta": 6}},
            {"name": "factor", "overrides": {"model.objective": "factor", "model.gamma": 35}}]},
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(cfg))
    plan = build_plan(path)
    assert plan.disentanglement == 0.01 and plan.evaluate
    prepare_study(plan, tmp_path / "study")
    run_workers(plan, tmp_path / "study", evaluate=True)
    res = build_results(plan, tmp_path / "study", study_status(plan, tmp_path / "study"))
    assert all(0 <= r["mig"] <= 1 and "dci_d" in r and "total_corr" in r for r in res.rows)
    assert "MIG" in res.markdown() and "BetaVAE" in res.markdown()
    # one traversal grid per model, captioned with its active units, total correlation and MIG
    from vaelab.sweep import figures as sweep_figures
    from vaelab.sweep.outputs import study_outputs

    seen = {}
    real = sweep_figures.traversal_panels
    monkeypatch.setattr("vaelab.sweep.outputs.traversal_panels", lambda dirs, notes=None, **k: seen.update(notes) or real(dirs, notes, **k))
    monkeypatch.setattr("vaelab.sweep.outputs.metric_figures", lambda *a, **k: {})  # drawn and tested elsewhere
    monkeypatch.setattr("vaelab.sweep.outputs.data_overview", lambda *a, **k: ([], {}))
    files = study_outputs(plan, tmp_path / "study", study_status(plan, tmp_path / "study"), results=res)
    assert "figures/traversals.png" in files and sorted(seen) == sorted(r["trial"] for r in res.rows)
    assert all(n.startswith("AU ") and " TC " in f" {n}" and "MIG" in n for n in seen.values()), seen
    from vaelab.sweep.grid import _metric_scale

    with pytest.raises(VaelabError, match="sweep.disentanglement"):
        _metric_scale("lots")


def test_total_correlation_of_the_aggregate_posterior():
    from vaelab.evaluate.disentangle_run import total_correlation

    rs = np.random.RandomState(0)
    independent = rs.randn(1500, 3)
    small = np.full_like(independent, 0.3)  # (tiny posteriors bias the mixture estimate upwards)
    mixed = independent @ np.array([[1.0, 0.9, 0.0], [0.0, 0.45, 0.0], [0.0, 0.0, 1.0]])
    assert abs(total_correlation(independent, small)) < 0.15
    assert total_correlation(mixed, small) > total_correlation(independent, small) + 0.3


def test_a_checkpoint_from_before_the_new_keys_still_resumes(tmp_path):
    from conftest import tiny_config
    from vaelab.train.checkpoint import load_checkpoint, save_checkpoint

    over = (*QUICK, "data.limit=64")
    run = fit(tiny_config(tmp_path, "train.epochs=1", "name=old", *over), quiet=True)["run_dir"]
    path = Path(run) / "checkpoints" / "last.ckpt"
    state = load_checkpoint(path)
    for key in ("gamma", "disc_hidden", "disc_lr", "dip_lambda", "dip_type", "dataset_size"):
        del state["config"]["model"][key]  # as written before these keys existed
    state.pop("aux_optimizers")
    state.pop("format")
    save_checkpoint(path, state)
    out = fit(tiny_config(tmp_path, "train.epochs=2", "name=old", *over), run_dir=run, resume=True, quiet=True)
    assert out["epochs"] == 2


# -- audit of issue 22 on main: every path keeps the factors, every objective x option is checked ---------


def test_factors_survive_classes_limit_and_resize():
    from vaelab.data.transform import resize_images

    ds = load("dsprites", factors=["shape", "posx"], classes=["heart", "square"], limit=10, image_size=32, val_fraction=0.25, seed=1)
    assert ds.images.shape[1:] == (1, 32, 32) and len(ds) == len(ds.factors) == len(ds.labels)
    # the limit holds after the class filter (only hearts and squares are drawn); rows, then resized
    assert ds.split_counts()["train"] == 10 and ds.split_counts()["val"] >= 3
    assert ds.class_names == ["heart", "square"] and torch.equal(ds.factors[:, 0], torch.where(ds.labels == 0, 2, 0))
    full = np.zeros((len(ds), 5), dtype=np.int64)
    full[:, 0], full[:, 3] = ds.factors[:, 0].numpy(), ds.factors[:, 1].numpy()
    want = resize_images(torch.from_numpy(render(full)).unsqueeze(1), 32)
    assert torch.equal(ds.images, want)  # each image is the one its factors describe
    val = ds.split("val")
    assert torch.equal(val.factors, ds.factors[ds.split_ids == 1]) and val.factor_values[1][-1] == 1.0


def test_a_limited_set_resized_gathers_its_own_images():
    ds = load("mnist-sample", classes=[1, 4], limit=20, image_size=16)
    assert ds.pixels[torch.arange(len(ds))].shape == (len(ds), 1, 16, 16)  # used to index the old rows


def test_in_memory_data_keeps_its_factors_through_the_run(tmp_path):
    import vaelab

    data = load("dsprites", factors=["shape", "scale"], val_fraction=0.0)
    run = vaelab.fit({"model.hidden": [16], "model.latent_dim": 2, "model.objective": "factor", "model.disc_hidden": [8],
                      "train.epochs": 1, "train.batch_size": 8, "data.val_fraction": 0.25, "train.images_every": 0, "train.save_latents": False},
                     data, run_dir=tmp_path / "mem", quiet=True)
    back = run.data()  # read from RUN/data.npz
    assert back.factor_names == ["shape", "scale"] and back.factor_values == data.factor_values
    assert back.factors.shape == (18, 2) and sorted(back.factors.tolist()) == sorted(data.factors.tolist())
    assert cli("evaluate", run.path, "--no-fid", "--nll-samples", "1", "--disentanglement", "--metric-scale", "0.005") == 0
    assert json.loads((Path(run.path) / "eval" / "val.json").read_text())["disentanglement"]["factors"] == ["shape", "scale"]
    # a pretrained folder carries the FactorVAE's discriminator and its data (with factors), and loads cleanly
    from vaelab.run import load_run

    assert cli("export", run.path, "--format", "pretrained", "--with-data", "--out", tmp_path / "pre") == 0
    pre = load_run(tmp_path / "pre")
    assert all(torch.equal(a, b) for a, b in zip(pre.model.aux.state_dict().values(), run.model.aux.state_dict().values(), strict=True))
    assert pre.data().factor_names == ["shape", "scale"]
    assert cli("export", run.path, "--format", "onnx", "--out", tmp_path / "onnx") == 0  # encoder + decoder only


@pytest.mark.parametrize("name", ["tc", "factor", "dip"])
@pytest.mark.parametrize("bad", [
    ("model.stochastic_layers=2", "stochastic_layers=1"), ("model.latent=vq", "latent=gaussian"),
    ("model.posterior=delta", "posterior=gaussian"), ("model.posterior=iaf", "posterior=gaussian"),
    ("model.prior=vamp", "prior=normal"), ("model.prior=mog", "prior=normal"), ("model.ema_decay=2", "ema_decay"),
])
def test_every_family_conflict_is_one_line(name, bad):
    with pytest.raises(VaelabError, match=bad[1]) as e:
        load_config(None, [*OBJ[name], bad[0], "model.latent_dim=8"])
    assert "\n" not in str(e.value)


def test_the_spec_names_the_factors_and_other_specs_get_none():
    from vaelab.data.dsprites import spec_factors

    ds = load("dsprites:scale,shape", val_fraction=0.0)
    assert ds.factor_names == ["shape", "scale"] and len(ds) == 18
    assert spec_factors("dsprites", ["shape"]) == ["shape"] and spec_factors("dsprites:posx", ["shape"]) is None
    assert spec_factors("npz:own.npz", ["shape"]) is None  # a run trained on dsprites scored on a user's npz
    with pytest.raises(VaelabError, match="different factors"):
        load("dsprites:shape", factors=["scale"])


def test_separate_val_and_test_files_keep_their_factors_aligned(tmp_path):
    from vaelab.config import DataConfig
    from vaelab.data import from_config

    rng = np.random.default_rng(0)
    for name, vals in (("train", [0.0, 0.5, 1.0, 1.5]), ("val", [1.0, 1.5]), ("test", [0.5])):
        f = np.array([vals[i % len(vals)] for i in range(8)])
        np.savez(tmp_path / f"{name}.npz", x=rng.integers(0, 255, (8, 8, 8), dtype=np.uint8), factors=f, factor_names=np.array(["size"]))
    ds = from_config(DataConfig(source=f"npz:{tmp_path / 'train.npz'}", val=f"npz:{tmp_path / 'val.npz'}", test=f"npz:{tmp_path / 'test.npz'}"))
    assert ds.factor_values == [[0.0, 0.5, 1.0, 1.5]] and ds.split_counts() == {"train": 8, "val": 8, "test": 8}
    value = lambda part: [ds.factor_values[0][i] for i in ds.split(part).factors[:, 0].tolist()]  # noqa: E731
    assert set(value("val")) == {1.0, 1.5} and set(value("test")) == {0.5} and set(value("train")) == {0.0, 0.5, 1.0, 1.5}


def test_the_training_summary_names_each_objective_s_own_terms():
    from vaelab.train.callbacks import val_loss_terms

    row = {"val/recon": 100.0, "val/kl": 5.0, "val/mi": 1.0, "val/tc": 0.5, "val/dwkl": 3.5, "val/dip": 2.0}
    cfg = lambda *o: load_config(None, list(o)).model  # noqa: E731
    assert val_loss_terms(row, cfg(*OBJ["tc"])) == "recon 100.00 + mi 1.00 + 6 x tc 0.50 + dwkl 3.50"
    assert val_loss_terms(row, cfg(*OBJ["factor"])) == "recon 100.00 + kl 5.00 + 35 x tc 0.50"
    assert val_loss_terms(row, cfg(*OBJ["dip"], "model.beta=2")) == "recon 100.00 + 2 x kl 5.00 + dip 2.00"


def test_a_study_scoring_disentanglement_on_data_without_factors_stops_before_training(tmp_path):
    import yaml

    from vaelab.evaluate.disentangle_run import may_have_factors
    from vaelab.sweep.grid import build_plan

    np.savez(tmp_path / "f.npz", x=np.zeros((4, 8, 8), np.uint8), factors=np.arange(4))
    np.savez(tmp_path / "plain.npz", x=np.zeros((4, 8, 8), np.uint8))
    assert may_have_factors("dsprites:shape") and may_have_factors(f"npz:{tmp_path / 'f.npz'}") and may_have_factors(str(tmp_path / "f.npz"))
    assert not may_have_factors(f"npz:{tmp_path / 'plain.npz'}") and not may_have_factors("mnist-sample")
    cfg = {"data": {"source": "mnist-sample"}, "sweep": {"disentanglement": 0.1, "variants": [{"name": "a", "overrides": {}}, {"name": "b", "overrides": {"model.beta": 4}}]}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(VaelabError, match="data.source=mnist-sample has no ground-truth factors"):
        build_plan(tmp_path / "s.yaml")


def test_arrays_in_python_carry_factors():
    from vaelab import ImageSet

    x = np.zeros((6, 8, 8), np.uint8)
    ds = ImageSet.from_arrays(x, val=x[:2], factors=np.c_[np.arange(6) % 2, np.arange(6) * 0.5], val_factors=[[1, 3.0], [0, 0.25]],
                              factor_names=["side", "size"])
    assert ds.factor_names == ["side", "size"] and ds.factor_values == [[0.0, 1.0], [0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]]
    assert ds.split("val").factors.tolist() == [[1, 7], [0, 1]]
    with pytest.raises(VaelabError, match="val images have no factors"):
        ImageSet.from_arrays(x, val=x[:2], factors=np.zeros(6))
    with pytest.raises(VaelabError, match="test_factors given without test"):
        ImageSet.from_arrays(x, factors=np.zeros(6), test_factors=np.zeros(2))


def test_dip_vae_runs_through_evaluate_disentanglement(tmp_path):
    # (tc above, factor through vaelab.fit on in-memory data): each objective reaches the metrics
    run = tmp_path / "dip"
    assert cli("train", *DS, *OBJ["dip-i"], "train.epochs=1", "train.batch_size=32", *QUICK, "--run-dir", run, "-q") == 0
    assert cli("evaluate", run, "--no-fid", "--nll-samples", "1", "--disentanglement", "--metric-scale", "0.005") == 0
    doc = json.loads((run / "eval" / "val.json").read_text())
    assert set(doc["disentanglement"]["headline"]) >= {"mig", "dci_d"} and any("model.objective=dip" in n for n in doc["notes"])
