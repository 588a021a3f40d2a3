"""What a new user meets on the README's tour: every documented command parses, help texts read as
paragraphs, and the stumbles found by trying the tour (predict after a label budget, a data spec given as the
config, a pretrained folder without its in-memory data, a weak FID feature network, a budget in the report)."""

from __future__ import annotations

import inspect
import json
import re
import shlex
from pathlib import Path

import pytest

from conftest import cli, copy_run

ROOT = Path(__file__).resolve().parents[1]


def _commands():
    """(name, click command) of every leaf command of the CLI."""
    import typer

    from vaelab.cli import app

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from walk(sub, [*path, name])
        else:
            yield " ".join(path), cmd

    group = typer.main.get_command(app)
    return group, list(walk(group, []))


def test_help_paragraphs_are_not_hard_wrapped():
    """The rich help keeps a docstring's line breaks: a paragraph wrapped in the source prints as broken lines
    (in `vaelab --help`'s list of commands too). Example lines (indented, or starting with vaelab) may break."""
    _, commands = _commands()
    wrapped = []
    for name, cmd in commands:
        for para in inspect.cleandoc(cmd.help or "").split("\n\n"):
            rest = para.split("\n")[1:]
            if rest and not all(line.startswith((" ", "vaelab")) for line in rest):
                wrapped.append(f"{name}: {para[:60]!r}")
    assert not wrapped, wrapped


def _documented_commands(text: str) -> list[tuple[str, bool]]:
    """`vaelab ...` commands of a page: (command, inline) from its shell blocks and its inline code."""
    found = []
    for block in re.findall(r"```(?:bash|console|sh)?\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                part = part.strip().removeprefix("$ ")
                part = re.sub(r"^(torchrun .*?-m vaelab|srun vaelab)", "vaelab", part)
                if part.startswith("vaelab "):
                    found.append((part, False))
    for span in re.findall(r"`(vaelab [^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S)):
        found += [(part.strip(), True) for part in span.split("&&")]
    return found


def test_every_documented_command_parses():
    """Each `vaelab ...` of the README and the docs names a real command with options it has (the arguments
    are parsed as the CLI would; nothing runs). Inline mentions in prose may leave out the run or use
    placeholders (`vaelab features train --threads N`), so only their names and options are checked."""
    from typer._click import exceptions as ex

    group, _ = _commands()
    bad = []
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for command, inline in _documented_commands(page.read_text(encoding="utf-8")):
            argv = shlex.split(command.split(" #")[0])[1:]
            if ">" in argv:
                argv = argv[: argv.index(">")]
            cmd, name = group, "vaelab"
            while getattr(cmd, "commands", None) and argv and argv[0] in cmd.commands:
                name, cmd, argv = argv[0], cmd.commands[argv[0]], argv[1:]
            if getattr(cmd, "commands", None):
                if argv and not argv[0].startswith("-"):
                    bad.append(f"{page.name}: {command}: no command {argv[0]!r}")
                continue
            try:
                cmd.make_context(name, list(argv))
            except (ex.NoSuchOption, ex.BadArgumentUsage) as e:
                bad.append(f"{page.name}: {command}: {e.format_message()}")
            except ex.UsageError as e:  # a missing run or a placeholder value: fine in prose only
                if not inline:
                    bad.append(f"{page.name}: {command}: {e.format_message()}")
    assert not bad, bad


def test_predict_after_a_label_budget_says_the_budget_saved_no_classifier(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path)
    assert cli("classify", run, "--method", "knn", "--budget", "1,all") == 0
    capsys.readouterr()
    assert cli("predict", run, "--method", "knn", "--data", "mnist-sample") == 2
    err = capsys.readouterr().err
    assert "no saved knn classifier (a --budget table saves none)" in err and "--method knn first" in err


def test_train_given_a_data_spec_as_its_config_suggests_data_source(capsys):
    assert cli("train", "mnist") == 2
    assert "vaelab train data.source=mnist" in capsys.readouterr().err
    assert cli("train", "folder:photos") == 2
    assert "data.source=folder:photos" in capsys.readouterr().err
    assert cli("train", "mnist-148-zz") == 2
    assert "data.source" not in capsys.readouterr().err  # a misspelt config name keeps its own hint


def test_export_of_a_python_run_without_its_data_says_so(tmp_path, capsys):
    import numpy as np

    import vaelab

    rng = np.random.default_rng(0)
    data = vaelab.ImageSet.from_arrays(rng.random((40, 8, 8)), labels=np.arange(40) % 2)
    run = vaelab.fit({"model.hidden": [16], "model.latent_dim": 2, "train.epochs": 1, "out_dir": str(tmp_path), "name": "arr"}, data, quiet=True)
    capsys.readouterr()
    assert cli("export", run.path, "--out", tmp_path / "bare") == 0
    assert "--with-data ships them" in capsys.readouterr().out
    assert cli("export", run.path, "--out", tmp_path / "full", "--with-data") == 0
    assert "--with-data ships them" not in capsys.readouterr().out


@pytest.fixture(scope="module")
def weak_feature_net(tmp_path_factory) -> Path:
    """A tiny feature network recorded as classifying 12% of its held-out images."""
    from vaelab.evaluate.features import load_training_data, save_feature_net, train_feature_net

    data = load_training_data("mnist-sample", limit=100)
    trained = train_feature_net(data, spec="mnist-sample", epochs=1, batch_size=32, widths=(4, 8, 8), limit=100)
    folder = save_feature_net(trained, tmp_path_factory.mktemp("features") / "weak")
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "test_accuracy": 0.12}))
    return folder


