"""The study: a ratio ladder x seeds (x folds) of classifier trainings, compared with real-only.

    from mrisynth.study import StudyConfig, run_study
    cfg = load_config(StudyConfig, "demo")
    run_study(cfg, "runs/demo")           # resumable; shard=(i, n) for job arrays
"""

from mrisynth.study.config import StudyConfig
from mrisynth.study.runner import run_study, trial_status

__all__ = ["StudyConfig", "run_study", "trial_status"]
