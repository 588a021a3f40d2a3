"""Share and deploy (issue 24): save_pretrained / from_pretrained (JSON + safetensors, no pickle), the model
card, a pretrained folder in every command that takes a run, the Hub paths (mocked: never the network), and
`vaelab export` to ONNX (checked in onnxruntime) and TorchScript for every architecture."""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path

import pytest
import torch

import vaelab
from conftest import cli
from vaelab.config import ModelConfig, from_dict, to_dict
from vaelab.errors import VaelabError
from vaelab.models import build


def tiny_model(**changes) -> torch.nn.Module:
    cfg = from_dict({"hidden": [16], "conv_channels": [4, 8], "latent_dim": 3, "image_size": 8, "channels": 1, "num_classes": 0, **changes}, ModelConfig)
    torch.manual_seed(0)
    model = build(cfg)
    with torch.no_grad():  # every parameter and buffer away from its initial value, so a mix-up shows
        for p in model.state_dict().values():
            if p.is_floating_point():
                p.add_(torch.rand_like(p) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def pretrained(tiny_run, tmp_path_factory) -> Path:
    """The tiny run, evaluated (so the card has metrics), then saved as a pretrained folder."""
    from conftest import copy_run

    run_dir = copy_run(tiny_run, tmp_path_factory.mktemp("pre-src"))
    assert cli("evaluate", run_dir, "--no-fid", "--nll-samples", "2", "--split", "val") == 0
    out = tmp_path_factory.mktemp("pre") / "tiny-vae"
    return vaelab.load_run(run_dir).save_pretrained(out)


def test_save_and_load_round_trip(pretrained, tiny_run):
    assert sorted(p.name for p in pretrained.iterdir()) == ["README.md", "config.json", "eval", "metrics.jsonl", "model.safetensors"]
    run = vaelab.load_run(tiny_run)
    model = vaelab.VAE.from_pretrained(pretrained)
    assert not model.training
    a, b = run.model.state_dict(), model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.rand(4, *model.image_shape)
    assert torch.equal(run.model.reconstruct(x), model.reconstruct(x))
    from safetensors import safe_open

    with safe_open(str(pretrained / "model.safetensors"), "pt") as f:  # plain tensors, no pickle
        assert f.metadata()["vaelab"] == "vaelab-pretrained-1"
    info = json.loads((pretrained / "config.json").read_text())
    assert info["class_names"] == run.class_names and info["config"]["data"]["source"] == "mnist-sample"


def test_config_json_holds_every_model_field():
    """Generic over ModelConfig: a family added later is saved and rebuilt without changes here."""
    info_keys = set(to_dict(tiny_model().cfg))
    assert info_keys == {f.name for f in dataclasses.fields(ModelConfig)}


@pytest.mark.parametrize("changes", [{"prior": "mog", "prior_components": 3}, {"likelihood": "gaussian"}, {"arch": "conv", "res_blocks": 1}])
def test_learned_prior_and_likelihood_state_survive(changes, tmp_path):
    model = tiny_model(**changes)
    model.save_pretrained(tmp_path / "m")
    again = vaelab.VAE.from_pretrained(tmp_path / "m")
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    z = torch.randn(2, 3)
    assert torch.equal(model.generate(z), again.generate(z))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(model.sample(3, generator=g1), again.sample(3, generator=g2))


def test_model_card_has_data_family_metrics_and_how_to_load(pretrained):
    card = (pretrained / "README.md").read_text()
    for words in ("mnist-sample", "`model.latent_dim` | `2`", "From `eval/val.json`", "-ELBO", "from_pretrained", "library_name: vaelab"):
        assert words in card, words


def test_a_model_saved_alone_asks_for_data(tmp_path, capsys):
    tiny_model().save_pretrained(tmp_path / "alone")
    assert "not recorded" in (tmp_path / "alone" / "README.md").read_text()
    capsys.readouterr()
    assert cli("evaluate", tmp_path / "alone", "--no-fid") == 2
    assert "--data SPEC" in capsys.readouterr().err


def test_a_pretrained_folder_works_in_evaluate_sample_and_export(pretrained, tmp_path, capsys):
    pre = Path(pretrained)
    assert cli("evaluate", pre, "--no-fid", "--nll-samples", "2") == 0
    assert (pre / "eval" / "val_per_image.npz").is_file()
    assert cli("sample", pre, "-n", "4", "--out", tmp_path / "s.png") == 0
    assert cli("export", pre, "--format", "onnx", "--out", tmp_path / "onnx") == 0
    assert cli("evaluate", pre, "--checkpoint", "last", "--no-fid", "--nll-samples", "2") == 0
    assert cli("evaluate", pre, "--checkpoint", "x.ckpt") == 2


@pytest.mark.slow
def test_a_pretrained_folder_works_in_every_command_that_takes_a_run(pretrained, tmp_path, capsys):
    pre = Path(pretrained)
    assert cli("plot", pre, "recon", "curves", "--out", tmp_path / "figs") == 0
    assert (tmp_path / "figs" / "recon.png").is_file() and (tmp_path / "figs" / "curves.png").is_file()
    assert cli("classify", pre, "--method", "knn", "--labels-per-class", "3") == 0
    assert cli("predict", pre, "--data", "mnist-sample", "--method", "knn") == 0
    assert cli("report", pre) == 0 and (pre / "report.html").is_file()


@pytest.mark.parametrize("damage", ["config", "weights", "shape"])
def test_a_damaged_folder_is_one_line(pretrained, tmp_path, damage, capsys):
    import shutil

    bad = Path(shutil.copytree(pretrained, tmp_path / "bad"))
    if damage == "config":
        (bad / "config.json").write_text("{not json")
    elif damage == "weights":
        (bad / "model.safetensors").write_bytes(b"\x80\x04garbage")
    else:
        info = json.loads((bad / "config.json").read_text())
        info["config"]["model"]["latent_dim"] = 5
        (bad / "config.json").write_text(json.dumps(info))
    with pytest.raises(VaelabError):
        vaelab.VAE.from_pretrained(bad)
    capsys.readouterr()
    assert cli("sample", bad, "--out", tmp_path / "x.png") == 2
    assert "Traceback" not in capsys.readouterr().err


# -- the Hub, mocked ---------------------------------------------------------------------------------------


def fake_hub(monkeypatch, folder: Path | None = None) -> dict:
    calls: dict = {}

    def snapshot_download(repo_id, revision=None, allow_patterns=None):
        calls["download"] = (repo_id, revision, allow_patterns)
        if folder is None:
            raise OSError("offline")
        return str(folder)

    class HfApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls["create"] = (repo_id, private)

        def upload_folder(self, folder_path, repo_id, commit_message=""):
            calls["uploaded"] = sorted(p.name for p in Path(folder_path).iterdir())
            return types.SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/1")

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(snapshot_download=snapshot_download, HfApi=HfApi))
    return calls


