"""vaelab sweep: grid expansion, Optuna study state shared by workers, resume, results from the runs' own
files, search with pruning, and the bad inputs a user can give."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import yaml

from vaelab.errors import VaelabError
from vaelab.sweep import (
    build_plan,
    build_results,
    prepare_study,
    run_workers,
    steps,
    study_outputs,
    study_status,
)
from vaelab.sweep.study import Coordinator, is_stale, open_storage, trial_dir_state
from vaelab.train import Callback

SRC = Path(__file__).resolve().parents[1] / "src"

# each in-process trial writes a one-line report.html (conftest.fast_trial_reports): the subprocess sweeps
# below still build the full run report
pytestmark = pytest.mark.usefixtures("fast_trial_reports")


def tiny_yaml(tmp_path: Path, sweep: dict | None = None, epochs: int = 1, **extra) -> Path:
    """A study file whose trials train in about a second: 150 MNIST-sample digits of 3 classes."""
    data = {
        "name": "s",
        "out_dir": str(tmp_path / "runs"),
        "data": {"source": "mnist-sample", "classes": [1, 4, 8], "limit": 150},
        "model": {"hidden": [32], "latent_dim": 2},
        "train": {"epochs": epochs, "batch_size": 64, "log_every": 5, "images_every": 0, "save_latents": False},
        **extra,
    }
    if sweep is not None:
        data["sweep"] = sweep
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    from vaelab.cli import main

    try:
        main(["sweep", *args])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def fake_evaluate_run(run, split="test"):
    """Stands in for vaelab.evaluate.evaluate_run: real loss terms of the run, the contract's keys."""
    from vaelab.train import evaluate_terms

    data = run.data()
    if split is None:  # as evaluate_run: the test split, else val
        split = "test" if data.has_split("test") else "val"
    part = data.split(split)
    t = evaluate_terms(run.model, part.images, part.labels, run.config)
    return {
        "split": split, "checkpoint": str(run.checkpoint), "n_images": t["n"],
        "loss": {"elbo": t["elbo"], "objective": t["loss"], "recon": t["recon"], "kl": t["kl"], "bits_per_dim": 0.0},
        "nll": {"k": 1, "nll": t["elbo"]},
        "recon_quality": {"mse": 0.0, "psnr": 0.0, "ssim": 1.0 / (1.0 + t["recon"])},
        "fid": {"feature_net": "fake", "prior": 100.0 + t["kl"]},
    }


@pytest.fixture
def fake_steps(monkeypatch):
    """Fake evaluate / classify / report libraries (the real ones are written on other branches)."""
    mod = types.ModuleType("fake_vaelab_steps")
    mod.evaluate_run = fake_evaluate_run
    mod.classify_run = lambda run, method: {"method": method, "accuracy": 0.5 + run.model.latent_dim / 100}
    mod.build_report = lambda run: f"<html><body>{run.path.name}</body></html>"
    monkeypatch.setitem(sys.modules, "fake_vaelab_steps", mod)
    monkeypatch.setattr(steps, "EVALUATE", ("fake_vaelab_steps", "evaluate_run"))
    monkeypatch.setattr(steps, "CLASSIFY", ("fake_vaelab_steps", "classify_run"))
    monkeypatch.setattr(steps, "REPORT", ("fake_vaelab_steps", "build_report"))
    # the fake evaluation takes no FID, so the CLI's one-off feature network training (minutes) is faked too
    monkeypatch.setattr(steps, "train_feature_net", fake_train_feature_net)
    return mod


def fake_train_feature_net(spec: str, shape: tuple[int, int, int], progress=None):
    """Stands in for vaelab.sweep.steps.train_feature_net: trains and caches nothing."""
    from vaelab.evaluate.features import cache_path

    return types.SimpleNamespace(name="fake-net", path=cache_path(spec, shape))


# ---------------------------------------------------------------------------------------------------------
# plans


