"""Study state in an Optuna study, and the workers that share out its trials.

    STUDY/
      study.json        the plan and its fingerprint (a study directory belongs to one config)
      study.db          the Optuna study (SQLite), unless --storage names another database
      trials/<name>/    one ordinary run directory per trial (+ sweep.json: which worker ran it, status)

How trials are shared out, each run exactly once, by any number of workers on any number of machines:

- Every grid point has a key (its trial name). The queue is Optuna's: a point to run is a WAITING
  trial carrying its key as a user attribute. A worker claims one by moving it WAITING -> RUNNING, which
  the storage does atomically (a row lock in PostgreSQL/MySQL; for SQLite, whose reads are not locked,
  all claims also go through an flock on STUDY/.sweep.lock).
- Two workers starting at once may both enqueue the grid. So a claimed trial is dropped (FAIL, status
  ``duplicate``) when its key is already done, or is held by a lower-numbered trial that is waiting or
  alive: for each key only the lowest live trial ever runs, whatever the timing.
- A running trial is alive while its worker beats (a ``heartbeat`` time in its user attributes, every
  ``heartbeat_s``) and, on the worker's own machine, while its process exists. A dead worker's trial is
  failed (status ``stale``, by whichever worker wins that state change) and its key queued again; the
  new attempt resumes the run directory from ``checkpoints/last.ckpt``.
- Ctrl-C / SIGTERM: the running fit saves a checkpoint and stops; the trial is failed with status
  ``interrupted`` and queued again, so the next `vaelab sweep` (or another live worker) resumes it.
  Finished trials are COMPLETE and never claimed again.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import load_yaml, to_dict
from ..errors import VaelabError
from ..run import CHECKPOINTS, CONFIG_FILE
from ..train.callbacks import Callback
from . import steps
from .grid import StudyPlan, config_differences, key_type

STUDY_FILE = "study.json"
DB_FILE = "study.db"
TRIALS_DIR = "trials"
LOCK_FILE = ".sweep.lock"
TRIAL_FILE = "sweep.json"  # in each trial directory
REPLACED_DIR = "replaced"
FORMAT = "vaelab-study-1"

# user attributes of the Optuna trials
KEY, STATUS, WORKER, HEARTBEAT, OVERRIDES, ERROR = "key", "status", "worker", "heartbeat", "overrides", "error"

# Config keys that may differ between a trial directory and the trial that reuses it: bookkeeping,
# devices, sizes filled in from the data, and train.epochs (a longer study continues the runs).
REUSE_IGNORE = (
    "name", "out_dir", "trainer", "train.epochs", "train.log_every", "train.images_every",
    "train.save_latents", "train.eval_batch_size", "train.keep_checkpoints", "model.image_size", "model.channels", "model.num_classes",
    "train.logger", "train.logger_project",
)


# ---------------------------------------------------------------------------------------------------------
# storage


def default_storage(study_dir: str | Path) -> str:
    return f"sqlite:///{(Path(study_dir) / DB_FILE).resolve()}"


def mask_url(url: str) -> str:
    """The URL with its password hidden (for messages and study.json)."""
    try:
        import sqlalchemy

        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def engine_url(url: str) -> str:
    """The URL SQLAlchemy opens: a bare ``postgresql://`` gets an installed driver.

    SQLAlchemy 2.0 maps ``postgresql://`` to psycopg2 and 2.1 to psycopg (3); we install psycopg 3
    ('psycopg[binary]', the sweep extra), so without psycopg2 the URL names psycopg explicitly. A URL
    that names its driver (``postgresql+psycopg2://``, ``postgresql+asyncpg://``) is left alone.
    """
    import sqlalchemy

    parsed = sqlalchemy.engine.make_url(url)
    if parsed.drivername == "postgresql" and not _importable("psycopg2") and _importable("psycopg"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


# Errors of two processes creating Optuna's tables at once (PostgreSQL reports a clash in its catalog as
# a unique violation on pg_type); the loser retries and finds the tables made.
_CREATE_RACE = ("already exists", "duplicate key", "unique constraint", "pg_type_typname_nsp_index")
_SCHEMA_LOCK_KEY = 0x7661656C6162  # "vaelab": any fixed 64-bit number, the same in all workers


@contextlib.contextmanager
def _schema_lock(url: str, backend: str, kwargs: dict):
    """PostgreSQL: hold an advisory lock while Optuna creates or checks its tables, so that workers
    starting at once on a new database take turns instead of colliding. Elsewhere: nothing (retries)."""
    if backend != "postgresql":
        yield
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, connect_args=kwargs["connect_args"])
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _SCHEMA_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _SCHEMA_LOCK_KEY})
    finally:
        engine.dispose()


def open_storage(url: str):
    """An Optuna RDBStorage for a database URL, or a clear error when it cannot be reached."""
    import optuna
    import sqlalchemy

    try:
        backend = sqlalchemy.engine.make_url(url).get_backend_name()
        target = engine_url(url)
    except Exception:
        raise VaelabError(f"--storage '{url}' is not a database URL", "use sqlite:///PATH.db or postgresql://USER:PASS@HOST/DB") from None
    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        kwargs["connect_args"] = {"timeout": 60}  # wait for other workers' writes instead of failing
    elif backend in ("postgresql", "mysql"):
        kwargs["connect_args"] = {"connect_timeout": 10}
        kwargs["pool_pre_ping"] = True
    for attempt in range(6):
        try:
            with _schema_lock(target, backend, kwargs):
                return optuna.storages.RDBStorage(target, engine_kwargs=kwargs)
        except ImportError as e:
            hint = "pip install the module named above, or name an installed driver in the URL"
            if backend == "postgresql":
                hint = ("pip install 'psycopg[binary]' (in vaelab's sweep extra; a plain postgresql:// URL then "
                        "uses it as postgresql+psycopg://), or install the driver that the URL names")
            raise VaelabError(
                f"cannot open the study storage {mask_url(url)}: its database driver is missing ({e.__cause__ or e})",
                hint,
            ) from None
        except Exception as e:
            text = str(getattr(e, "orig", None) or e).strip().splitlines()[0][:200]
            if any(s in text.lower() for s in _CREATE_RACE) and attempt < 5:  # workers created the tables at once
                time.sleep(0.3 * (attempt + 1))
                continue
            raise VaelabError(
                f"cannot reach the study storage {mask_url(url)}: {text}",
                "check the URL, that the database server is up and reachable from here, and the credentials",
            ) from None
    raise AssertionError("unreachable")


@contextlib.contextmanager
def study_lock(study_dir: str | Path):
    """An exclusive flock on STUDY/.sweep.lock around claims and enqueues (SQLite has no row locks)."""
    import fcntl

    fd = os.open(Path(study_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass  # a filesystem without locks: the database's own atomic claims still hold
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------------------
# the study directory


def read_study_file(study_dir: str | Path) -> dict | None:
    path = Path(study_dir) / STUDY_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise VaelabError(f"{path} is damaged (not JSON)", "restore it, or start a new study with --study-dir") from None


def _check_study_dir(study_dir: Path, plan: StudyPlan, force: bool) -> None:
    """Refuse a directory made by another config, or one that is not a study, unless forced."""
    if force or not study_dir.exists():
        return
    if not study_dir.is_dir():
        raise VaelabError(f"study directory {study_dir} is a file", "choose another --study-dir")
    meta = read_study_file(study_dir)
    if meta is None:
        if not _being_created(study_dir):
            raise VaelabError(
                f"{study_dir} exists and is not a vaelab study (no {STUDY_FILE})",
                "choose another --study-dir, or --force to use it anyway",
            )
        return
    if meta.get("fingerprint") != plan.fingerprint():
        diff = config_differences(meta.get("plan_identity", {}), plan.identity())
        what = ", ".join(d.removeprefix("base.") for d in diff[:6]) + (" ..." if len(diff) > 6 else "")
        raise VaelabError(
            f"study directory {study_dir} was created by another config (differs in: {what or 'the plan'})",
            "use another --study-dir, or --force to reuse it (trials of another config are moved to "
            f"{study_dir / REPLACED_DIR})",
        )


def _being_created(study_dir: Path) -> bool:
    """Empty, or only what `prepare_study` makes before study.json (another worker is creating it)."""
    scaffold = {TRIALS_DIR, LOCK_FILE, DB_FILE, DB_FILE + "-journal", DB_FILE + "-wal", DB_FILE + "-shm"}
    entries = list(study_dir.iterdir())
    trials = study_dir / TRIALS_DIR
    return all(p.name in scaffold for p in entries) and (not trials.is_dir() or not any(trials.iterdir()))


def _set_aside(study_dir: Path, plan: StudyPlan) -> list[str]:
    """--force: move trial directories whose run differs from the new plan's to STUDY/replaced/<time>/."""
    trials_dir = study_dir / TRIALS_DIR
    if not trials_dir.is_dir():
        return []
    wanted = {s.name: s for s in plan.trials()}
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    moved = []
    for d in sorted(p for p in trials_dir.iterdir() if p.is_dir()):
        spec = wanted.get(d.name)
        keep = False
        if spec is not None and (d / CONFIG_FILE).is_file():
            cfg = plan.trial_config(spec.overrides, spec.name, trials_dir)
            keep = not config_differences(load_yaml(d / CONFIG_FILE), to_dict(cfg), REUSE_IGNORE)
        if not keep:
            target = study_dir / REPLACED_DIR / stamp / d.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(d), str(target))
            moved.append(d.name)
    return moved


