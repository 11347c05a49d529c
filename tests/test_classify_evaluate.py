"""`classifier evaluate` / `predict`: the training run's preprocessing exactly, classes by name, clear refusals."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mrisynth.classify import ClassifierConfig, TrainData, fit
from mrisynth.classify.data import load_train_data
from mrisynth.classify.inference import Preprocessing, read_images, run_evaluate, run_predict
from mrisynth.cli import main
from mrisynth.data.manifest import load_manifest
from mrisynth.errors import UserError


def tiny_cfg(**changes) -> ClassifierConfig:
    # 16 px and 2 epochs: about a second on a shared CPU
    return ClassifierConfig(**{"model": "tiny", "image_size": 16, "epochs": 2, "batch_size": 8,
                               "eval_batch_size": 64, **changes})


@pytest.fixture
def run_dir(tiny_manifest_dir, tmp_path) -> Path:
    fit(tiny_cfg(), TrainData(real_dir=tiny_manifest_dir), tmp_path / "run")
    return tmp_path / "run"


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def split_as_tree(data_dir: Path, root: Path, *, names: dict[str, str] | None = None, split: str = "test") -> Path:
    """Copy one split of a prepared folder into <class>/<id>.png folders, renaming classes by `names`."""
    names = names or {}
    for rec in load_manifest(data_dir):
        if rec.split == split:
            folder = root / names.get(rec.class_name, rec.class_name)
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(rec.path, folder / Path(rec.path).name)
    return root


def test_evaluate_reproduces_the_runs_own_test_predictions_with_class_aliases(run_dir, tiny_manifest_dir, tmp_path):
    aliases = {"glioma": "Glioma_Tumor", "meningioma": "meningioma tumour", "pituitary": "Pituitary-Tumor"}
    tree = split_as_tree(tiny_manifest_dir, tmp_path / "external", names=aliases)
    metrics = run_evaluate(run_dir, tree)
    out = run_dir / "external" / "external"
    rows = {r["id"]: r for r in read_csv(out / "predictions.csv")}
    own = {r["id"]: r for r in read_csv(run_dir / "predictions.csv") if r["split"] == "test"}
    assert sorted(rows) == sorted(own) and len(rows) == 9
    for image_id, row in rows.items():  # same images -> same probabilities as training's own evaluation
        assert row["true_class"] == own[image_id]["true_class"] and row["pred_class"] == own[image_id]["pred_class"]
        for c in ("glioma", "meningioma", "pituitary"):
            assert abs(float(row[f"prob_{c}"]) - float(own[image_id][f"prob_{c}"])) < 1e-5
    assert list(rows[next(iter(rows))]) == ["id", "path", "true_class", "pred_class", "prob_glioma",
                                            "prob_meningioma", "prob_pituitary"]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    result = json.loads((run_dir / "result.json").read_text())
    assert saved["accuracy"] == pytest.approx(result["test"]["accuracy"])
    assert saved["confusion"] == result["test"]["confusion"] and saved["count"] == 9
    assert saved["preprocessing"] == {"image_size": 16, "fit": "resize", "normalize": "none"}


def test_evaluate_a_prepared_folder_by_split(run_dir, tiny_manifest_dir, tmp_path):
    metrics = run_evaluate(run_dir, tiny_manifest_dir, out=tmp_path / "ev", split="val")
    result = json.loads((run_dir / "result.json").read_text())
    assert metrics["count"] == 9 and metrics["accuracy"] == pytest.approx(result["val"]["accuracy"])
    with pytest.raises(UserError, match="no images in split 'holdout'"):
        run_evaluate(run_dir, tiny_manifest_dir, out=tmp_path / "ev2", split="holdout")


def test_unknown_class_is_refused_or_with_the_flag_left_out(run_dir, tiny_manifest_dir, tmp_path):
    tree = split_as_tree(tiny_manifest_dir, tmp_path / "ext")
    (tree / "no_tumor").mkdir()
    for path in (tree / "glioma").iterdir():
        shutil.copy(path, tree / "no_tumor" / f"healthy-{path.name}")
    out = tmp_path / "ev"
    with pytest.raises(UserError) as err:
        run_evaluate(run_dir, tree, out=out)
    message = str(err.value)
    assert "no_tumor (3 images)" in message and "--exclude-unknown" in message and "\n" not in message
    assert not out.exists()  # refused before anything was written
    metrics = run_evaluate(run_dir, tree, out=out, exclude_unknown=True)
    assert metrics["excluded"] == {"no_tumor": 3} and metrics["count"] == 9
    assert len(read_csv(out / "predictions.csv")) == 9


def test_rgb_stored_grey_is_read_as_grey_and_colour_refused(run_dir, tmp_path):
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (20, 20), dtype=np.uint8)
    (tmp_path / "in").mkdir()
    Image.fromarray(grey, "L").save(tmp_path / "in" / "grey.png")
    Image.fromarray(np.stack([grey] * 3, axis=-1), "RGB").save(tmp_path / "in" / "rgb.png")
    assert run_predict(run_dir, [tmp_path / "in"], tmp_path / "p.csv") == 2
    rows = {r["id"]: r for r in read_csv(tmp_path / "p.csv")}
    assert {k: v for k, v in rows["grey"].items() if k not in ("id", "path")} == \
        {k: v for k, v in rows["rgb"].items() if k not in ("id", "path")}
    colour = np.stack([grey, 255 - grey, grey // 2], axis=-1)
    Image.fromarray(colour, "RGB").save(tmp_path / "in" / "colour.png")
    with pytest.raises(UserError, match="colour.png is a colour image"):
        run_predict(run_dir, [tmp_path / "in"], tmp_path / "p2.csv")
    assert not (tmp_path / "p2.csv").exists()


def test_non_square_images_are_squashed_or_letterboxed_as_the_run_says(tmp_path, caplog):
    path = tmp_path / "wide.png"
    Image.fromarray(np.full((32, 40), 200, np.uint8), "L").save(path)
    with caplog.at_level(logging.WARNING):
        squashed = read_images([path], Preprocessing(image_size=16, fit="resize", normalize="none"))
    assert "1 of 1 images are not square: squashed to the square at 16 px" in caplog.text
    assert (squashed == 200).all()
    boxed = read_images([path], Preprocessing(image_size=16, fit="letterbox", normalize="none"))
    # 40 x 32 -> 16 x 13: one black row above, two below
    assert (boxed[0, 0] == 0).all() and (boxed[0, 1:14] == 200).all() and (boxed[0, 14:] == 0).all()


@pytest.mark.parametrize("spec", ["percentile", "zscore"])
def test_evaluation_inputs_are_the_training_inputs_under_each_normalisation(tiny_manifest_dir, spec):
    sets = load_train_data(TrainData(real_dir=tiny_manifest_dir), image_size=16, device="cpu", normalize=spec)
    paths = {r.id: r.path for r in load_manifest(tiny_manifest_dir)}
    images = read_images([paths[i] for i in sets.test.ids], Preprocessing(image_size=16, fit="resize",
                                                                          normalize=spec))
    assert np.array_equal(images, sets.test.images[:, 0].numpy())
    plain = load_train_data(TrainData(real_dir=tiny_manifest_dir), image_size=16, device="cpu")
    assert not np.array_equal(plain.test.images.numpy(), sets.test.images.numpy())


def test_a_run_trained_with_normalisation_is_evaluated_with_it(tiny_manifest_dir, tmp_path):
    fit(tiny_cfg(normalize="zscore"), TrainData(real_dir=tiny_manifest_dir), tmp_path / "run")
    tree = split_as_tree(tiny_manifest_dir, tmp_path / "ext")
    run_evaluate(tmp_path / "run", tree, out=tmp_path / "ev")
    own = {r["id"]: r for r in read_csv(tmp_path / "run" / "predictions.csv") if r["split"] == "test"}
    for row in read_csv(tmp_path / "ev" / "predictions.csv"):
        assert abs(float(row["prob_glioma"]) - float(own[row["id"]]["prob_glioma"])) < 1e-5


def test_predict_files_and_folders_one_row_each(run_dir, tiny_manifest_dir, tmp_path):
    tree = split_as_tree(tiny_manifest_dir, tmp_path / "ext")
    one = next((tree / "glioma").iterdir())
    n = run_predict(run_dir, [tree, one], tmp_path / "pred.csv")  # `one` is also inside `tree`: counted once
    rows = read_csv(tmp_path / "pred.csv")
    assert n == len(rows) == 9 and len({r["path"] for r in rows}) == 9
    assert list(rows[0]) == ["id", "path", "pred_class", "prob_glioma", "prob_meningioma", "prob_pituitary"]
    assert all(abs(sum(float(r[f"prob_{c}"]) for c in ("glioma", "meningioma", "pituitary")) - 1) < 1e-4
               for r in rows)
    for bad, message in ([tmp_path / "missing"], "does not exist"), ([tmp_path / "pred.csv"], "not an image file"):
        with pytest.raises(UserError, match=message):
            run_predict(run_dir, bad, tmp_path / "other.csv")
    with pytest.raises(UserError, match="is a folder"):
        run_predict(run_dir, [tree], tmp_path)


def test_cli_evaluate_and_predict(run_dir, tiny_manifest_dir, tmp_path, capsys):
    tree = split_as_tree(tiny_manifest_dir, tmp_path / "siteB")
    assert main(["-q", "classifier", "evaluate", str(run_dir), "--data", str(tree)]) == 0
    printed = capsys.readouterr().out
    assert "9 images: accuracy" in printed and str(run_dir / "external" / "siteB") in printed
    assert (run_dir / "external" / "siteB" / "metrics.json").is_file()
    assert main(["-q", "classifier", "predict", str(run_dir), str(tree), "--out", str(tmp_path / "p.csv")]) == 0
    assert "9 images ->" in capsys.readouterr().out
    assert main(["-q", "classifier", "evaluate", str(tmp_path), "--data", str(tree)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not a trained classifier run" in err