def test_grid_product_names_and_values():
    plan = build_plan(None, ["name=g"], grid=["model.beta=0.5,1,4", "model.hidden=[64],[128,64]"])
    names = [s.name for s in plan.trials()]
    assert len(names) == 6 and len(set(names)) == 6
    assert names[0] == "beta-0.5_hidden-64" and names[-1] == "beta-4_hidden-128x64"
    assert plan.trials()[-1].overrides == {"model.beta": 4, "model.hidden": [128, 64]}
    cfg = plan.trial_config(plan.trials()[-1].overrides, names[-1], "t")
    assert cfg.model.beta == 4.0 and cfg.model.hidden == [128, 64] and cfg.out_dir == "t"
    seeded = build_plan(None, ["name=g", "train.seed=5"], grid=["model.beta=1,2"], seeds=2)
    assert [(s.name, s.seed) for s in seeded.trials()] == [
        ("beta-1_seed0", 5), ("beta-1_seed1", 6), ("beta-2_seed0", 5), ("beta-2_seed1", 6)]
    assert seeded.trials()[1].overrides["train.seed"] == 6


def test_named_variants_from_yaml(tmp_path, fake_steps):
    path = tiny_yaml(tmp_path, {
        "evaluate": True,
        "variants": [
            {"name": "mlp-z2", "overrides": {}},
            {"name": "mlp-z3-b0.5", "overrides": {"model": {"latent_dim": 3, "beta": 0.5}}},
        ]})
    plan = build_plan(path)
    assert plan.evaluate and [s.name for s in plan.trials()] == ["mlp-z2", "mlp-z3-b0.5"]
    assert plan.trials()[1].overrides == {"model.latent_dim": 3, "model.beta": 0.5}  # nested -> dotted
    study = tmp_path / "study"
    prepare_study(plan, study)
    run_workers(plan, study, evaluate=plan.evaluate)
    res = build_results(plan, study, study_status(plan, study))
    assert [r["variant"] for r in res.rows] == ["mlp-z2", "mlp-z3-b0.5"]
    assert [(r["model.latent_dim"], r["model.beta"]) for r in res.rows] == [(2, 1.0), (3, 0.5)]
    assert "| trial | beta | latent_dim | status |" in res.markdown()  # variant names are the trial names
    # the sweep: section is popped before the config is parsed; its keys are checked
    bad = tiny_yaml(tmp_path, {"variant": []})
    with pytest.raises(VaelabError, match="did you mean 'sweep.variants'"):
        build_plan(bad)
    bad = tiny_yaml(tmp_path, {"variants": [{"name": "a", "overrides": {"model.latnt_dim": 3}}]})
    with pytest.raises(VaelabError, match="did you mean 'model.latent_dim'"):
        build_plan(bad)


def test_fashion_study_config_is_the_seed_study():
    plan = build_plan(Path(__file__).resolve().parents[1] / "configs" / "fashion-study.yaml")
    cfgs = {s.name: plan.trial_config(s.overrides, s.name, "t") for s in plan.trials()}
    assert list(cfgs) == ["mlp-z2-b1", "mlp-z2-b0.5", "mlp-z10", "conv-z2-b0.5", "cvae-z2", "mlp-z10-b0.5", "mlp-z10-b4"]
    assert (cfgs["conv-z2-b0.5"].model.arch, cfgs["conv-z2-b0.5"].model.beta) == ("conv", 0.5)
    assert cfgs["cvae-z2"].model.conditional and cfgs["mlp-z10-b4"].model.latent_dim == 10
    assert {c.data.source for c in cfgs.values()} == {"fashion-mnist"} and plan.evaluate


# ---------------------------------------------------------------------------------------------------------
# running studies