def _write_study_file(study_dir: Path, plan: StudyPlan, url: str) -> None:
    from ..train.checkpoint import atomic_write

    meta = {
        "format": FORMAT,
        "name": plan.name,
        "fingerprint": plan.fingerprint(),
        "optuna_study": plan.optuna_name,
        "storage": mask_url(url),
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "plan": plan.to_json(),
        "plan_identity": plan.identity(),
    }
    text = json.dumps(meta, indent=2, default=str)
    atomic_write(study_dir / STUDY_FILE, lambda f: f.write(text.encode()))


def _sampler_and_pruner(plan: StudyPlan, rank: int):
    import optuna

    if not plan.is_search:
        return optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner()
    # Each worker gets its own seed: equal seeds would propose the same first configs in parallel.
    seed = int(plan.base["train"]["seed"]) + 1000 * rank
    sampler = optuna.samplers.TPESampler(seed=seed)
    pruner = optuna.pruners.MedianPruner(
        n_startup_trials=plan.search["prune_startup"], n_warmup_steps=plan.search["prune_warmup"]
    )
    return sampler, pruner


def load_study(plan: StudyPlan, storage, rank: int = 0):
    import optuna

    sampler, pruner = _sampler_and_pruner(plan, rank)
    return optuna.create_study(
        study_name=plan.optuna_name, storage=storage, load_if_exists=True, direction="minimize",
        sampler=sampler, pruner=pruner,
    )


