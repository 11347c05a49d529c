"""The study runner with cheap fakes for the generator and the classifier: stages, shards, resume, status.

The fakes keep these tests fast; test_study_e2e.py runs the real generator and classifier.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import types
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

from mrisynth.classify.metrics import classification_metrics
from mrisynth.config import from_dict
from mrisynth.data.manifest import load_classes, load_manifest, select
from mrisynth.errors import UserError
from mrisynth.files import append_jsonl, read_json, write_json, write_text
from mrisynth.generate.output import SyntheticWriter, synthetic_id
from mrisynth.report import run_report
from mrisynth.study import StudyConfig, run_study, trial_status
from mrisynth.study.names import REAL_OVERSAMPLED


@dataclasses.dataclass
class FakeTrainConfig:
    steps: int = 1


@dataclasses.dataclass
class FakeSampleConfig:
    n_per_class: int = 1
    seed: int = 0


class Recorder:
    """Counts what the fakes were asked to do."""

    def __init__(self) -> None:
        self.fits: list[str] = []
        self.seeds: dict[str, int] = {}  # trial folder -> the classifier seed it was trained with
        self.trained_on: list[Path] = []
        self.sampled: list[int] = []
        self.fail: set[str] = set()


def _fake_backend(rec: Recorder) -> types.ModuleType:
    def run_train(cfg, *, data_dir, out_dir, validate=None):
        rec.trained_on.append(Path(data_dir))
        write_json(Path(out_dir) / "generator.json", {"backend": "fake", "classes": load_classes(data_dir)})
        return Path(out_dir)

    def run_sample(gen_dir, cfg, *, out_dir):
        classes = read_json(Path(gen_dir) / "generator.json")["classes"]
        counts = getattr(cfg, "counts", None) or dict.fromkeys(classes, cfg.n_per_class)
        rec.sampled.append(max(counts.values()))
        writer = SyntheticWriter(out_dir, classes, generator_sha256="fake")
        rng = np.random.default_rng(cfg.seed)
        for label, cls in enumerate(classes):
            for i in range(counts.get(cls, 0)):
                img = rng.integers(0, 256, size=(16, 16), dtype=np.uint8)
                img[4:8, 4 * label:4 * label + 4] = 255
                writer.add(img, image_id=synthetic_id(cls, i), class_name=cls, seed=i, steps=1)
        return writer.finish().parent

    return types.SimpleNamespace(TrainConfig=FakeTrainConfig, SampleConfig=FakeSampleConfig,
                                 run_train=run_train, run_sample=run_sample)


def _fake_fit(rec: Recorder):
    """Deterministic in (seed, images): more synthetic images -> more test images right."""

    def fit(cfg, data, out_dir):
        out_dir = Path(out_dir)
        if (out_dir / "result.json").is_file():
            return read_json(out_dir / "result.json")
        if out_dir.name in rec.fail:
            raise RuntimeError("simulated crash")
        rec.fits.append(out_dir.name)
        rec.seeds[out_dir.name] = cfg.seed
        records = load_manifest(data.real_dir)
        classes = load_classes(data.real_dir)
        n_syn = len(data.synthetic_ids or [])
        rng = np.random.default_rng(cfg.seed)
        result = {"train_real": len(data.real_train_ids or []), "train_synthetic": n_syn, "best_epoch": 1,
                  "epochs_run": 2, "seconds": 0.1}
        buffer = io.StringIO()
        out = csv.writer(buffer, lineterminator="\n")
        out.writerow(["split", "id", "true_class", "pred_class"])
        for split in ("val", "test"):
            rows = select(records, split=split)
            # image-level draws shared by all conditions of a seed: a bigger ratio fixes a superset of errors
            draws = rng.random(len(rows))
            right = draws < 0.4 + 0.5 * min(1.0, n_syn / 36)
            pred = [r.label if ok else (r.label + 1) % len(classes) for r, ok in zip(rows, right)]
            probs = np.eye(len(classes))[pred]
            result[split] = classification_metrics(np.array([r.label for r in rows]), probs, classes)
            for r, p in zip(rows, pred):
                out.writerow([split, r.id, r.class_name, classes[p]])
        write_text(out_dir / "predictions.csv", buffer.getvalue())
        for epoch in range(2):
            append_jsonl(out_dir / "metrics.jsonl", {"epoch": epoch, "train_loss": 1.0 / (epoch + 1),
                                                      "val_loss": 1.2 / (epoch + 1), "val_accuracy": 0.5})
        write_json(out_dir / "result.json", result)
        return result

    return fit


def install_fakes(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """Replace the generator backends and the classifier's fit with the fakes above (undone after the test)."""
    rec = Recorder()
    monkeypatch.setattr("mrisynth.generate.backend_module", lambda name: _fake_backend(rec))
    monkeypatch.setattr("mrisynth.classify.fit", _fake_fit(rec))
    return rec


