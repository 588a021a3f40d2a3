"""train.keep_checkpoints: per-epoch checkpoints beside last/best (the landscape seed saved every epoch)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import tiny_config
from vaelab.errors import VaelabError


def names(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def test_keep_the_newest_n_epoch_checkpoints(tmp_path):
    from vaelab import load_run
    from vaelab.train import fit
    from vaelab.train.checkpoint import load_checkpoint

    run = Path(fit(tiny_config(tmp_path, "train.epochs=4", "train.keep_checkpoints=2"), quiet=True)["run_dir"])
    assert names(run) == ["best.ckpt", "epoch_3.ckpt", "epoch_4.ckpt", "last.ckpt"]
    last, epoch4, epoch3 = (load_checkpoint(run / "checkpoints" / n) for n in ("last.ckpt", "epoch_4.ckpt", "epoch_3.ckpt"))
    assert epoch4["epoch"] == 4 and epoch3["epoch"] == 3
    assert all(torch.equal(last["model"][k], epoch4["model"][k]) for k in last["model"])
    assert not all(torch.equal(epoch3["model"][k], epoch4["model"][k]) for k in last["model"])
    assert load_run(run, checkpoint="epoch_3").epoch == 3  # any command's --checkpoint takes the name
    assert not list((run / "checkpoints").glob(".*"))  # no temp files left behind


def test_keep_all_and_the_default_keeps_none(tmp_path):
    from vaelab.train import fit

    run = Path(fit(tiny_config(tmp_path, "train.epochs=3", "train.keep_checkpoints=all"), quiet=True)["run_dir"])
    assert names(run) == ["best.ckpt", "epoch_1.ckpt", "epoch_2.ckpt", "epoch_3.ckpt", "last.ckpt"]
    run = Path(fit(tiny_config(tmp_path / "b", "train.epochs=2"), quiet=True)["run_dir"])
    assert names(run) == ["best.ckpt", "last.ckpt"]


@pytest.mark.parametrize("value", ["some", "-1", "1.5"])
def test_bad_keep_checkpoints_is_one_clear_error(tmp_path, value):
    with pytest.raises(VaelabError, match="keep_checkpoints"):
        tiny_config(tmp_path, f"train.keep_checkpoints={value}")