def test_from_pretrained_with_a_repo_id_downloads_through_the_hub(pretrained, monkeypatch):
    calls = fake_hub(monkeypatch, pretrained)
    model = vaelab.VAE.from_pretrained("someone/tiny-vae", revision="v1")
    assert calls["download"][:2] == ("someone/tiny-vae", "v1") and "model.safetensors" in calls["download"][2]
    assert model.latent_dim == 2


def test_hub_errors_are_one_line(monkeypatch):
    fake_hub(monkeypatch, None)
    with pytest.raises(VaelabError, match="cannot download someone/missing"):
        vaelab.VAE.from_pretrained("someone/missing")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
    with pytest.raises(VaelabError, match=r"vaelab\[hub\]"):
        vaelab.VAE.from_pretrained("someone/missing")
    with pytest.raises(VaelabError, match="not found"):
        vaelab.VAE.from_pretrained("no/such/folder")


def test_push_to_hub_uploads_the_pretrained_folder(tiny_run, monkeypatch):
    calls = fake_hub(monkeypatch)
    url = vaelab.load_run(tiny_run).push_to_hub("someone/tiny-vae", private=True)
    assert url.endswith("/commit/1") and calls["create"] == ("someone/tiny-vae", True)
    assert calls["uploaded"] == ["README.md", "config.json", "metrics.jsonl", "model.safetensors"]


# -- export ------------------------------------------------------------------------------------------------

ARCHITECTURES = {
    "mlp": {},
    "mlp-conditional": {"conditional": True, "num_classes": 3},
    "mlp-mog": {"prior": "mog", "prior_components": 4},
    "conv": {"arch": "conv"},
    "conv-upsample-instance": {"arch": "conv", "decoder": "upsample", "norm": "instance"},
    "conv-res-blocks": {"arch": "conv", "res_blocks": 1},
    "conv-conditional-class-prior": {"arch": "conv", "conditional": True, "num_classes": 3, "prior": "class"},
    "conv-gaussian-rgb": {"arch": "conv", "likelihood": "gaussian", "channels": 3, "image_size": 16},
}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_onnx_graphs_match_torch_in_onnxruntime(name, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from vaelab.export import export_onnx, max_difference

    model = tiny_model(**ARCHITECTURES[name])
    paths = export_onnx(model, tmp_path)
    diff = max_difference(model, paths, "onnx", batch=5)  # another batch size than the export's: dynamic axis
    assert diff is not None and diff < 1e-4


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.load, here in the test only
@pytest.mark.parametrize("name", ["mlp-conditional", "conv-res-blocks"])
def test_torchscript_graphs_match_torch(name, tmp_path):
    from vaelab.export import export_torchscript, max_difference

    model = tiny_model(**ARCHITECTURES[name])
    paths, traced = export_torchscript(model, tmp_path)
    assert max_difference(model, traced, "torchscript", batch=5) < 1e-5
    loaded = {k: torch.jit.load(str(p)) for k, p in paths.items()}  # the files: our own, just written
    assert max_difference(model, loaded, "torchscript", batch=4) < 1e-5


def test_an_autoregressive_head_is_refused_in_one_line(tmp_path):
    from vaelab.export import check_exportable

    model = tiny_model(pixelcnn_layers=1, pixelcnn_kernel=3)
    for fmt in ("onnx", "torchscript"):
        with pytest.raises(VaelabError, match="autoregressive"):
            check_exportable(model, fmt)
    check_exportable(model, "pretrained")  # shared as a folder, it is fine
    model.save_pretrained(tmp_path / "ar")
    assert vaelab.VAE.from_pretrained(tmp_path / "ar").autoregressive


def test_cli_export_every_format(tiny_run, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from conftest import copy_run

    run = copy_run(tiny_run, tmp_path)
    assert cli("export", run, "--format", "onnx") == 0
    out = capsys.readouterr().out
    assert "largest difference" in out and (run / "export" / "onnx" / "decoder.onnx").is_file()
    info = json.loads((run / "export" / "onnx" / "export.json").read_text())
    assert info["max_abs_difference_to_torch"] < 1e-4 and info["latent_dim"] == 2
    assert cli("export", run, "--format", "torchscript", "--out", tmp_path / "ts") == 0
    assert cli("export", run, "--out", tmp_path / "pre") == 0 and vaelab.load_run(tmp_path / "pre").pretrained
    assert cli("export", run, "--format", "tflite") == 2


def test_from_pretrained_takes_a_run_directory_too(tiny_run):
    model = vaelab.VAE.from_pretrained(tiny_run)
    run = vaelab.load_run(tiny_run)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), run.model.state_dict().values(), strict=True))