@pytest.fixture
def fakes(monkeypatch) -> Recorder:
    return install_fakes(monkeypatch)


def small_config(data_dir: Path, **changes) -> StudyConfig:
    cfg = from_dict(StudyConfig, {
        "data": {"manifest": str(data_dir)}, "generator": {"backend": "ddpm"}, "classifier": {"base": "tiny"},
        "ratios": [0, 0.5, 1, 2], "seeds": [0, 1], "audit": {"enabled": False}, "bootstrap": 200,
    })
    return dataclasses.replace(cfg, **changes)


def test_full_run_writes_every_trial_and_the_report(tiny_manifest_dir, tmp_path, fakes):
    run = tmp_path / "run"
    outcome = run_study(small_config(tiny_manifest_dir), run, report=run_report)
    assert outcome["complete"] and not outcome["failed"]
    assert sorted(fakes.fits) == sorted(f"r{r}-s{s}" for r in ("0", "0.5", "1", "2") for s in (0, 1))
    assert fakes.sampled == [12]  # 6 real train images per class x ratio 2, generated once
    info = read_json(run / "trials" / "r0.5-s1" / "trial.json")
    assert info["train_real"] == 18 and info["synthetic_per_class"] == {"glioma": 3, "meningioma": 3, "pituitary": 3}
    for name in ("index.html", "report.md", "results.csv", "summary.json"):
        assert (run / "report" / name).is_file()
    assert (run / "config.yaml").is_file()
    summary = read_json(run / "report" / "summary.json")
    compared = {c["name"]: c.get("comparison") for c in summary["conditions"]}
    assert set(compared) == {"r0", "r0.5", "r1", "r2"} and compared.pop("r0") is None  # the baseline itself
    # Every other condition is compared with real-only. The fake gets a superset of the images right as the
    # ratio grows, so each gain is positive and grows with the ratio; none can read "hurts".
    assert all(isinstance(c["verdict"], str) and c["verdict"] and c["verdict"] != "hurts" for c in compared.values())
    assert 0 < compared["r0.5"]["diff"] < compared["r1"]["diff"] < compared["r2"]["diff"]


def test_every_condition_of_a_seed_trains_with_the_same_classifier_seed(tiny_manifest_dir, tmp_path, fakes):
    """Paired comparisons need each condition's classifier to differ from real-only by its data only."""
    run = tmp_path / "run"
    run_study(small_config(tiny_manifest_dir, controls=[REAL_OVERSAMPLED]), run)
    by_study_seed: dict[int, set[int]] = {}
    for name, seed in fakes.seeds.items():
        info = read_json(run / "trials" / name / "trial.json")
        assert info["classifier_seed"] == seed
        by_study_seed.setdefault(info["seed"], set()).add(seed)
    assert len(fakes.seeds) == 10  # 4 ratios + 1 control, x 2 seeds
    assert all(len(seeds) == 1 for seeds in by_study_seed.values()), by_study_seed
    assert len(set.union(*by_study_seed.values())) == 2  # and the two study seeds really differ


def test_shard_union_equals_the_full_run(tiny_manifest_dir, tmp_path, fakes):
    cfg = small_config(tiny_manifest_dir)
    run_study(cfg, tmp_path / "full")
    full_fits = sorted(fakes.fits)
    fakes.fits.clear()
    for i in range(3):
        run_study(cfg, tmp_path / "sharded", shard=(i, 3), report=run_report)
    assert sorted(fakes.fits) == full_fits  # every trial once, none twice
    for name in full_fits:
        a = read_json(tmp_path / "full" / "trials" / name / "result.json")
        b = read_json(tmp_path / "sharded" / "trials" / name / "result.json")
        assert a == b
    assert (tmp_path / "sharded" / "report" / "index.html").is_file()  # the last shard to finish reports


