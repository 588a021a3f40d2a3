"""`vaelab anomaly`: score images under a run, threshold on its validation split, flag, and measure."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import VaelabError
from ._common import Table, _say_dim, _write_bytes, app, console

SCORES_HELP = (
    "Comma list of scores; the first flags the images: ssim (1 - SSIM), recon (MSE), nll (IWAE), elbo (-ELBO), "
    "complexity (NLL minus PNG code length, Serra et al. 2020), ratio (vs --background, Ren et al. 2019). "
    "Default: all of them that the run's family gives, in this order (a deterministic encoder or a VQ run "
    "without its code prior has no likelihood: ssim and recon only)."
)


@app.command()
def anomaly(
    run: Annotated[Path, typer.Argument(help="A run directory or pretrained folder.")],
    data: Annotated[str | None, typer.Option(help="Score this data spec (default: the run's own data).")] = None,
    split: Annotated[str, typer.Option(help="Which split of the data to score.")] = "test",
    normal: Annotated[
        str | None, typer.Option(help="Normal classes of the data (names or indices, e.g. 0,1); the others are anomalies. 'none': no metrics.")
    ] = None,
    outliers: Annotated[str | None, typer.Option(help="A second data spec whose images are all anomalies (out-of-distribution test).")] = None,
    score: Annotated[str | None, typer.Option("--score", help=SCORES_HELP)] = None,
    fpr: Annotated[float | None, typer.Option(help="Threshold: flag this share of the validation split's normal images (default 0.05).")] = None,
    quantile: Annotated[float | None, typer.Option(help="Threshold at this quantile of all validation scores instead, e.g. 0.95.")] = None,
    background: Annotated[Path | None, typer.Option(help="A run trained on perturbed inputs (train.perturb=0.2), for the 'ratio' score.")] = None,
    nll_samples: Annotated[int, typer.Option(help="Importance samples k of the NLL.")] = 100,
    compressor: Annotated[str, typer.Option(help="png or zlib: the code length of the complexity score.")] = "png",
    limit: Annotated[int | None, typer.Option(help="At most this many images of each set (quick tries).")] = None,
    name: Annotated[str | None, typer.Option(help="File stem of the outputs in RUN/anomaly/ (default from data and split).")] = None,
    checkpoint: Annotated[str, typer.Option(help="best, last, or a .ckpt file.")] = "best",
    batch_size: int = 500,
    seed: int = 0,
):
    """Score every image, threshold on the validation split, write scores, flagged images and metrics.

    Writes RUN/anomaly/NAME.json, NAME_scores.npz/.csv and NAME_flagged.png (most anomalous first).

    With --normal or --outliers also AUROC, AUPRC, FPR at 95% TPR and NAME_roc.png.

    Examples:

      vaelab anomaly runs/mnist-0 --data mnist --normal 0

      vaelab anomaly runs/fashion --outliers mnist --score complexity,nll

      vaelab anomaly runs/fashion --outliers mnist --background runs/fashion-bg --score ratio

      vaelab anomaly runs/parts --data folder:new_parts/ --split train --quantile 0.99
    """
    from ..anomaly import detect, result_name
    from ..anomaly.outputs import FOLDER, csv_bytes, json_bytes, npz_bytes
    from ..run import load_run
    from ..visualize.anomaly import flagged_figure, roc_figure
    from ..visualize.style import figure_bytes

    if fpr is not None and quantile is not None:
        raise VaelabError("give --fpr or --quantile, not both", "--fpr 0.05 flags 5% of the normal validation images")
    if fpr is None and quantile is None:
        fpr = 0.05
    if compressor not in ("png", "zlib"):
        raise VaelabError(f"--compressor is '{compressor}'", "use png or zlib")
    if name is not None and (not name or any(c in name for c in "/\\") or name.startswith(".")):
        raise VaelabError(f"--name '{name}' is not a file stem", "give a plain name like mnist_test")
    r = load_run(run, checkpoint=checkpoint)
    result = detect(
        r, data=data, split=split, normal=normal, outliers=outliers, scores=score, fpr=fpr, quantile=quantile,
        background=background, k=nll_samples, compressor=compressor, limit=limit, batch_size=batch_size, seed=seed,
        progress=_say_dim,
    )
    rep = result.report
    stem = name or result_name(data, split, outliers)
    out = Path(r.path) / FOLDER
    primary = result.primary
    title = f"{primary}: {SCORE_NAMES.get(primary, primary)}"
    fig = flagged_figure(result.images, result.scores[primary], result.threshold(), title, labels=result.labels)
    written = [out / f"{stem}_scores.npz", out / f"{stem}_scores.csv", out / f"{stem}_flagged.png"]
    _write_bytes(written[0], npz_bytes(result))
    _write_bytes(written[1], csv_bytes(result))
    _write_bytes(written[2], figure_bytes(fig))
    if result.roc:
        what = f"{rep['data']} {split}" + (f" vs {rep['outliers']}" if rep["outliers"] else "")
        written.append(out / f"{stem}_roc.png")
        _write_bytes(written[-1], figure_bytes(roc_figure(result.roc, f"ROC, {what}")))
    _write_bytes(out / f"{stem}.json", json_bytes(rep))  # last: the report's reader finds complete results

    rule = f"FPR {rep['threshold_rule']['fpr']:g}" if "fpr" in rep["threshold_rule"] else f"quantile {rep['threshold_rule']['quantile']:g}"
    table = Table(title=f"{r.path}: {rep['n_images']} {split} images of {rep['data']}"
                  + (f" + {rep['outliers']}" if rep["outliers"] else "") + f"; thresholds at {rule} of {rep['calibration']['n_images']} validation images")
    metrics = bool(result.roc)
    cols = ["score", "threshold", "flagged"] + (["test FPR", "AUROC", "AUPRC", "FPR at 95% TPR"] if metrics else [])
    for c in cols:
        table.add_column(c, justify="left" if c == "score" else "right")
    for sname, e in rep["scores"].items():
        row = [sname, f"{e['threshold']:.4g}", f"{e['flagged']} ({100 * (e['flagged_share'] or 0):.1f}%)"]
        if metrics:
            row += [_fmt(e.get("test_fpr")), _fmt(e.get("auroc")), _fmt(e.get("auprc")), _fmt(e.get("fpr_at_95_tpr"))]
        table.add_row(*row)
    console.print(table)
    for sname, why in rep.get("skipped_scores", {}).items():
        console.print(f"not scored: {sname} ({why})", style="dim", highlight=False, markup=False, soft_wrap=True)
    if rep.get("normal_classes"):
        console.print(f"normal classes: {', '.join(rep['normal_classes'])}; {rep['n_anomalies']} anomalies", highlight=False)
    if "best_score" in rep:
        console.print(f"best: {rep['best_score']['name']} (AUROC {rep['best_score']['auroc']:.4f})", highlight=False)
    console.print(f"wrote {out / (stem + '.json')} and {', '.join(p.name for p in written)}", highlight=False)


SCORE_NAMES = {
    "complexity": "NLL - PNG bits, per dim",
    "nll": "importance-sampled NLL",
    "elbo": "-ELBO",
    "recon": "reconstruction MSE",
    "ssim": "1 - SSIM",
    "ratio": "NLL - background NLL",
}


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"