def test_grid_of_four_makes_four_runs_and_a_table_from_their_files(tmp_path, capsys, fake_steps):
    path = tiny_yaml(tmp_path)
    study = tmp_path / "runs" / "s"
    code, out, err = run_cli([str(path), "--grid", "model.beta=0.5,2", "--grid", "model.latent_dim=2,3",
                              "--evaluate", "--classify", "gmm", "-q"], capsys)
    assert code == 0, err
    trial_dirs = sorted(p.name for p in (study / "trials").iterdir())
    assert trial_dirs == ["beta-0.5_latent_dim-2", "beta-0.5_latent_dim-3", "beta-2_latent_dim-2", "beta-2_latent_dim-3"]
    rows = (study / "results.csv").read_text().splitlines()
    assert len(rows) == 5  # header + 4 trials
    plan = build_plan(path, grid=["model.beta=0.5,2", "model.latent_dim=2,3"])
    res = build_results(plan, study, study_status(plan, study))
    for row in res.rows:
        ev = json.loads(steps.eval_path(study / "trials" / row["trial"]).read_text())
        assert row["test_total"] == pytest.approx(ev["loss"]["objective"])
        assert row["fid"] == pytest.approx(ev["fid"]["prior"]) and row["status"] == "complete"
        assert row["accuracy_gmm"] == pytest.approx(0.5 + row["model.latent_dim"] / 100)
    assert len({r["test_total"] for r in res.rows}) == 4
    # the table reads the files: edit one and it changes
    first = steps.eval_path(study / "trials" / res.rows[0]["trial"])
    ev = json.loads(first.read_text())
    ev["loss"]["objective"] = 123.25
    first.write_text(json.dumps(ev))
    assert build_results(plan, study).rows[0]["test_total"] == 123.25
    md = (study / "results.md").read_text()
    assert "test total" in md and "accuracy (gmm)" in md and md.count("| beta-") == 4
    report = (study / "report.html").read_text()
    assert all(f"trials/{d}/report.html" in report for d in trial_dirs)  # each trial's own report, linked
    assert {p.name for p in (study / "figures").iterdir()} >= {"metric_vs_beta.png", "metric_vs_latent_dim.png", "traversals.png"}


def test_seeds_aggregate_mean_and_std(tmp_path):
    path = tiny_yaml(tmp_path)
    plan = build_plan(path, grid=["model.beta=1"], seeds=2)
    study = tmp_path / "study"
    prepare_study(plan, study)
    run_workers(plan, study)
    status = study_status(plan, study)
    res = build_results(plan, study, status)
    assert [r["trial"] for r in res.rows] == ["beta-1_seed0", "beta-1_seed1"]
    vals = [r["val_loss"] for r in res.rows]
    assert vals[0] != vals[1]  # different seeds, different runs
    (summary,) = res.summary
    assert summary["n"] == 2 and summary["val_loss"] == pytest.approx(sum(vals) / 2)
    assert summary["val_loss_std"] == pytest.approx(abs(vals[0] - vals[1]) / 2**0.5)
    assert "Mean ± std over 2 seeds" in res.markdown() and " ± " in res.markdown()
    files = study_outputs(plan, study, status)
    assert "results_summary.csv" in files and b"val_loss_std" in files["results_summary.csv"]


def test_finished_study_gets_missing_evaluations(tmp_path, capsys, fake_steps):
    path = tiny_yaml(tmp_path)
    args = [str(path), "--grid", "model.beta=1,2", "-q"]
    assert run_cli(args, capsys)[0] == 0
    trials = tmp_path / "runs" / "s" / "trials"
    assert not list(trials.glob("*/eval/*.json"))
    code, out, err = run_cli(args + ["--evaluate"], capsys)  # same study: nothing retrained, both evaluated
    assert code == 0, err
    assert len(list(trials.glob("*/eval/*.json"))) == 2 and len(list(trials.glob("*/report.html"))) == 2
    assert "test total" in (tmp_path / "runs" / "s" / "results.md").read_text()


