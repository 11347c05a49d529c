"""Splits: image-level (seed), replayed from a file, patient-level, patient-wise folds, trailing-letter groups."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest

from mrisynth.data.manifest import ImageRecord
from mrisynth.data.splits import apply_fold, assign_splits, patient_key
from mrisynth.errors import UserError

CLASSES = ("glioma", "meningioma", "pituitary")


def make_records(n_patients: int = 90, *, seed: int = 0, letters: bool = False) -> list[ImageRecord]:
    """Patients of one class each, 3..25 slices per patient (uneven, like real scans)."""
    rng = np.random.default_rng(seed)
    records = []
    for p in range(n_patients):
        label = p % 3
        pid = f"MR{p // 2:05d}{'BE'[p % 2]}" if letters else f"P{p:03d}"
        for s in range(int(rng.integers(3, 26))):
            records.append(ImageRecord(id=f"{p}-{s}", path=f"/x/{p}-{s}.png", class_name=CLASSES[label],
                                       label=label, patient_id=pid))
    return records


def shares(records):
    counts = Counter(r.class_name for r in records)
    return {c: counts[c] / len(records) for c in CLASSES}


def splits_of_patients(records, **kw):
    out = defaultdict(set)
    for r in records:
        out[patient_key(r.patient_id, **kw)].add(r.split)
    return out


def test_patient_split_is_disjoint_stratified_and_reproducible():
    records = make_records()
    out = assign_splits(records, "patient", seed=7)
    assert all(len(s) == 1 for s in splits_of_patients(out).values())
    whole = shares(out)
    for split in ("train", "val", "test"):
        part = [r for r in out if r.split == split]
        assert part, split
        assert max(abs(shares(part)[c] - whole[c]) for c in CLASSES) <= 0.02 + 1e-9
    sizes = Counter(r.split for r in out)
    assert abs(sizes["train"] / len(out) - 0.7) < 0.06 and abs(sizes["test"] / len(out) - 0.1) < 0.05
    again = assign_splits(records, "patient", seed=7)
    assert [r.split for r in again] == [r.split for r in out]
    assert [r.split for r in assign_splits(records, "patient", seed=8)] != [r.split for r in out]
    assert all(r.split == "" for r in records)  # inputs untouched


def test_trailing_letter_grouping_keeps_families_together():
    records = make_records(letters=True)
    assert patient_key("MR024780B", group_trailing_letter=True) == "MR024780"
    assert patient_key("100360", group_trailing_letter=True) == "100360"
    grouped = assign_splits(records, "patient", seed=1, group_trailing_letter=True, tolerance=0.05)
    assert all(len(s) == 1 for s in splits_of_patients(grouped, group_trailing_letter=True).values())
    ungrouped = assign_splits(records, "patient", seed=1, tolerance=0.05)
    assert any(len(s) > 1 for s in splits_of_patients(ungrouped, group_trailing_letter=True).values())


def test_patient_split_needs_patient_ids_and_a_feasible_tolerance():
    records = make_records(12)
    records[3].patient_id = ""
    with pytest.raises(UserError, match="needs patient ids"):
        assign_splits(records, "patient")
    # Three patients, one per class: no split can hold every class in the right share.
    tiny = make_records(3)
    with pytest.raises(UserError, match="no assignment of 3 patients"):
        assign_splits(tiny, "patient")


def test_seed_split_is_stratified_70_20_10_and_reproducible():
    records = make_records()
    out = assign_splits(records, "seed", seed=42)
    for name in CLASSES:
        rows = [r for r in out if r.class_name == name]
        counts = Counter(r.split for r in rows)
        assert counts["train"] == round(0.7 * len(rows)) and counts["val"] == round(0.2 * len(rows))
    assert [r.split for r in assign_splits(records, "seed", seed=42)] == [r.split for r in out]


def test_file_split_replays_exactly_and_refuses_missing_ids(tmp_path):
    records = make_records(9)
    wanted = {r.id: ("train", "val", "test")[i % 3] for i, r in enumerate(records)}
    path = tmp_path / "split.csv"
    path.write_text("id,split\n" + "".join(f"{k},{v}\n" for k, v in wanted.items()))
    out = assign_splits(records, f"file:{path}")
    assert {r.id: r.split for r in out} == wanted
    path.write_text("id,split\n" + "".join(f"{k},{v}\n" for k, v in list(wanted.items())[1:]))
    with pytest.raises(UserError, match="does not list 1 image"):
        assign_splits(records, f"file:{path}")
    with pytest.raises(UserError, match="does not exist"):
        assign_splits(records, f"file:{tmp_path / 'nope.csv'}")


def test_folds_are_made_patient_wise_and_split_marks_the_first_fold():
    records = make_records()
    out = assign_splits(records, "folds", seed=3, tolerance=0.04)
    assert sorted({r.fold for r in out}) == [1, 2, 3, 4, 5]
    fold_of = defaultdict(set)
    for r in out:
        fold_of[r.patient_id].add(r.fold)
    assert all(len(f) == 1 for f in fold_of.values())
    assert {r.split for r in out if r.fold == 1} == {"test"} and {r.split for r in out if r.fold == 2} == {"val"}
    assert {r.split for r in out if r.fold > 2} == {"train"}
    rotated = apply_fold(out, test_fold=5)
    assert {r.split for r in rotated if r.fold == 5} == {"test"} and {r.split for r in rotated if r.fold == 1} == {"val"}


def test_given_folds_are_kept():
    records = make_records(30)
    for r in records:
        r.fold = int(r.patient_id[1:]) % 3 + 1
    out = assign_splits(records, "folds")
    assert [r.fold for r in out] == [r.fold for r in records]
    assert {r.split for r in out if r.fold == 1} == {"test"}


def test_unknown_split_and_bad_fractions_are_refused():
    with pytest.raises(UserError, match="unknown split"):
        assign_splits(make_records(6), "random")
    with pytest.raises(UserError, match="fractions"):
        assign_splits(make_records(6), "seed", fractions=(0.5, 0.2, 0.1))


@pytest.mark.realdata
def test_figshare_patient_split_and_reference_split(figshare_dir, tmp_path):
    from mrisynth.data.sources import read_source

    records = read_source(figshare_dir, tmp_path).records
    out = assign_splits(records, "patient", seed=42)
    assert len(out) == 3064 and len({r.patient_id for r in out}) == 233
    assert all(len(s) == 1 for s in splits_of_patients(out).values())
    grouped = assign_splits(records, "patient", seed=42, group_trailing_letter=True)
    assert all(len(s) == 1 for s in splits_of_patients(grouped, group_trailing_letter=True).values())
    ref = assign_splits(records, f"file:{figshare_dir / 'seed_split.csv'}")
    assert Counter(r.split for r in ref) == {"train": 2144, "val": 612, "test": 308}
    assert sum(len(s) > 1 for s in splits_of_patients(ref).values()) == 209


def _two_classes() -> list[ImageRecord]:
    return [ImageRecord(id=f"{name}{i:02d}", path=f"/x/{name}{i:02d}.png", class_name=name, label=k)
            for k, name in enumerate(("glioma", "meningioma")) for i in range(10)]


def test_seed_split_is_pinned_and_independent_of_listing_order():
    records = _two_classes()
    # Pinned: a given seed must give the same split in every version and on every machine (the reference replay).
    held_out = {r.id: r.split for r in assign_splits(records, "seed", seed=42) if r.split != "train"}
    assert held_out == {"glioma01": "val", "glioma09": "val", "glioma08": "test",
                        "meningioma00": "val", "meningioma03": "val", "meningioma01": "test"}
    # Files listed in another order (another file system, another class first) must not move any image.
    wanted = {r.id: r.split for r in assign_splits(records, "seed", seed=42)}
    shuffled = [records[i] for i in np.random.default_rng(3).permutation(len(records))]
    for listing in (records[::-1], shuffled):
        assert {r.id: r.split for r in assign_splits(listing, "seed", seed=42)} == wanted


def test_file_split_reads_split_and_class_spellings_and_refuses_others(tmp_path):
    records = make_records(3)  # patients 0, 1, 2: glioma, meningioma, pituitary
    names = ["Training", "Validation", " TEST "]
    classes = {"glioma": "Glioma", "meningioma": "meningioma_tumor", "pituitary": "Pituitary Tumor"}
    path = tmp_path / "split.csv"

    def write(split_of, class_of) -> str:
        path.write_text("id,split,class\n" + "".join(f"{r.id},{split_of(r)},{class_of(r)}\n" for r in records))
        return f"file:{path}"

    out = assign_splits(records, write(lambda r: names[r.label], lambda r: classes[r.class_name]))
    assert {r.split for r in out if r.label == 0} == {"train"} and {r.split for r in out if r.label == 1} == {"val"}
    assert {r.split for r in out if r.label == 2} == {"test"}
    with pytest.raises(UserError, match="split 'holdout' of id .* is not train, val or test"):
        assign_splits(records, write(lambda r: "holdout", lambda r: r.class_name))
    # A split file written for another class mapping: an image listed under another class is refused.
    swapped = {"glioma": "meningioma", "meningioma": "glioma", "pituitary": "pituitary"}
    with pytest.raises(UserError, match="is 'meningioma' there but 'glioma' in the source"):
        assign_splits(records, write(lambda r: "train", lambda r: swapped[r.class_name]))


def test_a_class_too_rare_for_every_split_is_warned_about_at_prepare(tmp_path, caplog):
    """#18 defect 11: a class with one image can reach only one split; its per-class val/test metrics would be
    undefined, so prepare says which split lacks it."""
    import logging

    from mrisynth.data.images import save_grayscale_png
    from mrisynth.data.manifest import load_manifest
    from mrisynth.data.prepare import PrepareConfig, run_prepare

    for name, n in (("glioma", 10), ("meningioma", 10), ("pituitary", 1)):
        (tmp_path / "src" / name).mkdir(parents=True)
        for k in range(n):
            save_grayscale_png(np.full((8, 8), 10 * k, np.uint8), tmp_path / "src" / name / f"{name}{k}.png")
    caplog.set_level(logging.WARNING, logger="mrisynth.data.splits")
    run_prepare(tmp_path / "src", tmp_path / "d", PrepareConfig(split="seed"))
    where = {r.split for r in load_manifest(tmp_path / "d") if r.class_name == "pituitary"}
    missing = {"train", "val", "test"} - where
    assert len(missing) == 2
    for split in missing:
        assert any(f"the {split} split has no image of class pituitary" in r.getMessage() for r in caplog.records)