def test_evaluate_notes_a_weak_feature_network_and_names_the_maf_row(tiny_run, tmp_path, weak_feature_net):
    from vaelab.evaluate.features import load_feature_net
    from vaelab.evaluate.report import summary_rows
    from vaelab.evaluate.run import evaluate_run

    run = copy_run(tiny_run, tmp_path)
    res = evaluate_run(run, split="val", nll_samples=1, features=load_feature_net(weak_feature_net), max_generated=40, sampler="maf")
    assert any("classifies only 12%" in n for n in res["notes"]), res["notes"]
    labels = [label for label, _ in summary_rows(res)]
    assert "FID MAF sampler" in labels and not any("training latents" in label for label in labels)


def test_report_shows_a_label_budget_as_its_largest_budget():
    from vaelab.report.sections import _largest_budget

    result = {"method": "gmm", "n_test": 50, "budget": [
        {"labels_per_class": 1, "accuracy": 0.5, "f1_macro": 0.4},
        {"labels_per_class": "all", "accuracy": 0.9, "f1_macro": 0.88},
    ]}
    row = _largest_budget(result)
    assert row["accuracy"] == 0.9 and row["f1_macro"] == 0.88 and row["n_test"] == 50
    assert row["labels_per_class"] == "all (largest of the budget 1, all)"
    assert _largest_budget({"method": "gmm", "accuracy": 0.7}) == {"method": "gmm", "accuracy": 0.7}


def test_train_names_the_family_it_trains():
    from vaelab.cli.train import _family
    from vaelab.config import load_config

    assert _family(load_config(None, []).model) == ""
    m = load_config(None, ["model.stochastic_layers=2", "model.prior=vamp", "model.objective=iwae"]).model
    assert _family(m) == "; objective iwae, prior vamp, 2 stochastic layers"


def test_training_curves_tick_whole_epochs():
    from vaelab.visualize.curves import curves_figure

    for epochs in ((1, 2), (1,)):  # a 1-epoch run too
        keys = ("loss", "recon", "kl")
        rows = [{"epoch": e, "lr": 1e-3, **{f"{s}/{k}": 300.0 - 50 * e for s in ("train", "val") for k in keys}} for e in epochs]
        fig = curves_figure(rows)
        for ax in fig.axes[:4]:
            ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks), (epochs, ticks)
