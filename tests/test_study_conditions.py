"""Ratio ladder -> training sets: exact counts per class, nesting across ratios, controls, trial order."""

from __future__ import annotations

import pytest

from mrisynth.config import load_config
from mrisynth.data.manifest import ImageRecord
from mrisynth.errors import UserError
from mrisynth.study import StudyConfig
from mrisynth.study import conditions as cond

REAL = {"glioma": 998, "meningioma": 496, "pituitary": 650}  # the reference train split (2,144 images)


def _records(counts: dict[str, int], *, prefix: str) -> list[ImageRecord]:
    return [ImageRecord(id=f"{prefix}-{c}-{i}", path="x.png", class_name=c, label=k, split="train")
            for k, (c, n) in enumerate(counts.items()) for i in range(n)]


def test_proportional_counts_are_round_half_up_per_class():
    assert cond.synthetic_counts(REAL, 0.25) == {"glioma": 250, "meningioma": 124, "pituitary": 163}  # 249.5 -> 250
    assert cond.synthetic_counts(REAL, 4) == {"glioma": 3992, "meningioma": 1984, "pituitary": 2600}
    assert cond.synthetic_counts(REAL, 0) == {"glioma": 0, "meningioma": 0, "pituitary": 0}


def test_balanced_counts_split_the_total_equally():
    # 0.5 x 2144 = 1072 over 3 classes -> 357.33 -> 357 each
    assert cond.synthetic_counts(REAL, 0.5, allocation="balanced") == {c: 357 for c in REAL}


@pytest.mark.parametrize("allocation", ["proportional", "balanced"])
def test_subsets_are_nested_and_exact_across_the_ladder(allocation):
    cfg = StudyConfig(allocation=allocation)
    real = {"a": 7, "b": 13, "c": 4}
    real_train = _records(real, prefix="real")
    pool = _records(cond.pool_counts(cfg, real), prefix="syn")
    order = cond.pool_order(pool)
    previous: set[str] = set()
    for c in cond.build_conditions(cfg):
        tset = cond.build_training_set(c, real_train, order, cfg=cfg)
        chosen = set(tset.synthetic_ids)
        assert previous <= chosen, f"{c.name} does not contain the smaller ratio's images"
        per_class = {k: sum(i.startswith(f"syn-{k}-") for i in chosen) for k in real}
        assert per_class == cond.synthetic_counts(real, c.ratio, allocation=allocation)
        assert len(tset.real_ids) == 24  # every real training image, in every ratio condition
        previous = chosen


def test_pool_holds_per_class_what_the_largest_condition_takes_and_respects_the_minimum():
    cfg = StudyConfig()  # proportional, largest ratio 5: 5 x each class's real count, not 5 x the largest class
    assert cond.pool_counts(cfg, REAL) == {"glioma": 4990, "meningioma": 2480, "pituitary": 3250}
    seed = load_config(StudyConfig, "seed", overrides=["data.source=/d"])  # pool_per_class 5000 is a floor
    assert cond.pool_counts(seed, REAL) == {"glioma": 5000, "meningioma": 5000, "pituitary": 5000}
    balanced = StudyConfig(allocation="balanced")  # 5 x 2144 / 3 = 3573.3 for every class
    assert cond.pool_counts(balanced, REAL) == {"glioma": 3573, "meningioma": 3573, "pituitary": 3573}


def test_pool_order_is_fixed_and_shuffled():
    pool = _records({"a": 50}, prefix="syn")
    first, again = cond.pool_order(pool), cond.pool_order(list(reversed(pool)))
    assert first == again
    assert first["a"] != sorted(first["a"])


def test_controls_train_on_what_they_claim():
    cfg = StudyConfig(ratios=[0, 1], controls=["synthetic-only", "real-oversampled", "augment-only"],
                      control_ratios=[2])
    real = {"a": 5, "b": 3}
    real_train = _records(real, prefix="real")
    order = cond.pool_order(_records({"a": 10, "b": 6}, prefix="syn"))
    by_name = {c.name: cond.build_training_set(c, real_train, order, cfg=cfg) for c in cond.build_conditions(cfg)}
    assert set(by_name) == {"r0", "r1", "synthetic-only-r2", "real-oversampled-r2", "augment-only-r2"}
    syn_only = by_name["synthetic-only-r2"]
    assert syn_only.real_ids == [] and len(syn_only.synthetic_ids) == 16
    over = by_name["real-oversampled-r2"]
    assert over.synthetic_ids == [] and len(over.real_ids) == 8 and over.samples_per_epoch == 24
    aug = by_name["augment-only-r2"]
    assert aug.samples_per_epoch == 24 and aug.classifier_overrides["augment"]["rotation_deg"] == 30.0
    assert by_name["r1"].samples_per_epoch is None


def test_trial_order_is_fold_seed_condition_and_names_are_stable():
    cfg = StudyConfig(ratios=[0, 1], seeds=[3, 4], folds=3)
    names = [t.name for t in cond.build_trials(cfg)]
    assert names[:4] == ["r0-s3-f0", "r1-s3-f0", "r0-s4-f0", "r1-s4-f0"]
    assert len(names) == 12 and len(set(names)) == 12


@pytest.mark.parametrize("bad", [{"ratios": [1, 2]}, {"seeds": []}, {"folds": 2}, {"controls": ["nope"]},
                                 {"ratios": [-1, 0]}])
def test_bad_settings_are_user_errors(bad):
    with pytest.raises(UserError):
        StudyConfig(**bad)


@pytest.mark.parametrize("preset", ["seed", "rigorous", "demo"])
def test_presets_resolve_to_every_steps_own_config(preset):
    from mrisynth.classify.config import ClassifierConfig
    from mrisynth.data.prepare import PrepareConfig
    from mrisynth.study.config import classifier_for_trial, sample_config_for_pool

    cfg = load_config(StudyConfig, preset, overrides=["data.source=/data/figshare"])
    assert isinstance(cfg.classifier, ClassifierConfig) and isinstance(cfg.data.prepare, PrepareConfig)
    sample = sample_config_for_pool(cfg, counts={"glioma": 7, "pituitary": 2})
    assert sample.counts == {"glioma": 7, "pituitary": 2} and type(sample) is type(cfg.generator.sample)
    clf = classifier_for_trial(cfg, seed=3)
    assert clf.seed == 3
    if preset == "seed":
        assert (clf.model, clf.epochs, sample.mode, sample.steps) == ("resnet50", 100, "img2img", 50)
        assert cfg.data.prepare.split.startswith("file:") and cfg.seeds == [42]
    if preset == "rigorous":
        assert len(cfg.seeds) == 5 and len(cfg.controls) == 4 and clf.optimizer == "adamw"
        assert (sample.steps, sample.guidance, clf.normalize) == (30, 2.0, "zscore")  # multi-step after a fine-tune
    if preset == "demo":
        # the reference study's eight conditions, three seeds (issue 19)
        assert cfg.ratios == [0, 0.25, 0.5, 1, 2, 3, 4, 5] and cfg.seeds == [0, 1, 2]
        assert (clf.model, cfg.generator.backend) == ("tiny", "ddpm")
    augmented = classifier_for_trial(cfg, seed=0, extra=cfg.augment_only_classifier)
    assert augmented.augment.rotation_deg == 30.0
