"""Serialise an evaluation: the JSON document, the per-image npz, and the rows of the printed table."""

from __future__ import annotations

import io
import json

import numpy as np

from .run import json_ready

PER_IMAGE_KEYS = ("ssim", "mse", "psnr", "labels")  # the contract; extra arrays follow them


def json_bytes(result: dict) -> bytes:
    """``RUN/eval/<split>.json``: every number but the per-image arrays, strict JSON."""
    return (json.dumps(json_ready(result), indent=2, allow_nan=False) + "\n").encode()


def npz_bytes(result: dict) -> bytes:
    """``RUN/eval/<split>_per_image.npz``: ssim, mse, psnr, labels (-1 when unlabelled), elbo, recon, kl, nll ..."""
    per = result.get("per_image", {})
    arrays = {k: np.asarray(per[k]) for k in PER_IMAGE_KEYS if k in per}
    arrays.update({k: np.asarray(v) for k, v in per.items() if k not in arrays})
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _f(v, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def summary_rows(result: dict) -> list[tuple[str, str]]:
    """(quantity, value) rows for the CLI's table, in reading order."""
    loss, nll, rq = result["loss"], result["nll"], result["recon_quality"]
    rows = [
        ("images", f"{result['n_images']} ({result['split']} split)"),
        ("-ELBO (beta=1), nats/image", f"{_f(loss['elbo'])} = recon {_f(loss['recon'])} + KL {_f(loss['kl'])}"),
        (f"objective (beta={loss['beta']:g})", _f(loss["objective"])),
        ("bits/dim (ELBO)", _f(loss["bits_per_dim"], 4)),
        (f"NLL, IWAE k={nll['k']}", f"{_f(nll['nll'])} nats ({_f(nll['bits_per_dim'], 4)} bits/dim)"),
    ]
    for m, v in (nll.get("nll_at_k") or {}).items():  # smaller k from the same samples (--nll-also)
        rows.append((f"NLL, IWAE k={m}", f"{_f(v)} nats"))
    if nll.get("skipped"):  # a family without a bound to importance-sample (RAE, WAE, VQ)
        rows[1:5] = [("recon -log p(x|z), nats/image", _f(loss["recon"])), (f"objective (beta={loss['beta']:g})", _f(loss["objective"]))]
    vb = nll.get("vq_bound")
    if vb:
        rows.append(("VQ bound -log p(x|z_q) - log p(z_q)", f"{_f(vb['nll'])} nats ({_f(vb['bits_per_dim'], 4)} bits/dim; code prior {_f(vb['code_nll'])} nats)"))
    if "nll_binarized" in nll:
        rows.append(("NLL, binarized data", f"{_f(nll['nll_binarized'])} nats (ELBO {_f(nll['elbo_binarized'])})"))
        for m, v in (nll.get("nll_binarized_at_k") or {}).items():
            rows.append((f"NLL, binarized data, k={m}", f"{_f(v)} nats"))
    rows += [
        ("MSE per pixel / PSNR", f"{rq['mse']:.5f} / {_f(rq['psnr'])} dB"),
        ("SSIM (Gaussian 11x11 / 7x7 box)", f"{_f(rq['ssim'], 4)} / {_f(rq['ssim_box7'], 4)}" if "ssim_box7" in rq else _f(rq["ssim"], 4)),
        ("active units", f"{result['active_units']} of {result['latent_dim']}"),
    ]
    if "active_units_per_layer" in result:  # a stack of stochastic layers, bottom (z_1) first
        kls = (result.get("loss") or {}).get("kl_per_layer") or [None] * len(result["latent_dims"])
        per = ", ".join(
            f"z{i + 1}: {a} of {d}" + ("" if kl is None else f" (KL {kl:.2f})")
            for i, (a, d, kl) in enumerate(zip(result["active_units_per_layer"], result["latent_dims"], kls, strict=True))
        )
        rows.append(("active units per layer", per))
    fid = result.get("fid")
    if fid:
        fn = fid["feature_net"]
        acc = fn.get("test_accuracy")
        rows.append(("feature network", f"{fn.get('name')}" + (f" ({fn.get('held_out', 'test')} acc {acc:.4f})" if acc is not None else "")))
        if fid.get("temperature", 1.0) != 1.0:
            rows.append(("sampling temperature", f"{fid['temperature']:g} (z spread scaled; 1 is the sampler itself)"))
        prior = (result.get("model") or {}).get("prior", "normal")
        prior_label = {"normal": "prior N(0, I)", "mog": "prior (learned mixture)", "class": "prior p(z|y)", "vamp": "prior (VampPrior)"}.get(prior, "prior")
        if fid.get("prior_sampler"):
            prior_label = f"{fid['prior_sampler']} sampler"
        extra = tuple((name, f"{name.upper()} sampler") for name in (fid.get("samplers") or {}))  # --sampler maf, ...
        for key, label in (("prior", prior_label), ("gmm", f"GMM ({fid['gmm_components']} comp.)"), *extra, ("recon", "reconstructions")):
            rows.append(
                (f"FID {label}", f"{_f(fid[key])}  (precision {_f(fid['precision'][key], 3)}, recall {_f(fid['recall'][key], 3)})")
            )
    ca = result.get("conditional_accuracy")
    if ca:
        rows.append(("class-conditional accuracy", f"{ca['accuracy']:.4f} ({ca['n_per_class']} per class, z from the prior)"))
        if ca.get("gmm"):
            rows.append(("  ... z from a GMM per class", f"{ca['gmm']['accuracy']:.4f}"))
    return rows
