"""The real-fraction axis and the pretrain-synthetic control: nested, class-stratified patient subsets that never
touch validation or test, one generator per fraction, synthetic counts that follow the fraction, and a two-phase
trial that resumes after a kill in either phase."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mrisynth.data.manifest import ImageRecord, load_manifest, select
from mrisynth.errors import UserError
from mrisynth.files import read_json
from mrisynth.study import StudyConfig, run_study
from mrisynth.study.fractions import kept_patients, patient_order, subset_records
from test_study_runner import install_fakes, small_config


def _records(patients_per_class: dict[str, int], *, slices: int = 2) -> list[ImageRecord]:
    """Train patients per class as given, plus two val and two test patients per class."""
    out = []
    for label, (cls, n) in enumerate(patients_per_class.items()):
        for split, count in (("train", n), ("val", 2), ("test", 2)):
            for p in range(count):
                for s in range(slices):
                    out.append(ImageRecord(id=f"{cls}-{split}{p}-{s}", path=f"/x/{cls}-{split}{p}-{s}.png",
                                           class_name=cls, label=label, patient_id=f"{cls}-{split}{p}", split=split))
    return out


def _train_patients(records: list[ImageRecord]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in records:
        if r.split == "train":
            out.setdefault(r.class_name, set()).add(r.patient_id)
    return out


def test_fractions_are_nested_stratified_and_leave_val_and_test_alone():
    records = _records({"glioma": 40, "meningioma": 20, "pituitary": 10})
    previous: set[str] = set()
    sizes = {}
    for fraction in (0.1, 0.25, 0.5, 1.0):
        kept = subset_records(records, fraction, fold=-1)
        patients = _train_patients(kept)
        sizes[fraction] = {cls: len(p) for cls, p in patients.items()}
        everyone = set().union(*patients.values())
        assert previous <= everyone, f"the {fraction:g} patients do not contain the smaller fraction's"
        previous = everyone
        # val and test rows are exactly the original ones, whatever the fraction
        assert [r.id for r in kept if r.split != "train"] == [r.id for r in records if r.split != "train"]
        # a patient is kept or dropped whole: all its slices
        assert all(len([r for r in kept if r.patient_id == p]) == 2 for p in everyone)
    # ceil(f x P_c), at least one patient of each class
    assert sizes[0.1] == {"glioma": 4, "meningioma": 2, "pituitary": 1}
    assert sizes[0.25] == {"glioma": 10, "meningioma": 5, "pituitary": 3}
    assert sizes[0.5] == {"glioma": 20, "meningioma": 10, "pituitary": 5}
    assert sizes[1.0] == {"glioma": 40, "meningioma": 20, "pituitary": 10}


def test_the_subset_does_not_depend_on_the_order_of_the_rows_and_differs_by_fold():
    records = _records({"glioma": 30, "meningioma": 30})
    forward = kept_patients(patient_order([r for r in records if r.split == "train"], fold=0), 0.2)
    backward = kept_patients(patient_order([r for r in reversed(records) if r.split == "train"], fold=0), 0.2)
    assert forward == backward and len(forward) == 12
    other_fold = kept_patients(patient_order([r for r in records if r.split == "train"], fold=1), 0.2)
    assert other_fold != forward  # each fold draws its own subset


@pytest.mark.parametrize("bad", [[0.0, 1.0], [1.5], [], [0.5, 0.5]])
def test_bad_real_fractions_are_refused_at_load(bad):
    with pytest.raises(UserError, match="real_fractions must be distinct numbers in"):
        StudyConfig(real_fractions=bad)


def test_each_fraction_trains_its_own_generator_on_its_own_patients_only(tiny_manifest_dir, tmp_path, monkeypatch):
    fakes = install_fakes(monkeypatch)
    cfg = small_config(tiny_manifest_dir, real_fractions=[0.5, 1.0], seeds=[0], ratios=[0, 1])
    run = tmp_path / "run"
    assert run_study(cfg, run)["complete"]
    assert sorted(fakes.fits) == ["r0-s0", "r0-s0-real0.5", "r1-s0", "r1-s0-real0.5"]
    # one generator per fraction, each trained on its fraction's data folder
    assert sorted(Path(d).name for d in fakes.trained_on) == ["data", "real-0.5"]
    original = load_manifest(tiny_manifest_dir)
    val_test = {r.patient_id for r in original if r.split != "train"}
    half = load_manifest(tiny_manifest_dir / "real-0.5" / "manifest.csv")
    half_train = {r.patient_id for r in select(half, split="train")}
    assert len(half_train) == 3 and not half_train & val_test  # 1 of the 2 train patients of each class
    assert [r.id for r in select(half, split="test")] == [r.id for r in select(original, split="test")]
    # synthetic counts follow the fraction's real count: ratio 1 adds as many images as the fraction has
    info = read_json(run / "trials" / "r1-s0-real0.5" / "trial.json")
    assert (info["train_real"], info["train_synthetic"], info["fraction"]) == (9, 9, 0.5)
    assert read_json(run / "trials" / "r1-s0" / "trial.json")["train_synthetic"] == 18
    assert fakes.sampled == [6, 3]  # each pool holds what its own ratio-1 condition takes per class


def test_pretrain_synthetic_trains_in_two_phases_and_resumes_after_a_kill_in_either(
        tiny_manifest_dir, tmp_path, monkeypatch):
    fakes = install_fakes(monkeypatch)
    import mrisynth.classify

    seen: list[tuple[str, str | None, int, int]] = []
    fake_fit = mrisynth.classify.fit

    def recording_fit(cfg, data, out_dir):
        seen.append((Path(out_dir).name, cfg.weights, len(data.real_train_ids or []), len(data.synthetic_ids or [])))
        return fake_fit(cfg, data, out_dir)

    monkeypatch.setattr("mrisynth.classify.fit", recording_fit)
    cfg = small_config(tiny_manifest_dir, seeds=[0], ratios=[0], controls=["pretrain-synthetic"],
                       control_ratios=[1.0])
    run = tmp_path / "run"
    fakes.fail = {"pretrain"}  # killed in phase 1
    assert run_study(cfg, run)["failed"] == ["pretrain-synthetic-r1-s0"]
    fakes.fail = {"pretrain-synthetic-r1-s0"}  # killed in phase 2, after phase 1 finished
    assert run_study(cfg, run)["failed"] == ["pretrain-synthetic-r1-s0"]
    assert (run / "trials" / "pretrain-synthetic-r1-s0" / "pretrain" / "result.json").is_file()
    fakes.fail = set()
    fakes.fits.clear()
    outcome = run_study(cfg, run)
    assert outcome["complete"] and outcome["trained"] == ["pretrain-synthetic-r1-s0"]
    assert fakes.fits == ["pretrain-synthetic-r1-s0"]  # phase 1 was not trained again
    phase1 = [s for s in seen if s[0] == "pretrain"]
    phase2 = [s for s in seen if s[0] == "pretrain-synthetic-r1-s0"]
    assert phase1[-1][2:] == (0, 18)  # synthetic images only: ratio 1 of 18 real
    assert phase2[-1][1].endswith("pretrain-synthetic-r1-s0/pretrain/best.safetensors")
    assert phase2[-1][2:] == (18, 0)  # then the real images only, from phase 1's weights
    # its compute-matched real-only arm comes along
    assert (run / "trials" / "real-oversampled-r1-s0" / "result.json").is_file()


def test_external_sets_are_scored_in_every_trial_and_missing_scores_are_redone(
        tiny_manifest_dir, tmp_path, monkeypatch):
    install_fakes(monkeypatch)
    scored: list[tuple[str, str]] = []

    def fake_evaluate(run_dir, data_dir, *, out, **_):
        from mrisynth.files import write_json

        scored.append((Path(run_dir).name, Path(data_dir).name))
        write_json(Path(out) / "metrics.json", {"accuracy": 0.5})

    monkeypatch.setattr("mrisynth.classify.inference.run_evaluate", fake_evaluate)
    site_b = tmp_path / "site-b"
    site_b.mkdir()
    cfg = small_config(tiny_manifest_dir, seeds=[0], ratios=[0, 1], external=[str(site_b)])
    run = tmp_path / "run"
    assert run_study(cfg, run)["complete"]
    assert sorted(scored) == [("r0-s0", "site-b"), ("r1-s0", "site-b")]
    (run / "trials" / "r1-s0" / "external" / "site-b" / "metrics.json").unlink()  # e.g. killed while scoring
    scored.clear()
    outcome = run_study(cfg, run)
    assert scored == [("r1-s0", "site-b")] and outcome["trained"] == ["r1-s0"] and outcome["complete"]


def test_a_missing_or_ambiguous_external_set_is_refused_at_load(tmp_path):
    with pytest.raises(UserError, match="external: .*nowhere is not a folder"):
        StudyConfig(external=[str(tmp_path / "nowhere")])
    for d in ("a/site", "b/site"):
        (tmp_path / d).mkdir(parents=True)
    with pytest.raises(UserError, match="two sets are named 'site'"):
        dataclasses.replace(StudyConfig(), external=[str(tmp_path / "a/site"), str(tmp_path / "b/site")])


def test_status_shows_each_fractions_progress(tiny_manifest_dir, tmp_path, monkeypatch, capsys):
    from mrisynth.cli import main

    install_fakes(monkeypatch)
    cfg = small_config(tiny_manifest_dir, real_fractions=[0.5, 1.0], seeds=[0], ratios=[0, 1])
    run = tmp_path / "run"
    run_study(cfg, run, shard=(0, 2))  # trials 0 and 2 of [r0, r1 at 100%, r0, r1 at 50%]
    capsys.readouterr()
    assert main(["study", "status", str(run)]) == 0
    out = capsys.readouterr().out
    assert "real fraction 1: done: 1, pending: 1 (of 2)" in out
    assert "real fraction 0.5: done: 1, pending: 1 (of 2)" in out


def test_the_report_shows_regimes_exchange_and_external_sets(tiny_manifest_dir, tmp_path, monkeypatch):
    from mrisynth.report import run_report

    install_fakes(monkeypatch)

    def fake_evaluate(run_dir, data_dir, *, out, **_):  # the external set: the internal test rows again
        from mrisynth.files import write_json, write_text

        write_text(Path(out) / "predictions.csv", (Path(run_dir) / "predictions.csv").read_text())
        write_json(Path(out) / "metrics.json", {"accuracy": 0.0})

    monkeypatch.setattr("mrisynth.classify.inference.run_evaluate", fake_evaluate)
    site_b = tmp_path / "site-b"
    site_b.mkdir()
    cfg = small_config(tiny_manifest_dir, real_fractions=[0.5, 1.0], seeds=[0, 1, 2], ratios=[0, 1, 2],
                       external=[str(site_b)])
    run = tmp_path / "run"
    assert run_study(cfg, run, report=run_report)["complete"]
    summary = read_json(run / "report" / "summary.json")
    names = [c["name"] for c in summary["conditions"]]
    assert names == ["r0", "r1", "r2", "r0-real0.5", "r1-real0.5", "r2-real0.5"]
    half = next(c for c in summary["conditions"] if c["name"] == "r1-real0.5")
    assert half["fraction"] == 0.5 and half["train_real"] == 9 and half["comparison"]["seeds"] == [0, 1, 2]
    grid = summary["regimes"]["grid"]
    assert sorted((c["fraction"], c["ratio"]) for c in grid) == [(0.5, 1.0), (0.5, 2.0), (1.0, 1.0), (1.0, 2.0)]
    assert summary["regimes"]["headline"].startswith("Synthetic images helped")  # the fake: synthetic helps
    assert {r["condition"] for r in summary["regimes"]["exchange"]} == {"r1", "r2"}
    ext = summary["external"]["site-b"]
    assert [c["name"] for c in ext["conditions"]] == names and ext["best"]["condition"] == summary["best"]["name"]
    # the external rows are the internal test rows here, so external and internal comparisons agree
    internal = {c["name"]: c["comparison"]["diff"] for c in summary["conditions"] if c.get("comparison")}
    assert {c["name"]: c["comparison"]["diff"] for c in ext["conditions"] if c.get("comparison")} == internal
    md = (run / "report" / "report.md").read_text()
    assert "## Data regimes: real fraction x ratio" in md and "## External set: site-b" in md
    figures = sorted(p.name for p in (run / "report" / "figures").iterdir())
    assert any("regimes" in f for f in figures) and any("real-images" in f for f in figures)
