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
CONTROLS = (SYNTHETIC_ONLY, REAL_OVERSAMPLED, AUGMENT_ONLY)

# The real-only condition every other condition is compared with (ratio 0 of the ladder).
BASELINE = "r0"

# Evaluation sets every trial is scored on. VAL chooses (the best ratio, the best epoch); TEST only reports.
VAL = "val"
TEST = "test"
EVAL_SETS = (VAL, TEST)


def condition_name(kind: str, ratio: float) -> str:
    """The folder-safe name of a condition: "r0.5" for the ladder, "augment-only-r1" for a control."""
    r = f"{ratio:g}"
    return f"r{r}" if kind == RATIO else f"{kind}-r{r}"