class _SignalAt(Callback):
    """Sends this process SIGINT after an epoch, as Ctrl-C would: fit checkpoints and stops."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, ctx, row):
        if row["epoch"] == self.epoch:
            os.kill(os.getpid(), signal.SIGINT)


def test_interrupted_study_resumes_and_skips_finished_trials(tmp_path):
    from vaelab.train import TrainingInterrupted

    path = tiny_yaml(tmp_path, epochs=3)
    plan = build_plan(path, grid=["model.latent_dim=2,3,4"])
    study = tmp_path / "study"
    prepare_study(plan, study)
    first, second, third = (study / "trials" / s.name for s in plan.trials())
    with pytest.raises(TrainingInterrupted, match="run the same vaelab sweep command again"):
        run_workers(plan, study, extra_callbacks=lambda key: [_SignalAt(1)] if key == second.name else [])
    status = study_status(plan, study)
    assert [status[d.name]["state"] for d in (first, second, third)] == ["complete", "interrupted", "waiting"]
    assert trial_dir_state(second, 3)[0] == "partial"
    done_ckpt = (first / "checkpoints" / "last.ckpt").stat().st_mtime_ns

    outcomes = run_workers(plan, study)  # "start it again"
    assert [o["trial"] for o in outcomes] == [second.name, third.name]  # the finished one is skipped
    assert (first / "checkpoints" / "last.ckpt").stat().st_mtime_ns == done_ckpt
    assert json.loads((second / "sweep.json").read_text())["resumed_from_epoch"] == 1
    assert [json.loads(ln)["epoch"] for ln in (second / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert all(v["state"] == "complete" for v in study_status(plan, study).values())
    # a prepared-again study queues nothing new
    assert prepare_study(plan, study)["enqueued"] == 0


def test_dead_worker_trial_is_detected_and_rerun(tmp_path):
    """A trial claimed by a process that died (SIGKILL) is failed as stale and run again."""
    path = tiny_yaml(tmp_path)
    plan = build_plan(path, grid=["model.beta=1,2"])
    study = tmp_path / "study"
    prepare_study(plan, study)
    store = open_storage(f"sqlite:///{study / 'study.db'}")
    coord = Coordinator(plan, study, store)
    trial, key = coord.claim()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    from vaelab.sweep.study import WORKER, worker_identity

    store.set_trial_user_attr(trial._trial_id, WORKER, {**worker_identity(), "pid": int(dead.stdout)})
    frozen = store.get_trial(trial._trial_id)
    assert is_stale(frozen, grace_s=300)
    other_machine = {"host": "elsewhere", "boot": "x", "pid": 1}
    store.set_trial_user_attr(trial._trial_id, WORKER, other_machine)
    store.set_trial_user_attr(trial._trial_id, "heartbeat", time.time())
    assert not is_stale(store.get_trial(trial._trial_id), grace_s=300)  # beating elsewhere: alive
    assert is_stale(store.get_trial(trial._trial_id), grace_s=300, now=time.time() + 301)  # silent: stale
    store.set_trial_user_attr(trial._trial_id, WORKER, {**worker_identity(), "pid": int(dead.stdout)})
    outcomes = run_workers(plan, study)
    assert sorted(o["trial"] for o in outcomes) == sorted(s.name for s in plan.trials())
    attempts = coord.by_key()[key]
    assert sorted(t.user_attrs.get("status", "complete") for t in attempts) == ["complete", "stale"]


def test_grid_queued_twice_still_runs_each_trial_once(tmp_path):
    """Two workers that start at once on separate machines may both queue the grid: the copies are
    dropped as duplicates when claimed."""
    path = tiny_yaml(tmp_path)
    plan = build_plan(path, grid=["model.beta=1,2"])
    study = tmp_path / "study"
    prepare_study(plan, study)
    coord = Coordinator(plan, study, open_storage(f"sqlite:///{study / 'study.db'}"))
    for spec in plan.trials():
        coord._enqueue(spec.name)  # the second worker's copy of the grid
    outcomes = run_workers(plan, study)
    assert sorted(o["trial"] for o in outcomes) == sorted(s.name for s in plan.trials())
    states = sorted((t.user_attrs["key"], t.state.name, t.user_attrs.get("status")) for t in coord.all_trials())
    assert states == [("beta-1", "COMPLETE", None), ("beta-1", "FAIL", "duplicate"),
                      ("beta-2", "COMPLETE", None), ("beta-2", "FAIL", "duplicate")]


def test_search_runs_three_trials_and_prunes_nothing_within_warmup(tmp_path):
    path = tiny_yaml(tmp_path, {"search": {"prune_warmup": 5, "prune_startup": 1}}, epochs=2)
    plan = build_plan(path, search=True, trials=3)
    assert set(plan.search["space"]) == {"train.lr", "model.beta", "model.latent_dim"}
    study = tmp_path / "study"
    prepare_study(plan, study)
    outcomes = run_workers(plan, study)
    assert [o["status"] for o in outcomes] == ["complete"] * 3
    status = study_status(plan, study)
    assert sorted(status) == ["trial-000", "trial-001", "trial-002"]
    res = build_results(plan, study, status)
    for r in res.rows:
        assert 1e-4 <= r["train.lr"] <= 1e-2 and 2 <= r["model.latent_dim"] <= 32 and r["epochs"] == 2
        epochs = [json.loads(ln) for ln in (study / "trials" / r["trial"] / "metrics.jsonl").read_text().splitlines()]
        assert r["objective"] == pytest.approx(min(m["val/recon"] + m["val/kl"] for m in epochs), rel=1e-5)
    assert len({r["train.lr"] for r in res.rows}) == 3  # the sampler proposed three configs
    assert run_workers(plan, study) == []  # all 3 done: a second run adds none


def test_prune_callback_reports_and_raises():
    import optuna

    from vaelab.sweep.study import PruneCallback

    class Trial:
        def __init__(self, prune):
            self.prune, self.reported = prune, []

        def report(self, value, step):
            self.reported.append((step, value))

        def should_prune(self):
            return self.prune

    keep = Trial(False)
    # the objective is the validation -ELBO (recon + KL), not the beta-weighted training loss
    PruneCallback(keep).on_epoch_end(None, {"epoch": 1, "val/loss": 9.0, "val/elbo": 10.0, "train/elbo": 12.0})
    assert keep.reported == [(1, 10.0)]
    with pytest.raises(optuna.TrialPruned):
        PruneCallback(Trial(True)).on_epoch_end(None, {"epoch": 2, "train/elbo": 12.0})


@pytest.mark.slow
def test_worker_processes_share_one_sqlite_study(tmp_path):
    path = tiny_yaml(tmp_path)
    study = tmp_path / "runs" / "s"
    cmd = [sys.executable, "-m", "vaelab", "sweep", str(path), "--grid", "model.beta=0.5,2",
           "--grid", "model.latent_dim=2,3", "--worker"]
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    # two commands at once: one worker, and one with two worker processes (--jobs 2)
    procs = [subprocess.Popen(cmd + extra, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for extra in ([], ["--jobs", "2"])]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    started = [ln.split(":")[0].removeprefix("trial ") for out in outs for ln in out.splitlines() if ": training (" in ln]
    assert len(started) == 4 and len(set(started)) == 4, outs  # every trial trained once, by one of the 3 workers
    assert len(list((study / "trials").iterdir())) == 4
    plan = build_plan(path, grid=["model.beta=0.5,2", "model.latent_dim=2,3"])
    coord = Coordinator(plan, study, open_storage(f"sqlite:///{study / 'study.db'}"))
    complete = [t.user_attrs["key"] for t in coord.all_trials() if t.state.name == "COMPLETE"]
    assert sorted(complete) == sorted(s.name for s in plan.trials())
    for d in (study / "trials").iterdir():
        assert len((d / "metrics.jsonl").read_text().splitlines()) == 1


@pytest.mark.slow
def test_killed_sweep_restarts_skipping_finished_trials(tmp_path):
    path = tiny_yaml(tmp_path, epochs=4)
    study = tmp_path / "runs" / "s"
    cmd = [sys.executable, "-m", "vaelab", "sweep", str(path), "--grid", "model.latent_dim=2,3,4"]
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    first, second = study / "trials" / "latent_dim-2", study / "trials" / "latent_dim-3"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 240
    while time.time() < deadline and not (second / "checkpoints" / "last.ckpt").is_file():
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no chance to clean up
    proc.communicate()
    assert json.loads((first / "sweep.json").read_text())["status"] == "complete"
    state, loop = trial_dir_state(second, 4)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "trial latent_dim-2:" not in out.stdout  # finished: skipped
    if state == "partial":
        assert f"trial latent_dim-3: resuming from epoch {loop['epoch']}" in out.stdout
    assert (study / "results.csv").read_text().count(",complete,") == 3


# ---------------------------------------------------------------------------------------------------------
# PostgreSQL: workers on several machines share one study through a database server


def _postgres_bin(name: str) -> str | None:
    """A PostgreSQL server program on PATH or in Debian's /usr/lib/postgresql/<version>/bin."""
    import shutil

    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: p.parts[-3].zfill(4))
    return str(versions[-1]) if versions else None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url(tmp_path):
    """A throwaway PostgreSQL cluster on a free local port; yields its URL and stops it afterwards.

    PostgreSQL refuses to run as root, so as root (CI) the server runs as the `postgres` user via
    runuser, in a /tmp folder that user owns (pytest's tmp_path is private to root)."""
    import pwd
    import shutil
    import tempfile

    pytest.importorskip("psycopg", reason="the PostgreSQL driver is not installed (pip install 'psycopg[binary]')")
    initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("no PostgreSQL server programs (initdb, pg_ctl): apt-get install postgresql")
    prefix: list[str] = []
    base = tmp_path / "pg"
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        if shutil.which("runuser") is None:
            pytest.skip("running as root and there is no runuser to start the server as 'postgres'")
        prefix = ["runuser", "-u", "postgres", "--"]
        base = Path(tempfile.mkdtemp(prefix="vaelab-pg-"))
        os.chown(base, user.pw_uid, user.pw_gid)
    else:
        base.mkdir()
    port = _free_port()
    data = base / "data"
    run = lambda *args: subprocess.run(prefix + list(args), capture_output=True, text=True, timeout=120, cwd=base)  # noqa: E731
    try:
        out = run(initdb, "-D", str(data), "-U", "vaelab", "-A", "trust", "-E", "UTF8", "--no-sync")
        assert out.returncode == 0, out.stdout + out.stderr
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
        out = run(pg_ctl, "-D", str(data), "-l", str(base / "server.log"), "-w", "-t", "60", "-o", options, "start")
        assert out.returncode == 0, out.stdout + out.stderr + (base / "server.log").read_text(errors="replace")
        yield f"postgresql://vaelab@127.0.0.1:{port}/postgres"
    finally:
        run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
        if prefix:
            shutil.rmtree(base, ignore_errors=True)


