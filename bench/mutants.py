"""The planted bugs of bench/mutation_check.py: (file, original snippet, mutated snippet, why a user cares).

Each is a small, plausible slip in code users depend on most; `tests` are the default test files that should
notice it. Files are relative to src/mrisynth. When the code moves on, a snippet stops applying and the check
says which: update the snippet, keep the bug.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Mutant:
    name: str
    group: str
    file: str
    original: str
    mutated: str
    why: str
    tests: tuple[str, ...]


CLASSIFY = ("tests/test_classify_train.py", "tests/test_classify_recipe.py", "tests/test_classify_augment.py")
SPLITS = ("tests/test_data_splits.py",)
CACHE = ("tests/test_manifest_cache.py",)
AUDIT = ("tests/test_data_audit.py",)
RUNNER = ("tests/test_study_runner.py",)
SUMMARY = ("tests/test_study_summary.py", "tests/test_study_stats.py", "tests/test_stats_secondary.py",
           "tests/test_study_conditions.py", "tests/test_study_folds.py")
DDPM = ("tests/test_generate_ddpm.py", "tests/test_generate_recipe.py", "tests/test_generate_ddpm_pixels.py")


def _m(name, group, file, original, mutated, why, tests) -> Mutant:
    return Mutant(name, group, file, original, mutated, why, tests)


MUTANTS: list[Mutant] = [
    # ---- classify/ -------------------------------------------------------------------------------------------
    _m("augment-off", "classify", "classify/train.py",
       "params = random_affine_params(len(idx), augment, generator=generator, device=device) if augment.enabled "
       "else None", "params = None",
       "training augmentation silently off", CLASSIFY),
    _m("augment-config-ignored", "classify", "classify/train.py",
       "augment=cfg.augment, generator=generator", "augment=AugmentConfig(), generator=generator",
       "augment.enabled=false (or any augment setting) ignored by fit", CLASSIFY),
    _m("restore-best-skipped", "classify", "classify/train.py",
       "        load_best(model, out_dir)\n", "        pass\n",
       "restore-best scores the last epoch's weights", CLASSIFY),
    _m("best-saved-every-epoch", "classify", "classify/train.py",
       'if progress.stopper.update(val["loss"], epoch) and dist.is_main:',
       'if (progress.stopper.update(val["loss"], epoch) or True) and dist.is_main:',
       "best.safetensors overwritten every epoch: the last epoch is scored", CLASSIFY),
    _m("early-stop-never", "classify", "classify/train.py",
       "        if progress.stopper.stopped:\n            break", "        if False:\n            break",
       "early stopping never stops the run", CLASSIFY),
    _m("early-stop-off-by-one", "classify", "classify/optim.py",
       "self.wait >= self.patience", "self.wait > self.patience",
       "early stopping waits one epoch more than the Keras recipe", CLASSIFY),
    _m("scheduler-not-resumed", "classify", "classify/train.py",
       '        scheduler.load_state_dict(state["scheduler"])', "        pass",
       "the LR scheduler's state lost on resume", CLASSIFY),
    _m("plateau-patience-off-by-one", "classify", "classify/optim.py",
       "patience=max(cfg.plateau_patience - 1, 0)", "patience=cfg.plateau_patience",
       "the LR is halved one epoch later than the Keras recipe", CLASSIFY),
    _m("same-shuffle-every-epoch", "classify", "classify/train.py",
       'derive_seed(cfg.seed, "epoch", epoch)', 'derive_seed(cfg.seed, "epoch", 0)',
       "every epoch sees the same order and the same augmentations", CLASSIFY),
    _m("no-shuffle", "classify", "classify/data.py",
       "torch.randperm(n, generator=generator, device=generator.device)", "torch.arange(n, device=generator.device)",
       "training images in manifest order (class blocks) every epoch", CLASSIFY),
    _m("resume-repeats-an-epoch", "classify", "classify/train.py",
       'next_epoch=state["epoch"] + 1', 'next_epoch=state["epoch"]',
       "a resumed run trains the checkpointed epoch twice", CLASSIFY),
    _m("rng-not-restored", "classify", "classify/train.py",
       '    restore_rng(state["rng"])', "    pass",
       "a resumed run draws other random numbers than an uninterrupted one", CLASSIFY),
    _m("val-and-test-swapped", "classify", "classify/train.py",
       '(("test", sets.test), ("val", sets.val))', '(("test", sets.val), ("val", sets.test))',
       "test metrics computed on the validation images", CLASSIFY),
    _m("flip-never", "classify", "classify/augment.py",
       "(uniform(0.0, 1.0) < 0.5) if cfg.hflip", "(uniform(0.0, 1.0) < 0.0) if cfg.hflip",
       "horizontal flips never drawn", CLASSIFY),
    _m("brightness-ignored", "classify", "classify/augment.py",
       '(x * params["brightness"].view(-1, 1, 1, 1)).clamp_(0.0, 1.0)', "x.clamp_(0.0, 1.0)",
       "brightness augmentation never applied", CLASSIFY),
    _m("label-smoothing-ignored", "classify", "classify/train.py",
       "label_smoothing=label_smoothing)", "label_smoothing=0.0)",
       "the fast preset's label smoothing silently off", CLASSIFY),
    # ---- data/ -----------------------------------------------------------------------------------------------
    _m("seed-split-listing-order", "data", "data/splits.py",
       "rows = sorted(by_class[name], key=lambda r: r.id)", "rows = by_class[name]",
       "the seed split depends on the order files are listed (differs between machines)", SPLITS),
    _m("seed-split-class-order", "data", "data/splits.py",
       "    for name in sorted(by_class):", "    for name in by_class:",
       "the seed split depends on which class is listed first", SPLITS),
    _m("split-file-names-unchecked", "data", "data/splits.py",
       'split = normalise_split_name(row["split"])', 'split = row["split"].strip()',
       "a split file's 'Validation' / 'Training' stored as-is; 'holdout' accepted", SPLITS),
    _m("split-file-class-unchecked", "data", "data/splits.py",
       'if row.get("class") and normalise_class_name(row["class"]) != rec.class_name:', "if False:",
       "a split file made for another class mapping replayed silently", SPLITS),
    _m("patient-split-tolerance-ignored", "data", "data/splits.py",
       "        if gap <= tolerance:", "        if True:",
       "patient split class shares not kept near the whole's", SPLITS),
    _m("next-fold-is-previous", "data", "data/splits.py",
       "folds[(folds.index(test_fold) + 1) % len(folds)]", "folds[(folds.index(test_fold) - 1) % len(folds)]",
       "cross-validation's val fold is not the documented next fold", SPLITS),
    _m("cache-keyed-on-ids", "data", "data/cache.py",
       'return meta.get("manifest_sha256") == sha256_file(data_dir / MANIFEST_NAME)',
       'return meta.get("ids") == [r.id for r in load_manifest(data_dir)]',
       "the packed cache reused when the pixels behind an id changed", CACHE),
    _m("cache-never-stale", "data", "data/cache.py",
       'return meta.get("manifest_sha256") == sha256_file(data_dir / MANIFEST_NAME)', "return True",
       "a cache of another manifest reused", CACHE),
    _m("audit-cli-ignores-threshold", "data", "data/cli.py",
       "threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold",
       "threshold = DEFAULT_THRESHOLD",
       "`data audit --threshold` ignored", AUDIT),
    _m("audit-default-threshold-lower", "data", "data/audit.py",
       "DEFAULT_THRESHOLD = 0.95", "DEFAULT_THRESHOLD = 0.9",
       "the default audit flags look-alike anatomy as near-duplicates", AUDIT),
    _m("audit-default-threshold-higher", "data", "data/audit.py",
       "DEFAULT_THRESHOLD = 0.95", "DEFAULT_THRESHOLD = 0.99",
       "the default audit misses adjacent-slice leakage", AUDIT),
    _m("audit-skips-val-test", "data", "data/audit.py",
       '_SPLIT_PAIRS = (("train", "val"), ("train", "test"), ("val", "test"))',
       '_SPLIT_PAIRS = (("train", "val"), ("train", "test"))',
       "near-duplicates between val and test never looked for", AUDIT),
    _m("audit-same-patient-without-ids", "data", "data/audit.py",
       "same = bool(ra.patient_id) and person[rows[r]] == person[ib[c]]", "same = person[rows[r]] == person[ib[c]]",
       "images without patient ids counted as the same patient", AUDIT),
    _m("audit-not-centred", "data", "data/audit.py",
       "    x -= x.mean(axis=1, keepdims=True)\n", "",
       "correlation replaced by cosine similarity: every bright image looks like every other", AUDIT),
    # ---- study/ ----------------------------------------------------------------------------------------------
    _m("classifier-seed-per-condition", "study", "study/trial.py",
       "clf_cfg = classifier_for_trial(cfg, seed=trial.seed, extra=tset.classifier_overrides)",
       "clf_cfg = classifier_for_trial(cfg, seed=trial.seed + int(10 * trial.condition.ratio), "
       "extra=tset.classifier_overrides)",
       "different classifier seeds per condition: the pairing with real-only broken", RUNNER),
    _m("delta-sign-flipped", "study", "study/comparisons.py",
       "test = stats.run_patient_test(a, b, labels)", "test = stats.run_patient_test(b, a, labels)",
       "a better condition reported with a negative delta (as 'hurts')", SUMMARY + RUNNER),
    _m("verdict-words-swapped", "study", "study/stats.py",
       "return HELPS\n    if p_adjusted < alpha and diff < 0:\n        return HURTS",
       "return HURTS\n    if p_adjusted < alpha and diff < 0:\n        return HELPS",
       "'helps' and 'hurts' swapped", SUMMARY),
    _m("verdict-from-uncorrected-p", "study", "study/comparisons.py",
       'comp["verdict"] = stats.verdict(comp["diff"], p_holm, alpha=alpha)',
       'comp["verdict"] = stats.verdict(comp["diff"], comp["p"], alpha=alpha)',
       "verdicts from the uncorrected p instead of the Holm-corrected one", SUMMARY),
    _m("holm-not-monotone", "study", "study/stats.py",
       "running = max(running, (m - rank) * p[i])", "running = (m - rank) * p[i]",
       "Holm's step-down loses its monotonicity", SUMMARY),
    _m("best-ratio-on-test", "study", "study/summary.py",
       'best = max(ladder, key=lambda c: (round(c["val_accuracy"]["mean"], 12), -c["ratio"]))',
       'best = max(ladder, key=lambda c: (round(c["test_accuracy"]["mean"], 12), -c["ratio"]))',
       "the best ratio chosen on test instead of validation", SUMMARY),
    _m("best-ratio-per-fold-on-test", "study", "study/summary.py",
       "name = max(here, key=lambda n: (round(float(np.mean(here[n][VAL])), 12), -ratio_of[n]))",
       "name = max(here, key=lambda n: (round(float(np.mean(here[n][TEST])), 12), -ratio_of[n]))",
       "with folds, the best ratio chosen on each fold's test fold", SUMMARY),
    _m("baseline-not-found", "study", "study/summary.py",
       "baseline = by_condition.get(BASELINE, [])", 'baseline = by_condition.get("r0.0", [])',
       "no baseline found, hence no comparisons at all", SUMMARY + RUNNER),
    _m("bootstrap-p-one-sided", "study", "study/stats.py",
       "p = float(min(1.0, 2 * min(below, above)))", "p = float(min(1.0, below))",
       "a one-sided paired-bootstrap p", SUMMARY),
    _m("mcnemar-no-continuity", "study", "study/stats.py",
       "chi2 = (abs(only_a - only_b) - 1) ** 2 / n", "chi2 = (only_a - only_b) ** 2 / n",
       "McNemar without the continuity correction", SUMMARY),
    _m("synthetic-count-truncated", "study", "study/conditions.py",
       "return {c: round_half_up(ratio * n) for c, n in real_counts.items()}",
       "return {c: int(ratio * n) for c, n in real_counts.items()}",
       "ratio x real count truncated instead of rounded: fewer synthetic images than the ratio says", SUMMARY),
    _m("compute-matched-control-unmatched", "study", "study/conditions.py",
       "samples_per_epoch = round_half_up(len(real_ids) * (1 + condition.ratio))",
       "samples_per_epoch = len(real_ids)",
       "the real-oversampled control trains on fewer samples than the ratio it matches", SUMMARY),
    # ---- generate/ddpm* ----------------------------------------------------------------------------------------
    _m("label-dropout-never", "generate", "generate/ddpm_train.py",
       "< cfg.p_uncond", "< 0.0",
       "classifier-free guidance's label dropout never applied in training", DDPM),
    _m("guidance-formula-wrong", "generate", "generate/ddpm_model.py",
       "out = uncond + guidance * (cond - uncond)", "out = cond + guidance * (cond - uncond)",
       "a wrong guidance formula", DDPM),
    _m("null-label-is-class-0", "generate", "generate/ddpm_model.py",
       "null = torch.full_like(labels, unet.config.num_class_embeds - 1)", "null = torch.zeros_like(labels)",
       "the unconditional branch conditioned on the first class", DDPM),
    _m("uint8-range-shifted", "generate", "generate/ddpm_model.py",
       "((x[:, 0].float().cpu() + 1.0) * 127.5)", "((x[:, 0].float().cpu()) * 127.5)",
       "generated images half black: [-1, 1] mapped to [-127, 127]", DDPM),
]
