"""SD backend, sampling: a tiny generator trained through the CLI, then text2img and img2img synthetic sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mrisynth.cli import main
from mrisynth.data.manifest import load_classes, load_manifest, select
from mrisynth.errors import UserError
from mrisynth.files import sha256_dir
from mrisynth.generate import read_generator_info
from mrisynth.generate.sd import SAMPLE_PRESETS, SampleConfig, run_sample
from sd_tiny import save_tiny_pipeline

CLASSES = ["glioma", "meningioma", "pituitary"]


@pytest.fixture(scope="module")
def generator_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sdgen")


@pytest.fixture
def generator(generator_root: Path) -> Path:
    """A LoRA generator fine-tuned for 2 steps through `mrisynth generator train --backend sd`, once per module.

    Function-scoped (skipped once trained) so that it runs under conftest's one-thread setting, which
    module-scoped fixtures would precede (two threads fighting over the shared cores: 10x slower).
    """
    root = generator_root
    if (root / "gen" / "generator.json").is_file():
        return root / "gen"
    model = save_tiny_pipeline(root / "tiny-sd")
    data = _tiny_data(root)
    code = main(["generator", "train", "--backend", "sd", "--data", str(data), "--out", str(root / "gen"),
                 "--model", str(model), "--preset", "tiny", "--set", "size=16"])
    assert code == 0
    return root / "gen"


def _tiny_data(root: Path) -> Path:
    # The conftest fixture is function-scoped; build the same kind of folder once for the module.
    from mrisynth.data.images import save_grayscale_png
    from mrisynth.data.manifest import ImageRecord, save_classes, save_manifest

    rng = np.random.default_rng(0)
    records = []
    for label, name in enumerate(CLASSES):
        for p, split in enumerate(("train", "train", "val", "test")):
            arr = rng.integers(0, 256, size=(24, 24), dtype=np.uint8)
            path = root / f"{name}-{p}.png"
            save_grayscale_png(arr, path)
            records.append(ImageRecord(id=f"{name}-{p}", path=str(path), class_name=name, label=label,
                                       patient_id=f"{name}{p}", split=split))
    data = root / "data"
    data.mkdir()
    save_manifest(records, data / "manifest.csv")
    save_classes(CLASSES, data)
    return data


def sample(generator: Path, out: Path, **changes) -> list:
    cfg = SampleConfig(**{"n_per_class": 2, "batch_size": 4, "steps": 2, **changes})
    run_sample(generator, cfg, out_dir=out)
    return load_manifest(out)


def pixels(record) -> np.ndarray:
    with Image.open(record.path) as img:
        assert img.mode == "L"  # one channel on disk: no colour
        return np.asarray(img)


def test_text2img_writes_one_channel_images_with_provenance(generator, tmp_path):
    rows = sample(generator, tmp_path / "syn", size=24)
    assert [r.class_name for r in rows] == [c for c in CLASSES for _ in range(2)]
    assert load_classes(tmp_path / "syn") == CLASSES
    checksum = sha256_dir(generator / "lora")
    for r in rows:
        assert pixels(r).shape == (24, 24)  # resized to the chosen output size
        assert (r.width, r.height, r.source, r.split) == (24, 24, "synthetic", "train")
        assert r.prompt.endswith(r.class_name) and r.seed >= 0 and r.steps == 2
        # guidance 0 (the default) means "off": recorded as 1.0, the conditional model alone, as it ran.
        assert r.guidance == 1.0 and r.strength is None and r.source_image_id == ""
        assert r.generator_sha256 == checksum and len(r.sha256) == 64
    assert len({r.seed for r in rows}) == len(rows)
    assert (tmp_path / "syn" / "config.yaml").is_file()


def test_same_seed_same_images_and_each_image_reproducible_alone(generator, tmp_path):
    first = sample(generator, tmp_path / "a")
    again = sample(generator, tmp_path / "b")
    assert [r.sha256 for r in first] == [r.sha256 for r in again]
    other = sample(generator, tmp_path / "c", seed=1)
    assert not any(np.array_equal(pixels(x), pixels(y)) for x, y in zip(first, other))
    # One image per batch: the same pixels (up to a grey level of float noise from another batch shape).
    alone = sample(generator, tmp_path / "d", batch_size=1)
    for x, y in zip(first, alone):
        assert x.seed == y.seed
        assert np.abs(pixels(x).astype(int) - pixels(y).astype(int)).max() <= 1


def test_img2img_starts_from_training_images_of_the_same_class(generator, tmp_path):
    rows = sample(generator, tmp_path / "syn", mode="img2img", steps=4, guidance=7.5, strength=0.5,
                  scheduler="euler")
    real = load_manifest(read_generator_info(generator)["data_dir"])
    train = {r.id: r.class_name for r in select(real, split="train")}
    assert len(rows) == 6
    for r in rows:
        assert train[r.source_image_id] == r.class_name  # a train-split image of its own class
        assert r.strength == 0.5 and r.guidance == 7.5 and r.steps == 4
        assert pixels(r).shape == (16, 16)  # the training size by default


def test_a_stopped_run_resumes_without_redoing_images(generator, tmp_path):
    out = tmp_path / "syn"
    first = {r.id: r.sha256 for r in sample(generator, out, n_per_class=1)}
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    rows = sample(generator, out, n_per_class=2)
    assert len(rows) == 6
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # not rewritten
    assert {r.id: r.sha256 for r in rows if r.id in first} == first


def test_a_resumed_set_refuses_other_settings_and_keeps_its_config(generator, tmp_path):
    out = tmp_path / "syn"
    sample(generator, out, n_per_class=1, guidance=0.5)
    config = (out / "config.yaml").read_text()
    pngs = sorted(out.rglob("*.png"))
    for change in ({"steps": 3}, {"seed": 1}, {"guidance": 7.5}, {"mode": "img2img"}):
        with pytest.raises(UserError, match=f"{next(iter(change))}="):
            sample(generator, out, **{"n_per_class": 2, "guidance": 0.5, **change})
        assert (out / "config.yaml").read_text() == config  # the record of how the set was made stays true
        assert sorted(out.rglob("*.png")) == pngs  # and nothing of the other settings was added
    # Cutting the work up differently is fine: more images, another batch size.
    rows = sample(generator, out, n_per_class=2, guidance=0.5, batch_size=1)
    assert len(rows) == 6
    # guidance 0.5 is below 1, so it is off: every image records the guidance it was really made with.
    assert {r.guidance for r in rows} == {1.0}


def test_cli_sample_with_the_turbo_preset(generator, tmp_path, capsys):
    code = main(["generator", "sample", "--generator", str(generator), "--n-per-class", "1",
                 "--out", str(tmp_path / "syn"), "--preset", "turbo", "--mode", "text2img"])
    assert code == 0
    rows = load_manifest(tmp_path / "syn")
    assert len(rows) == 3 and all(r.steps == SAMPLE_PRESETS["turbo"]["steps"] for r in rows)


def test_bad_sampling_settings_are_user_errors(generator, tmp_path):
    with pytest.raises(UserError, match="strength"):
        sample(generator, tmp_path / "syn", mode="img2img", strength=0.0)
    with pytest.raises(UserError, match="not a trained generator"):
        run_sample(tmp_path, SampleConfig(n_per_class=1), out_dir=tmp_path / "syn")