def test_postgresql_url_gets_an_installed_driver(monkeypatch):
    """postgresql:// means psycopg2 in SQLAlchemy 2.0: without it the URL names psycopg 3; with no driver
    at all the error says what to install."""
    from vaelab.sweep import study

    monkeypatch.setattr(study, "_importable", lambda m: m == "psycopg")
    assert study.engine_url("postgresql://u:p@db:5432/s") == "postgresql+psycopg://u:p@db:5432/s"
    assert study.engine_url("postgresql+psycopg2://u@db/s") == "postgresql+psycopg2://u@db/s"  # named: kept
    assert study.engine_url("sqlite:///x.db") == "sqlite:///x.db"
    monkeypatch.setattr(study, "_importable", lambda m: m in ("psycopg", "psycopg2"))
    assert study.engine_url("postgresql://u@db/s") == "postgresql://u@db/s"  # SQLAlchemy's own default
    monkeypatch.setattr(study, "_importable", lambda m: False)
    for module in ("psycopg", "psycopg2"):
        monkeypatch.setitem(sys.modules, module, None)  # importing it fails, as when it is not installed
    with pytest.raises(VaelabError, match=r"driver is missing.*pip install 'psycopg\[binary\]'") as e:
        open_storage("postgresql://u:secret@127.0.0.1:1/db")
    assert "secret" not in str(e.value)


