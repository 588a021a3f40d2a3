"""trainer.threads (issue 26): torch's CPU threads per process, automatic or set."""

from __future__ import annotations

import torch

from conftest import tiny_config
from vaelab.threads import physical_cores, resolve_threads


def test_resolve_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = physical_cores()
    assert cores >= 1
    assert resolve_threads(3) == 3  # set: taken as given
    assert resolve_threads(0) == cores
    assert resolve_threads(0, ranks_per_machine=2) == max(1, cores // 2)  # split among DDP ranks
    assert resolve_threads(0, ranks_per_machine=10_000) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert resolve_threads(0) == 1  # the usual pin is honoured by the automatic choice


def test_fit_applies_and_reports_threads(tmp_path):
    from vaelab.config import load_config
    from vaelab.errors import VaelabError
    from vaelab.train import fit

    before = torch.get_num_threads()
    try:
        out = fit(tiny_config(tmp_path, "train.epochs=1", "data.limit=60", "trainer.threads=2"), quiet=True)
        assert out["threads"] == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    try:
        load_config(None, ["trainer.threads=-1"])
        from vaelab.config import validate

        validate(load_config(None, ["trainer.threads=-1"]))
    except VaelabError as e:
        assert "threads" in str(e)
    else:
        raise AssertionError("trainer.threads=-1 was accepted")
