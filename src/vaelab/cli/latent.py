"""`vaelab classify` and `vaelab predict`: classifiers on the latent space."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import VaelabError, shell
from ._common import Table, _pct, _use_threads, _write_json, app, console

METHODS_HELP = "gmm (semi-supervised Gaussian mixture), spread (label spreading on a k-NN graph), mlp (head on K latent samples), logreg, knn."


def _classifier_params(params: list[str] | None) -> dict:
    """``['covariance_type=diag', 'samples=20']`` -> a dict, values read as YAML (numbers stay numbers)."""
    import yaml

    out = {}
    for text in params or []:
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise VaelabError(f"--param '{text}' is not key=value", "write it like --param covariance_type=diag")
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def _result_name(method: str, params: dict, name: str | None) -> str:
    """The file stem of a classify result: --name, else the method with its -p parameters (so a re-run with
    other parameters keeps the earlier result): gmm, gmm_covariance_type-diag, mlp_max_epochs-20_samples-5."""
    import re

    if name is not None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}", name) or name.endswith((".classifier", "_budget")):
            raise VaelabError(f"--name '{name}' is not a plain file name", "use letters, digits, '.', '_', '-', e.g. --name gmm-diag")
        return name
    if not params:
        return method
    parts = [f"{k}-{v}" for k, v in sorted(params.items())]  # hidden=[64, 32] -> hidden-64-32
    return re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9._+-]+", "-", f"{method}_{'_'.join(parts)}")).strip("-")[:120]


@app.command()
def classify(
    run: Annotated[Path, typer.Argument(help="A run directory or a pretrained folder.")],
    method: Annotated[str, typer.Option(help=METHODS_HELP)] = "gmm",
    labels_per_class: Annotated[
        str | None, typer.Option(help="N labels per class from the run's train split (seeded), or 'all'. Default 10.")
    ] = None,
    labelled: Annotated[str | None, typer.Option(help="Take the labels from this data spec instead (all of it).")] = None,
    test: Annotated[str | None, typer.Option(help="Score on this data spec (default: the run's test split, else val).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the label draw (and of the MLP head).")] = 0,
    budget: Annotated[str | None, typer.Option(help="Label-budget table, e.g. 1,5,10,100,all.")] = None,
    repeats: Annotated[int, typer.Option(help="--budget: average over this many seeded draws.")] = 1,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Classifier parameter key=value, e.g. covariance_type=diag.")
    ] = None,
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
    name: Annotated[
        str | None, typer.Option(help="Name of the result files (default: the method, plus its -p parameters).")
    ] = None,
):
    """Classify from the latent space with few labels; writes RUN/classify/<name>.json and the classifier.

    <name> is --name, else the method (gmm.json), or the method and its -p parameters (gmm_covariance_type-diag.json): a re-run with other parameters keeps the earlier result.

    Examples:

      vaelab classify runs/mnist-148-z2 --method gmm --labels-per-class 10

      vaelab classify runs/mnist-148-z2 --method gmm --labelled npz:val.npz --test npz:test.npz

      vaelab classify runs/mnist-148-z2 --method mlp -p samples=20 --budget 1,5,10,100,all
    """
    from ..latent import classifiers, fewlabels
    from ..run import load_run

    params = _classifier_params(param)
    classifiers.make(method, params)  # a bad method or parameter fails before any encoding
    stem = _result_name(method, params, name)
    if budget is not None and labels_per_class is not None:
        raise VaelabError("give either --budget or --labels-per-class, not both", "--budget 1,5,10,all sweeps the labels per class")
    budgets = fewlabels.parse_budget(budget) if budget is not None else None
    r = load_run(run, checkpoint=checkpoint)
    _use_threads(r.config.trainer.threads)
    out_dir = r.path / "classify"
    if budgets is not None:
        result = fewlabels.label_budget(r, method, budgets, seed=seed, labelled=labelled, test=test, params=params, repeats=repeats)
        path = out_dir / f"{stem}_budget.json"
        _write_json(path, result)
        table = Table(title=f"{method}: label budget (test: {result['test_source']}, {result['n_test']} images, seed {seed})")
        for col in ("labels per class", "labelled", "accuracy", "macro F1"):
            table.add_column(col, justify="right")
        for row in result["budget"]:
            acc, f1 = _pct(row["accuracy"]), f"{row['f1_macro']:.4f}"
            if repeats > 1:
                acc, f1 = f"{acc} ± {100 * row['accuracy_std']:.2f}", f"{f1} ± {row['f1_macro_std']:.4f}"
            table.add_row(str(row["labels_per_class"]), str(row["n_labelled"]), acc, f1)
        console.print(table)
        for line in result.get("notes", []):
            console.print(line, highlight=False)
        console.print(f"wrote {path}", highlight=False)
        return
    result = fewlabels.classify(r, method, labels_per_class=labels_per_class, labelled=labelled, test=test, seed=seed, params=params)
    rep = result.report
    rep = {"name": stem, **rep}
    npz_path, _ = classifiers.save(result.classifier, fewlabels.classifier_path(r.path, stem), run=r)
    path = out_dir / f"{stem}.json"
    _write_json(path, rep)
    table = Table(title=f"{method} on {rep['test_source']} ({rep['n_test']} images)", show_header=False)
    table.add_row("labels", f"{rep['labels_per_class']} per class: {rep['n_labelled']} from {rep['labelled_source']}" + (f", {rep['n_unlabelled']} unlabelled" if rep["n_unlabelled"] else ""))
    table.add_row("accuracy", _pct(rep["accuracy"]))
    table.add_row("precision / recall (macro)", f"{rep['precision_macro']:.4f} / {rep['recall_macro']:.4f}")
    table.add_row("F1 macro / micro", f"{rep['f1_macro']:.4f} / {rep['f1_micro']:.4f}")
    fitted = rep["fitted"]
    if "lower_bound_" in fitted:
        table.add_row("EM", f"{fitted['n_iter_']} iterations, {'converged' if fitted['converged_'] else 'NOT converged'}, lower bound {fitted['lower_bound_']:.4f}")
    if "n_neighbors_" in fitted and "n_iter_" in fitted:
        table.add_row("label spreading", f"{fitted['n_iter_']} iterations on a {fitted['n_neighbors_']}-nearest-neighbour graph")
    if "best_epoch_" in fitted:
        stop = f"best validation accuracy {_pct(fitted['val_accuracy_'])}" if fitted["early_stopping_"] else "too few labels for a hold-out: no early stopping"
        table.add_row("training", f"epoch {fitted['best_epoch_']} of {fitted['n_epochs_']} ({stop})")
    console.print(table)
    cm = Table(title="confusion matrix")
    cm.add_column("true \\ predicted")
    for name in rep["class_names"]:
        cm.add_column(name, justify="right")
    for name, row in zip(rep["class_names"], rep["confusion"], strict=True):
        cm.add_row(name, *map(str, row))
    console.print(cm)
    for line in rep.get("notes", []):
        console.print(line, highlight=False)
    console.print(f"wrote {path} and {npz_path} (+ .classifier.json)", highlight=False)


@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="A run directory or a pretrained folder.")],
    images: Annotated[list[Path] | None, typer.Argument(help="Image files (resized to the model's size).", show_default=False)] = None,
    data: Annotated[str | None, typer.Option(help="Predict every image of this data spec instead.")] = None,
    method: Annotated[str, typer.Option(help="Which saved classifier of the run (its most recent fit).")] = "gmm",
    name: Annotated[
        str | None, typer.Option(help="A saved classifier by name (RUN/classify/NAME.npz: --name, or the method and its -p parameters).")
    ] = None,
    anomaly: Annotated[bool, typer.Option("--anomaly", help="Also flag anomalies with the threshold vaelab anomaly saved.")] = False,
    anomaly_result: Annotated[str | None, typer.Option(help="Which saved anomaly result (default: the newest).")] = None,
):
    """Print the predicted class and its probability for each image, with the run's saved classifier.

    With --anomaly, also each image's anomaly score and whether it lies above the saved threshold (the class prediction is left out when the run has no saved classifier).

    Examples:

      vaelab predict runs/mnist-148-z2 digit.png other.png

      vaelab predict runs/mnist-148-z2 --data npz:test.npz --method mlp

      vaelab predict runs/mnist-0 odd.png --anomaly
    """
    from ..latent import classifiers, fewlabels
    from ..run import load_run

    if bool(images) == (data is not None):
        raise VaelabError("give image files or --data SPEC (one of the two)", "e.g. vaelab predict RUN digit.png")
    if method not in classifiers.CLASSIFIERS:
        classifiers.make(method)  # the unknown-method error, with a suggestion
    path = fewlabels.classifier_path(run, _result_name(method, {}, name)) if name else fewlabels.latest_classifier(run, method)
    stem = path.stem
    if anomaly and name is None and not path.with_name(f"{stem}.classifier.json").is_file():
        _flag_anomalies(run, images, data, anomaly_result)
        return
    if not path.with_name(f"{stem}.classifier.json").is_file():
        from ..pretrained import is_pretrained_dir
        from ..run import require_run_dir

        if not is_pretrained_dir(run):
            require_run_dir(run)
        if name is not None:
            raise VaelabError(f"{run} has no saved classifier named {name}", f"see the names in {Path(run) / 'classify'}")
        budget = " (a --budget table saves none)" if (Path(run) / "classify" / f"{method}_budget.json").is_file() else ""
        raise VaelabError(f"{run} has no saved {method} classifier{budget}", f"run {shell('vaelab', 'classify', run, '--method', method)} first")
    meta = classifiers.read_meta(path)
    method = meta.get("method", method)
    # the checkpoint the classifier was fitted on (load() refuses it if that checkpoint changed since)
    ckpt = Path(run) / (meta.get("run") or {}).get("checkpoint", "")
    r = load_run(run, checkpoint=str(ckpt) if ckpt.suffix == ".ckpt" and ckpt.is_file() else "best")
    clf = classifiers.load(path, run=r)
    source = fewlabels.images_from_files(images, r.model.image_shape) if images else data
    pred = fewlabels.predict(r, clf, source)
    table = Table(title=f"{stem if stem != method else method} predictions ({len(pred.classes)} image{'' if len(pred.classes) == 1 else 's'})")
    table.add_column("image")
    table.add_column("class")
    table.add_column("probability", justify="right")
    if pred.labels is not None:
        table.add_column("true class")
    names = [str(p) for p in images] if images else [str(i) for i in range(len(pred.classes))]
    if images and len({p.name for p in images}) == len(images):  # short names when they are unambiguous
        names = [p.name for p in images]
    for i, (name, cls, prob) in enumerate(zip(names, pred.classes, pred.probability, strict=True)):
        table.add_row(name, cls, f"{prob:.3f}", *([pred.labels[i]] if pred.labels is not None else []))
    console.print(table)
    if pred.labels is not None:
        acc = sum(a == b for a, b in zip(pred.classes, pred.labels, strict=True)) / len(pred.labels)
        console.print(f"accuracy {_pct(acc)} on {len(pred.classes)} labelled images", highlight=False)
    if anomaly:
        _flag_anomalies(run, images, data, anomaly_result)


def _flag_anomalies(run: Path, images: list[Path] | None, data: str | None, which: str | None) -> None:
    """`predict --anomaly`: each image's score under the saved result's settings, against its threshold."""
    from ..anomaly.detect import load_like_run, single_image_scores
    from ..anomaly.metrics import flag
    from ..anomaly.outputs import saved_result
    from ..latent import fewlabels
    from ..pretrained import is_pretrained_dir
    from ..run import load_run, require_run_dir

    if not is_pretrained_dir(run):
        require_run_dir(run)
    stem, saved = saved_result(run, which)
    ckpt = Path(saved.get("checkpoint") or "")  # the checkpoint the threshold was set on (a pretrained folder has one)
    r = load_run(run, checkpoint=str(ckpt) if ckpt.suffix == ".ckpt" and ckpt.is_file() else "best")
    ds = fewlabels.images_from_files(images, r.model.image_shape) if images else load_like_run(r, data)
    primary = saved["primary"]
    if primary == "ratio" and not (saved.get("background") and Path(saved["background"]).is_dir()):
        raise VaelabError(f"{stem} flags by the likelihood ratio, but its background run {saved.get('background')} is gone",
                          f"run vaelab anomaly {run} again with another --score first")
    scores = single_image_scores(r, ds.images, saved, names=[primary])
    t = float(saved["scores"][primary]["threshold"])
    flagged = flag(scores[primary], t)
    table = Table(title=f"anomaly: {primary} > {t:.4g} (threshold of {stem})")
    table.add_column("image")
    table.add_column(primary, justify="right")
    table.add_column("anomaly")
    names = [p.name for p in images] if images and len({p.name for p in images}) == len(images) else [str(p) for p in images or []]
    names = names or [str(i) for i in range(len(ds))]
    for i, nm in enumerate(names):
        table.add_row(nm, f"{scores[primary][i]:.4g}", "yes" if flagged[i] else "no")
    console.print(table)
    console.print(f"{int(flagged.sum())} of {len(flagged)} images flagged", highlight=False)