def test_trials_run_on_another_machine_leave_rows_without_numbers(tmp_path, fake_steps):
    """Workers with their own study directory (another machine) keep their trial folders: the
    coordinator's outputs list those trials with their planned values instead of failing on them."""
    from vaelab.sweep import finish_steps

    path = tiny_yaml(tmp_path)
    plan = build_plan(path, grid=["model.beta=1,2"])
    study = tmp_path / "study"
    prepare_study(plan, study)
    run_workers(plan, study)
    elsewhere = study / "trials" / "beta-2"
    elsewhere.rename(tmp_path / "beta-2")  # as if a worker on another machine had trained it
    status = study_status(plan, study)
    assert status["beta-2"]["state"] == "complete"
    assert finish_steps(plan, study, status, True, ["gmm"]) == []  # nothing to evaluate here, no error
    assert (study / "trials" / "beta-1" / "eval").is_dir() and not elsewhere.exists()
    files = study_outputs(plan, study, status)
    rows = {r["trial"]: r for r in build_results(plan, study, status).rows}
    assert rows["beta-2"]["model.beta"] == 2.0 and rows["beta-2"]["status"] == "complete"
    assert "val_loss" not in rows["beta-2"] and "val_loss" in rows["beta-1"]
    assert b"beta-2,2.0,complete," in files["results.csv"]