def test_resume_skips_finished_trials_and_redoes_only_the_missing(tiny_manifest_dir, tmp_path, fakes):
    cfg = small_config(tiny_manifest_dir)
    run = tmp_path / "run"
    fakes.fail = {"r1-s0"}
    outcome = run_study(cfg, run)
    assert outcome["failed"] == ["r1-s0"] and not outcome["complete"]
    assert trial_status(run)["r1-s0"] == "failed"
    assert not (run / "report").exists()
    fakes.fail = set()
    fakes.fits.clear()
    outcome = run_study(cfg, run)
    assert fakes.fits == ["r1-s0"] and outcome["complete"]
    assert outcome["trained"] == ["r1-s0"] and len(outcome["already_done"]) == 7
    assert fakes.sampled == [12] and len(fakes.trained_on) == 1  # generator and pool made once, not redone
    fakes.fits.clear()
    run_study(cfg, run)
    assert fakes.fits == []


def test_status_shows_pending_running_and_done(tiny_manifest_dir, tmp_path, fakes):
    cfg = small_config(tiny_manifest_dir, seeds=[0])
    run = tmp_path / "run"
    run_study(cfg, run, shard=(0, 2))
    states = trial_status(run)
    assert states == {"r0-s0": "done", "r0.5-s0": "pending", "r1-s0": "done", "r2-s0": "pending"}
    with FileLock(str(run / ".locks" / "trial-r0.5-s0.lock")):  # another job is training this trial
        assert trial_status(run)["r0.5-s0"] == "running"
        outcome = run_study(cfg, run, shard=(1, 2))
        assert outcome["skipped_running"] == ["r0.5-s0"] and not outcome["complete"]
    run_study(cfg, run, shard=(1, 2))
    assert set(trial_status(run).values()) == {"done"}


def test_rerun_with_another_config_is_refused(tiny_manifest_dir, tmp_path, fakes):
    run_study(small_config(tiny_manifest_dir, seeds=[0]), tmp_path / "run")
    with pytest.raises(UserError, match=r"was started with other settings \(seeds: \[0\] then, \[0, 1\] now\)"):
        run_study(small_config(tiny_manifest_dir, seeds=[0, 1]), tmp_path / "run")


def test_folds_test_every_image_once_and_train_generators_per_fold(tiny_manifest_dir, tmp_path, fakes):
    cfg = small_config(tiny_manifest_dir, folds=3, seeds=[0], ratios=[0, 1])
    run = tmp_path / "run"
    run_study(cfg, run)
    assert len(fakes.trained_on) == 3
    all_ids = {r.id for r in load_manifest(tiny_manifest_dir)}
    tested: list[str] = []
    for fold, gen_data in enumerate(fakes.trained_on):
        records = load_manifest(gen_data)
        test_patients = {r.patient_id for r in records if r.split == "test"}
        train_patients = {r.patient_id for r in records if r.split == "train"}
        assert not test_patients & train_patients  # the generator never sees the fold's test patients
        with open(run / "trials" / f"r0-s0-f{fold}" / "predictions.csv") as f:
            tested += [row["id"] for row in csv.DictReader(f) if row["split"] == "test"]
    assert sorted(tested) == sorted(all_ids)


def test_a_fresh_study_marks_its_trial_folders_as_classifier_runs(tiny_manifest_dir, tmp_path, fakes, caplog):
    """Each trial folder is claimed before the study writes trial.json into it, so a fresh run adopts nothing
    ("adopting ... written by an earlier mrisynth" was logged for every trial)."""
    from mrisynth.files import output_kind

    caplog.set_level(logging.INFO, logger="mrisynth.files")
    run_study(small_config(tiny_manifest_dir, seeds=[0]), tmp_path / "run")
    assert not [r for r in caplog.records if "adopting" in r.getMessage()]
    assert output_kind(tmp_path / "run" / "trials" / "r1-s0") == "classifier"