def prepare_study(plan: StudyPlan, study_dir: str | Path, storage: str | None = None, force: bool = False) -> dict:
    """Create or join the study: check the storage and the directory, then queue the trials not done.

    Nothing is created when the storage cannot be reached or the directory belongs to another config.
    Safe to call from several workers at once. Returns a summary (counts per state, moved directories).
    """
    study_dir = Path(study_dir)
    url = storage or default_storage(study_dir)
    store = open_storage(storage) if storage else None  # an unreachable database: fail before any file
    _check_study_dir(study_dir, plan, force)
    created = not study_dir.exists()
    try:
        (study_dir / TRIALS_DIR).mkdir(parents=True, exist_ok=True)
        with study_lock(study_dir):
            meta = read_study_file(study_dir)
            moved: list[str] = []
            if meta is None or meta.get("fingerprint") != plan.fingerprint():
                if meta is not None:  # again under the lock: another worker may have won the race
                    _check_study_dir(study_dir, plan, force)
                if force:
                    moved = _set_aside(study_dir, plan)
                _write_study_file(study_dir, plan, url)
            if store is None:
                store = open_storage(url)
            coordinator = Coordinator(plan, study_dir, store)
            enqueued = coordinator.reconcile(retry_failed=True)
            counts = coordinator.counts()
    except BaseException:
        if created:
            shutil.rmtree(study_dir, ignore_errors=True)
        raise
    return {"study_dir": str(study_dir), "storage": mask_url(url), "optuna_study": plan.optuna_name,
            "enqueued": enqueued, "moved_aside": moved, **counts}


