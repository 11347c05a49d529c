"""The study's vocabulary, defined once: condition kinds, the baseline, and the evaluation sets.

Every other module names these through the constants below, never as string literals, so adding a
condition kind or an evaluation set touches this package only.
"""

from __future__ import annotations

# Condition kinds. "ratio" is the ladder (real + r x synthetic); the others are controls.
RATIO = "ratio"
SYNTHETIC_ONLY = "synthetic-only"
REAL_OVERSAMPLED = "real-oversampled"
AUGMENT_ONLY = "augment-only"
# Pre-train on the synthetic images of ratio r, then fine-tune on the real ones; its compute-matched real-only arm
# is REAL_OVERSAMPLED at the same r, added with it.
PRETRAIN_SYNTHETIC = "pretrain-synthetic"
CONTROLS = (SYNTHETIC_ONLY, REAL_OVERSAMPLED, AUGMENT_ONLY, PRETRAIN_SYNTHETIC)

# The real-only condition every other condition is compared with (ratio 0 of the ladder).
BASELINE = "r0"

# The manifest's splits. VAL chooses (the best ratio, the best epoch); TEST only reports.
TRAIN = "train"
VAL = "val"
TEST = "test"
EVAL_SETS = (VAL, TEST)


def trial_name(condition: str, seed: int, fold: int = -1, fraction: float = 1.0) -> str:
    """The folder of one trial: "r1-s0", with "-f2" under cross-validation and "-real0.25" on a real fraction."""
    return (f"{condition}-s{seed}" + (f"-f{fold}" if fold >= 0 else "")
            + (f"-real{fraction:g}" if fraction < 1.0 else ""))


def condition_name(kind: str, ratio: float) -> str:
    """The folder-safe name of a condition: "r0.5" for the ladder, "augment-only-r1" for a control."""
    r = f"{ratio:g}"
    return f"r{r}" if kind == RATIO else f"{kind}-r{r}"


def arm_label(condition: str, fraction: float) -> str:
    """A condition at a real fraction, as the report names it: "r1" at 100%, "r1-real0.25" at 25%."""
    return condition + (f"-real{fraction:g}" if fraction < 1.0 else "")
