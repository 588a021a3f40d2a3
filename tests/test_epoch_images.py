"""The per-epoch grids in RUN/images/ say which epoch they show and which rows are inputs (issue 27 item 15)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from conftest import tiny_config


def test_epoch_grids_are_titled_and_their_rows_labelled(tmp_path, tiny_idx_dir):
    from vaelab.train import fit

    run = Path(fit(tiny_config(tmp_path, f"data.source=idx:{tiny_idx_dir}", "data.classes=null", "train.epochs=2"), quiet=True)["run_dir"])
    recon = Image.open(run / "images" / "recon_epoch_2.png")
    samples = Image.open(run / "images" / "samples_epoch_2.png")
    assert recon.text["Title"].startswith("epoch 2: val inputs")
    assert samples.text["Title"].startswith("epoch 2: samples from the prior")
    grid_height = 2 * 10 + 2  # inputs and reconstructions of 8 px with 2-px gaps, drawn 4x as large
    assert recon.height >= 4 * grid_height + 20  # and a title band above
    gray = np.asarray(recon.convert("L"))
    assert (gray[:14] < 128).sum() > 40  # the title band has text
    assert (gray[20:, :30] < 128).sum() > 40  # the row labels ('input', 'recon') are drawn


def test_labelled_png_never_cuts_a_long_title():
    from vaelab.visualize.grid import labelled_png, make_grid

    grid = make_grid(np.zeros((4, 1, 8, 8), np.uint8), nrow=4)
    title = "epoch 12: val inputs, each row above its reconstructions"
    img = Image.open(__import__("io").BytesIO(labelled_png(grid, title, [(2, 10, "input")], columns=[(2, 10, "cat")], scale=2)))
    assert img.width > 300 > 2 * grid.shape[1]  # widened for the title, not the images
    assert img.text["Title"] == title


def test_conditional_samples_show_one_labelled_row_per_class(tiny_conditional_run):
    samples = Image.open(tiny_conditional_run / "images" / "samples_epoch_2.png")
    assert "one row per class" in samples.text["Title"]
    assert samples.height < samples.width  # 3 rows of 16, not 22 rows of 3