# ---------------------------------------------------------------------------------------------------------
# liveness


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def worker_identity() -> dict:
    return {"host": socket.gethostname(), "boot": _boot_id(), "pid": os.getpid()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child that nobody reaped yet is a zombie: dead for us
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


def is_stale(trial, grace_s: float, now: float | None = None) -> bool:
    """A RUNNING trial whose worker is gone: its process is dead (same machine), or it stopped beating."""
    now = time.time() if now is None else now
    w = trial.user_attrs.get(WORKER)
    me = worker_identity()
    if isinstance(w, dict) and w.get("host") == me["host"] and w.get("boot") == me["boot"]:
        if w.get("pid") == me["pid"]:
            return False
        if not _pid_alive(int(w.get("pid", -1))):
            return True
    beat = trial.user_attrs.get(HEARTBEAT)
    if beat is None:
        beat = trial.datetime_start.timestamp() if trial.datetime_start else now
    return now - float(beat) > grace_s


class _Heartbeat:
    """Writes the trial's heartbeat time every `interval` seconds from a daemon thread."""

    def __init__(self, storage, trial_id: int, interval: float):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def beat(self) -> None:
        self.storage.set_trial_user_attr(self.trial_id, HEARTBEAT, time.time())

    def _run(self) -> None:
        import optuna

        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except optuna.exceptions.UpdateFinishedTrialError:
                return
            except Exception:
                continue  # a busy database: the next beat will do

    def __enter__(self):
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)


# ---------------------------------------------------------------------------------------------------------
# claims


