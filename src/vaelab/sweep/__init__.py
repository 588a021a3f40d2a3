"""Studies: train a family of configs (a --grid product, named variants, seeds, or an Optuna search),
evaluate each, and compare them in one table, figures and report.

    plan = build_plan("configs/fashion-study.yaml", ["train.epochs=2"], grid=["model.beta=0.5,1,4"])
    prepare_study(plan, "runs/fashion-study")         # study.json, study.db, queued trials
    run_workers(plan, "runs/fashion-study", jobs=2)   # train/evaluate until every trial is done
    files = study_outputs(plan, "runs/fashion-study", study_status(plan, "runs/fashion-study"))

grid.py (plan, trial configs), study.py (Optuna storage, claims, workers, resume), steps.py (evaluate /
classify / report adapters), results.py (tables), figures.py, report.py (the study page), outputs.py.
"""

from .grid import StudyPlan, TrialSpec, build_plan, expand, parse_grid
from .outputs import finish_steps, study_outputs
from .results import Results, build_results
from .study import prepare_study, run_worker, run_workers, study_status

__all__ = [
    "Results",
    "StudyPlan",
    "TrialSpec",
    "build_plan",
    "build_results",
    "expand",
    "finish_steps",
    "parse_grid",
    "prepare_study",
    "run_worker",
    "run_workers",
    "study_outputs",
    "study_status",
]