@pytest.mark.slow
def test_two_workers_share_one_postgresql_study(tmp_path, postgres_url, capsys):
    """Two `--worker` processes started at once on a new PostgreSQL database (they create its tables
    together) run a 4-trial grid, each trial exactly once; the coordinator then trains nothing again and
    writes the results."""
    path = tiny_yaml(tmp_path)
    study = tmp_path / "runs" / "s"
    grid = ["--grid", "model.beta=1,2", "--grid", "model.latent_dim=2,3"]
    cmd = [sys.executable, "-m", "vaelab", "sweep", str(path), *grid, "--storage", postgres_url, "--worker"]
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    started = [ln.split(":")[0].removeprefix("trial ") for out in outs for ln in out.splitlines() if ": training (" in ln]
    plan = build_plan(path, grid=["model.beta=1,2", "model.latent_dim=2,3"])
    names = sorted(s.name for s in plan.trials())
    assert sorted(started) == names, outs  # every trial trained once, by one of the workers
    assert sorted(p.name for p in (study / "trials").iterdir()) == names
    pids = {p.pid for p in procs}
    coord = Coordinator(plan, study, open_storage(postgres_url))
    complete = {t.user_attrs["key"]: t.number for t in coord.all_trials() if t.state.name == "COMPLETE"}
    assert sorted(complete) == names and len(complete) == len(names)  # one COMPLETE attempt per key
    other = [(t.state.name, t.user_attrs.get("status")) for t in coord.all_trials() if t.state.name != "COMPLETE"]
    assert all(o == ("FAIL", "duplicate") for o in other), other  # only copies of a grid queued twice
    mtimes = {}
    for name in names:
        run_dir = study / "trials" / name
        assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1
        info = json.loads((run_dir / "sweep.json").read_text())
        assert info["status"] == "complete" and info["worker"]["pid"] in pids
        assert info["optuna_number"] == complete[name]
        mtimes[name] = (run_dir / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    assert "postgresql://vaelab@127.0.0.1" in json.loads((study / "study.json").read_text())["storage"]

    code, out, err = run_cli([str(path), *grid, "--storage", postgres_url], capsys)  # the coordinator
    assert code == 0, err
    assert "(4 done, 0 queued" in " ".join(out.split()) and "training (" not in out  # finished: skipped
    assert all((study / "trials" / n / "checkpoints" / "last.ckpt").stat().st_mtime_ns == mtimes[n] for n in names)
    rows = (study / "results.csv").read_text().splitlines()
    assert len(rows) == 5 and sum(",complete," in r for r in rows) == 4
    assert (study / "results.md").is_file()


# ---------------------------------------------------------------------------------------------------------
# bad input


def test_bad_grid_key_and_empty_values(tmp_path, capsys):
    path = tiny_yaml(tmp_path)
    code, _, err = run_cli([str(path), "--grid", "model.betta=1,2"], capsys)
    assert code == 2 and "unknown config key 'model.betta' in --grid" in err and "did you mean 'model.beta'" in err
    code, _, err = run_cli([str(path), "--grid", "model.beta="], capsys)
    assert code == 2 and "empty value list" in err
    code, _, err = run_cli([str(path), "--grid", "model.beta=1", "--grid", "model.beta=2"], capsys)
    assert code == 2 and "twice" in err
    code, _, err = run_cli([str(path), "--grid", "model.beta=-1,1"], capsys)
    assert code == 2 and "trial beta--1: 'model.beta' is -1.0" in err
    code, _, err = run_cli([str(path), "--grid", "name=a,b"], capsys)
    assert code == 2 and "cannot be varied" in err
    assert not (tmp_path / "runs").exists()  # nothing started


def test_unreachable_storage_starts_nothing(tmp_path, capsys):
    path = tiny_yaml(tmp_path)
    for url in ("sqlite:////nonexistent-dir/x/study.db", "postgresql://u:secret@127.0.0.1:1/db", "not a url"):
        code, _, err = run_cli([str(path), "--grid", "model.beta=1,2", "--storage", url], capsys)
        assert code == 2 and ("cannot reach" in err or "driver is missing" in err or "not a database URL" in err), err
        assert "secret" not in err  # passwords are masked
    assert not (tmp_path / "runs").exists()


def test_study_dir_of_another_config_is_refused_unless_forced(tmp_path, capsys, fake_steps):
    from vaelab.config import save_config

    path = tiny_yaml(tmp_path)
    study = tmp_path / "study"
    plan = build_plan(path, grid=["model.beta=1,2"])
    prepare_study(plan, study)
    old = plan.trials()[0]
    (study / "trials" / old.name).mkdir()
    save_config(plan.trial_config(old.overrides, old.name, study / "trials"), study / "trials" / old.name / "config.yaml")
    other = build_plan(path, ["train.lr=0.01"], grid=["model.beta=1,2"])
    with pytest.raises(VaelabError, match=r"created by another config \(differs in: train.lr\)"):
        prepare_study(other, study)
    code, _, err = run_cli([str(path), "train.lr=0.01", "--grid", "model.beta=1,2", "--study-dir", str(study)], capsys)
    assert code == 2 and "--force" in err
    info = prepare_study(other, study, force=True)
    assert info["moved_aside"] == [old.name]  # the old run is kept, set aside
    assert list((study / "replaced").glob(f"*/{old.name}/config.yaml"))
    assert json.loads((study / "study.json").read_text())["fingerprint"] == other.fingerprint()
    # a folder that is not a study
    (tmp_path / "notastudy").mkdir()
    (tmp_path / "notastudy" / "x.txt").write_text("x")
    with pytest.raises(VaelabError, match="not a vaelab study"):
        prepare_study(plan, tmp_path / "notastudy")


def test_missing_step_library_fails_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(steps, "EVALUATE", ("vaelab.evaluate", "no_such_function"))
    path = tiny_yaml(tmp_path)
    code, _, err = run_cli([str(path), "--grid", "model.beta=1,2", "--evaluate"], capsys)
    assert code == 2 and "--evaluate needs vaelab.evaluate.no_such_function" in err
    monkeypatch.setattr(steps, "CLASSIFY", ("vaelab.no_such_module", "classify_run"))
    with pytest.raises(VaelabError, match="--classify needs vaelab.no_such_module.classify_run"):
        steps.check_available(False, ["gmm"])
    assert not (tmp_path / "runs").exists()


def test_conditional_accuracy_reaches_the_results_table(tmp_path):
    """eval/test.json keeps the conditional model's sample accuracy in a dict (accuracy, per_class, gmm, ...):
    its accuracy must reach the cond_acc column of results.csv and results.md (issue 27, item 1)."""
    from vaelab.sweep.results import Column, Results, trial_row

    run_dir = tmp_path / "cvae-z2"
    (run_dir / "eval").mkdir(parents=True)
    ev = {"loss": {"objective": 250.0}, "conditional_accuracy": {"accuracy": 0.875, "per_class": {"0": 0.9},
                                                                 "gmm": {"accuracy": 0.5}}}
    (run_dir / "eval" / "test.json").write_text(json.dumps(ev))
    row = trial_row(run_dir, [], [])
    assert row["cond_acc"] == pytest.approx(0.875)
    res = Results([{"trial": "cvae-z2", **row}], [Column("trial", "trial"), Column("cond_acc", "cond. acc.", ".3f", True)])
    assert "cond. acc." in res.markdown() and "0.875" in res.markdown()
    assert res.csv().splitlines()[1].endswith(",0.875")