class Coordinator:
    """Queue, claim and give back the trials of one study (see the module docstring for the protocol)."""

    def __init__(self, plan: StudyPlan, study_dir: str | Path, storage, rank: int = 0, grace_s: float = 300.0):
        self.plan, self.study_dir, self.storage, self.grace_s = plan, Path(study_dir), storage, grace_s
        self.study = load_study(plan, storage, rank)
        self.study_id = self.study._study_id
        self.specs = {s.name: s for s in plan.trials()}

    # -- views
    def all_trials(self):
        return self.storage.get_all_trials(self.study_id, deepcopy=False)

    def by_key(self) -> dict[str, list]:
        out: dict[str, list] = {}
        for t in self.all_trials():
            key = t.user_attrs.get(KEY)
            if key is not None and t.user_attrs.get(STATUS) not in ("duplicate", "foreign", "surplus"):
                out.setdefault(key, []).append(t)
        return out

    def keys(self) -> list[str]:
        if self.plan.is_search:
            return sorted(self.by_key())
        return list(self.specs)

    def counts(self) -> dict[str, int]:
        """How many keys are done / running / queued / failed."""
        from optuna.trial import TrialState as S

        groups = self.by_key()
        out = {"total": len(self.keys()) if not self.plan.is_search else self.plan.search["trials"],
               "complete": 0, "pruned": 0, "running": 0, "waiting": 0, "failed": 0}
        for key in self.keys():
            states = {t.state for t in groups.get(key, [])}
            if S.COMPLETE in states:
                out["complete"] += 1
            elif S.PRUNED in states:
                out["pruned"] += 1
            elif S.RUNNING in states:
                out["running"] += 1
            elif S.WAITING in states:
                out["waiting"] += 1
            elif states:
                out["failed"] += 1
        return out

    # -- state changes (callers hold study_lock)
    def _enqueue(self, key: str, params: dict | None = None, attempt: int = 1) -> None:
        self.study.enqueue_trial(params or {}, user_attrs={KEY: key, "attempt": attempt})

    def _fail(self, trial, status: str, error: str | None = None) -> bool:
        """RUNNING -> FAIL with a status; False when another worker finished or failed it first."""
        import optuna
        from optuna.trial import TrialState

        try:
            self.storage.set_trial_user_attr(trial._trial_id, STATUS, status)
            if error:
                self.storage.set_trial_user_attr(trial._trial_id, ERROR, error[:2000])
            return bool(self.storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL))
        except optuna.exceptions.UpdateFinishedTrialError:
            return False

    def reconcile(self, retry_failed: bool) -> int:
        """Queue every key that is not done and has no live attempt; fail stale attempts. Returns how
        many were queued. `retry_failed` also queues keys whose last attempt ended in an error."""
        from optuna.trial import TrialState as S

        groups = self.by_key()
        queued = 0
        for key in self.keys():
            attempts = groups.get(key, [])
            states = [t.state for t in attempts]
            if S.COMPLETE in states or S.PRUNED in states or S.WAITING in states:
                continue
            running = [t for t in attempts if t.state == S.RUNNING]
            if any(not is_stale(t, self.grace_s) for t in running):
                continue
            won = [self._fail(t, "stale", "its worker stopped (process gone or no heartbeat)") for t in running]
            if running and not any(won):
                continue  # another worker failed them first: it queues the retry
            last = max(attempts, key=lambda t: t.number) if attempts else None
            status = last.user_attrs.get(STATUS) if last is not None else None
            retry = last is None or running or status in ("interrupted", "stale")
            if status == "error" and retry_failed and not self.plan.is_search:
                retry = True
            if retry:
                params = dict(last.params) if last is not None and self.plan.is_search else None
                self._enqueue(key, params, attempt=len(attempts) + 1)
                queued += 1
        return queued

    def _pop_waiting(self):
        import optuna
        from optuna.trial import TrialState

        waiting = self.storage.get_all_trials(self.study_id, deepcopy=False, states=(TrialState.WAITING,))
        order = {key: i for i, key in enumerate(self.specs)}  # grid: plan order, so a resumed trial comes first
        for t in sorted(waiting, key=lambda t: (order.get(t.user_attrs.get(KEY), len(order)), t.number)):
            try:
                if self.storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                    return self.storage.get_trial(t._trial_id)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        return None

    def _is_duplicate(self, trial, key: str) -> bool:
        from optuna.trial import TrialState as S

        for other in self.by_key().get(key, []):
            if other.number == trial.number:
                continue
            if other.state in (S.COMPLETE, S.PRUNED):
                return True
            if other.number < trial.number and (
                other.state == S.WAITING or (other.state == S.RUNNING and not is_stale(other, self.grace_s))
            ):
                return True
        return False

    def claim(self):
        """(optuna.Trial, key) of the next trial this worker runs, or None when the queue is empty."""
        import optuna

        with study_lock(self.study_dir):
            while True:
                frozen = self._pop_waiting()
                if frozen is None:
                    if self.plan.is_search and len(self.by_key()) < self.plan.search["trials"]:
                        trial = self.study.ask()  # a new configuration from the sampler
                        key = trial.user_attrs.get(KEY) or f"trial-{trial.number:03d}"
                        self.storage.set_trial_user_attr(trial._trial_id, KEY, key)
                        self.storage.set_trial_user_attr(trial._trial_id, WORKER, worker_identity())
                        return trial, key
                    return None
                self.storage.set_trial_user_attr(frozen._trial_id, WORKER, worker_identity())
                key = frozen.user_attrs.get(KEY)
                if key is None or (not self.plan.is_search and key not in self.specs):
                    self._fail(frozen, "foreign", "not a trial of this plan")
                    continue
                if self._is_duplicate(frozen, key):
                    self._fail(frozen, "duplicate", "another attempt of this key runs or ran")
                    continue
                return optuna.Trial(self.study, frozen._trial_id), key

    def others_alive(self) -> bool:
        """Whether some other worker still runs a trial of this study (and may queue a retry)."""
        from optuna.trial import TrialState

        me = os.getpid()
        for t in self.storage.get_all_trials(self.study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            w = t.user_attrs.get(WORKER) or {}
            if w.get("pid") == me and w.get("host") == socket.gethostname():
                continue
            if not is_stale(t, self.grace_s):
                return True
        return False


def study_status(plan: StudyPlan, study_dir: str | Path, storage: str | None = None) -> dict[str, dict]:
    """Per key: the state of its best attempt (complete > pruned > running > waiting > failed),
    its Optuna number, value, params and error."""
    from optuna.trial import TrialState as S

    store = open_storage(storage or default_storage(study_dir))
    coordinator = Coordinator(plan, study_dir, store)
    rank = {S.COMPLETE: 0, S.PRUNED: 1, S.RUNNING: 2, S.WAITING: 3, S.FAIL: 4}
    out: dict[str, dict] = {}
    groups = coordinator.by_key()
    for key in coordinator.keys():
        attempts = groups.get(key, [])
        if not attempts:
            out[key] = {"state": "not started", "number": None, "value": None, "params": {}, "error": None}
            continue
        best = min(attempts, key=lambda t: (rank.get(t.state, 5), -t.number))
        state = best.state.name.lower()
        if best.state == S.FAIL:
            state = "interrupted" if best.user_attrs.get(STATUS) in ("interrupted", "stale") else "failed"
        elif best.state == S.WAITING and any(t.user_attrs.get(STATUS) in ("interrupted", "stale") for t in attempts):
            state = "interrupted"  # queued again: the next worker resumes its checkpoint
        out[key] = {"state": state, "number": best.number, "value": best.value, "params": dict(best.params),
                    "error": best.user_attrs.get(ERROR), "overrides": best.user_attrs.get(OVERRIDES)}
    return out


# ---------------------------------------------------------------------------------------------------------
# running trials


def objective_of(row: dict) -> float | None:
    """What a study minimises: the validation negative ELBO (recon + KL per image, nats), which unlike
    the training loss (recon + beta * KL) compares models of different beta fairly."""
    for key in ("val/elbo", "train/elbo"):
        if isinstance(row.get(key), (int, float)):
            return float(row[key])
    return None


def best_objective(run_dir: Path) -> float:
    from ..run import read_metrics

    values = [v for v in map(objective_of, read_metrics(run_dir)) if v is not None and math.isfinite(v)]
    return min(values) if values else math.nan


class PruneCallback(Callback):
    """Reports the objective (validation -ELBO) of each epoch to Optuna; raises `optuna.TrialPruned` when
    the pruner says this trial is worse than the median of the others at the same epoch."""

    def __init__(self, trial):
        self.trial = trial

    def on_epoch_end(self, ctx, row):
        import optuna

        value = objective_of(row)
        if value is None or not math.isfinite(value):
            return
        self.trial.report(float(value), step=int(row["epoch"]))
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {row['epoch']}: val -ELBO {value:.2f} above the median")


def trial_dir_state(run_dir: Path, epochs: int) -> tuple[str, dict]:
    """'new' (no checkpoint), 'partial' (resumable) or 'finished', and the checkpoint's loop state."""
    from ..train.checkpoint import load_checkpoint

    ckpt = run_dir / CHECKPOINTS / "last.ckpt"
    if not ckpt.is_file():
        return "new", {}
    state = load_checkpoint(ckpt).get("train_state", {})
    if state.get("epoch", 0) >= epochs or str(state.get("stop_reason", "")).startswith("early stop"):
        return "finished", state
    return "partial", state


def _check_reusable(run_dir: Path, cfg) -> None:
    if (run_dir / CONFIG_FILE).is_file():
        diff = config_differences(load_yaml(run_dir / CONFIG_FILE), to_dict(cfg), REUSE_IGNORE)
        if diff:
            raise VaelabError(
                f"{run_dir} holds a run of another config (differs in: {', '.join(diff[:5])})",
                "move that folder away, or start the study again with --force to set it aside",
            )


def _suggest(trial, space: dict) -> dict[str, Any]:
    out = {}
    for key, spec in space.items():
        if "choices" in spec:
            choices = spec["choices"]
            labels = [json.dumps(c) for c in choices]  # Optuna wants plain values: lists go as JSON text
            out[key] = choices[labels.index(trial.suggest_categorical(key, labels))]
        elif key_type(key) is int:
            out[key] = trial.suggest_int(key, int(round(spec["low"])), int(round(spec["high"])), log=spec["log"])
        else:
            out[key] = trial.suggest_float(key, spec["low"], spec["high"], log=spec["log"])
    return out


def _jsonable(d: dict) -> dict:
    return json.loads(json.dumps(d, default=str))


class Worker:
    """Claims and runs trials of one study until none is left (see `run_worker`)."""

    def __init__(self, plan: StudyPlan, study_dir, storage: str | None, *, rank: int = 0, evaluate: bool = False,
                 classify=(), on_event: Callable[[dict], None] | None = None, extra_callbacks=None,
                 show_epochs: bool = False, heartbeat_s: float = 30.0, grace_s: float = 300.0, wait: bool = True,
                 poll_s: float = 2.0):
        self.plan, self.study_dir = plan, Path(study_dir)
        self.url = storage or default_storage(study_dir)
        self.store = open_storage(self.url)
        self.coordinator = Coordinator(plan, study_dir, self.store, rank=rank, grace_s=grace_s)
        self.evaluate, self.classify = evaluate, list(classify or [])
        self.on_event = on_event or (lambda event: None)
        self.extra_callbacks = extra_callbacks
        self.show_epochs, self.heartbeat_s, self.wait, self.poll_s = show_epochs, heartbeat_s, wait, poll_s
        self.trials_dir = self.study_dir / TRIALS_DIR

    def emit(self, event: str, **fields) -> None:
        self.on_event({"event": event, **fields})

    def run(self) -> list[dict]:
        outcomes = []
        with study_lock(self.study_dir):
            self.coordinator.reconcile(retry_failed=False)
        while True:
            claimed = self.coordinator.claim()
            if claimed is None:
                with study_lock(self.study_dir):
                    queued = self.coordinator.reconcile(retry_failed=False)
                if queued:
                    continue
                if self.wait and self.coordinator.others_alive():
                    time.sleep(self.poll_s)  # another worker may still fail and give a trial back
                    continue
                return outcomes
            outcomes.append(self.run_trial(*claimed))

    def _provenance(self, run_dir: Path, info: dict) -> None:
        from ..train.checkpoint import atomic_write

        if run_dir.is_dir():
            text = json.dumps(_jsonable(info), indent=2)
            atomic_write(run_dir / TRIAL_FILE, lambda f: f.write(text.encode()))

    def run_trial(self, trial, key: str) -> dict:
        """Train (or resume, or skip when finished), then evaluate/classify/report one claimed trial."""
        import optuna

        from ..train import TrainingInterrupted, default_callbacks, fit

        c = self.coordinator
        number = trial.number
        info: dict[str, Any] = {"study": self.plan.optuna_name, "trial": key, "optuna_number": number,
                                "worker": worker_identity(), "started": _now()}
        run_dir = self.trials_dir / key
        try:
            with _Heartbeat(self.store, trial._trial_id, self.heartbeat_s):
                overrides = _suggest(trial, self.plan.search["space"]) if self.plan.is_search else self.coordinator.specs[key].overrides
                info["overrides"] = overrides
                self.store.set_trial_user_attr(trial._trial_id, OVERRIDES, _jsonable(overrides))
                cfg = self.plan.trial_config(overrides, key, self.trials_dir)
                _check_reusable(run_dir, cfg)
                state, loop = trial_dir_state(run_dir, cfg.train.epochs)
                info["resumed_from_epoch"] = loop.get("epoch") if state == "partial" else None
                self.emit("start", trial=key, state=state, epoch=loop.get("epoch", 0), epochs=cfg.train.epochs)
                if state != "finished":
                    callbacks = default_callbacks(cfg, quiet=not self.show_epochs)
                    if self.plan.is_search:
                        callbacks.append(PruneCallback(trial))
                    if self.extra_callbacks is not None:
                        callbacks += list(self.extra_callbacks(key))
                    fit(cfg, run_dir=run_dir, resume=state == "partial", callbacks=callbacks, quiet=not self.show_epochs)
                    _, loop = trial_dir_state(run_dir, cfg.train.epochs)
                if self.evaluate and (state != "finished" or not steps.eval_path(run_dir).is_file()):
                    self.emit("step", trial=key, step="evaluate")
                    steps.evaluate_trial(run_dir, disentanglement=self.plan.disentanglement)
                for method in self.classify:
                    if state != "finished" or not steps.classify_path(run_dir, method).is_file():
                        self.emit("step", trial=key, step=f"classify {method}")
                        steps.classify_trial(run_dir, method)
                try:
                    steps.report_trial(run_dir)
                except Exception as e:  # a report is a view: the trial itself is done
                    self.emit("warning", trial=key, message=f"report failed: {e}")
            value = best_objective(run_dir)
            info.update(status="complete", finished=_now(), objective=value, epochs=loop.get("epoch"),
                        train_time=loop.get("train_time"))
            self._provenance(run_dir, info)
            if math.isfinite(value):
                c.study.tell(number, value, skip_if_finished=True)  # finished: a worker judged us stale
            else:
                c._fail(trial, "error", "no finite validation -ELBO")
            self.emit("done", trial=key, value=value, epochs=loop.get("epoch"), train_time=loop.get("train_time"))
            return {"trial": key, "status": "complete", "value": value}
        except optuna.TrialPruned as e:
            info.update(status="pruned", finished=_now(), message=str(e))
            self._provenance(run_dir, info)
            self.store.set_trial_user_attr(trial._trial_id, STATUS, "pruned")
            c.study.tell(number, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
            self.emit("pruned", trial=key, message=str(e))
            return {"trial": key, "status": "pruned"}
        except (TrainingInterrupted, KeyboardInterrupt) as e:
            signum = getattr(e, "signum", signal.SIGINT)
            info.update(status="interrupted", finished=_now())
            self._provenance(run_dir, info)
            with study_lock(self.study_dir):
                if c._fail(trial, "interrupted", "stopped by a signal"):
                    attempts = len(c.by_key().get(key, []))
                    c._enqueue(key, dict(trial.params) if self.plan.is_search else None, attempt=attempts + 1)
            self.emit("interrupted", trial=key)
            raise TrainingInterrupted(
                f"{signal.Signals(signum).name}: the study stopped during trial {key}; its checkpoint is in {run_dir}",
                "run the same vaelab sweep command again: finished trials are skipped and this one resumes",
                signum,
            ) from None
        except Exception as e:
            message = str(e) if isinstance(e, VaelabError) else f"{type(e).__name__}: {e}"
            info.update(status="failed", finished=_now(), error=message)
            self._provenance(run_dir, info)
            c._fail(trial, "error", message)
            self.emit("failed", trial=key, error=message)
            return {"trial": key, "status": "failed", "error": message}


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def run_worker(plan: StudyPlan, study_dir: str | Path, storage: str | None = None, **options) -> list[dict]:
    """Claim and run trials of a prepared study until none is left; returns one outcome per trial run.

    Options: evaluate, classify (methods), on_event (called with a dict per start/done/failed/...),
    extra_callbacks (key -> training callbacks, e.g. for tests), show_epochs, heartbeat_s, grace_s, wait
    (keep polling while other workers still run trials, since they may give one back), rank (seed offset
    of the search sampler). SIGTERM is handled like Ctrl-C: the running trial is checkpointed and queued.
    """
    worker = Worker(plan, study_dir, storage, **options)
    with _sigterm_as_interrupt():
        return worker.run()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Outside `fit` (which handles signals itself) a SIGTERM becomes KeyboardInterrupt, so the trial is
    given back instead of left running."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# ---------------------------------------------------------------------------------------------------------
# several worker processes on this machine (--jobs N)


def _job_main(plan_json: dict, study_dir: str, storage: str | None, options: dict, rank: int, threads: int,
              verbosity: int, queue) -> None:
    import optuna
    import torch

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(verbosity)
    try:
        outcomes = run_worker(StudyPlan.from_json(plan_json), study_dir, storage, rank=rank, **options)
        queue.put((rank, "ok", outcomes))
    except VaelabError as e:
        queue.put((rank, "interrupted" if hasattr(e, "signum") else "error", str(e)))
    except KeyboardInterrupt:
        queue.put((rank, "interrupted", "interrupted"))


def run_workers(plan: StudyPlan, study_dir: str | Path, storage: str | None = None, jobs: int = 1, **options) -> list[dict]:
    """`jobs` worker processes on this machine (each with cpu_count/jobs torch threads), or the calling
    process itself when jobs is 1. Options as `run_worker`; `on_event` must be picklable for jobs > 1."""
    if jobs <= 1:
        return run_worker(plan, study_dir, storage, **options)
    import multiprocessing as mp
    import queue as queue_mod

    import optuna

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    threads = max(1, (os.cpu_count() or 1) // jobs)
    procs = [
        ctx.Process(target=_job_main, args=(plan.to_json(), str(study_dir), storage, options, rank, threads,
                                            optuna.logging.get_verbosity(), results), daemon=False)
        for rank in range(jobs)
    ]
    old = signal.getsignal(signal.SIGTERM)

    def forward(signum, frame):  # SIGTERM to the parent stops the workers the same way
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, forward)
    outcomes: list[dict] = []
    reports: dict[int, tuple[str, Any]] = {}
    try:
        for p in procs:
            p.start()
        while len(reports) < jobs:
            try:
                rank, kind, payload = results.get(timeout=1.0)
                reports[rank] = (kind, payload)
            except queue_mod.Empty:
                if all(not p.is_alive() for p in procs):
                    try:
                        while True:
                            rank, kind, payload = results.get(timeout=1.0)
                            reports[rank] = (kind, payload)
                    except queue_mod.Empty:
                        break
    except KeyboardInterrupt:  # the workers got the Ctrl-C too: let them checkpoint
        for p in procs:
            p.join(timeout=120)
        raise
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, old)
    for rank in range(jobs):
        kind, payload = reports.get(rank, ("error", f"exit code {procs[rank].exitcode}"))
        if kind == "ok":
            outcomes += payload
        elif kind == "interrupted":
            from ..train import TrainingInterrupted

            raise TrainingInterrupted(f"worker {rank}: {payload}", "run the same vaelab sweep command again to resume", signal.SIGTERM)
        else:
            raise VaelabError(f"worker process {rank} stopped: {payload}", "run the same command again: finished trials are kept")
    return outcomes
