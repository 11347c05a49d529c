import dataclasses

import numpy as np
import pytest

from mrisynth.data.cache import build_cache, load_cache
from mrisynth.data.images import fit_square, read_grayscale, save_grayscale_png
from mrisynth.data.manifest import ImageRecord, load_manifest, save_manifest
from mrisynth.errors import UserError
from mrisynth.files import sha256_file


def test_manifest_round_trip_keeps_types_and_paths(tmp_path):
    rec = ImageRecord(id="a", path=str(tmp_path / "x.png"), class_name="glioma", label=1, seed=7, guidance=7.5,
                      source="synthetic")
    save_manifest([rec], tmp_path / "manifest.csv")
    assert "x.png" in (tmp_path / "manifest.csv").read_text()  # stored relative
    (back,) = load_manifest(tmp_path)
    assert back == ImageRecord(**{**rec.__dict__, "path": str((tmp_path / "x.png").resolve())})


def test_duplicate_ids_refused_and_nothing_written(tmp_path):
    rec = ImageRecord(id="a", path="x.png", class_name="g", label=0)
    with pytest.raises(UserError, match="duplicate image id 'a'"):
        save_manifest([rec, rec], tmp_path / "manifest.csv")
    assert list(tmp_path.iterdir()) == []


def test_cache_matches_images_and_rebuilds_when_manifest_changes(tiny_manifest_dir):
    cache = load_cache(tiny_manifest_dir, 16)
    assert cache.images.shape == (36, 16, 16) and cache.images.dtype == np.uint8
    first = cache.records[0]
    assert np.array_equal(cache.images[0], fit_square(read_grayscale(first.path), 16))
    assert len(cache.indices("train")) == 18
    records = load_manifest(tiny_manifest_dir)[:10]
    save_manifest(records, tiny_manifest_dir / "manifest.csv")
    assert load_cache(tiny_manifest_dir, 16).images.shape[0] == 10


def test_letterbox_keeps_aspect():
    arr = np.full((10, 20), 200, dtype=np.uint8)
    out = fit_square(arr, 20, fit="letterbox")
    assert out[0].max() == 0 and out[10].min() > 150  # black bars top and bottom


def test_build_cache_is_atomic_on_bad_image(tiny_manifest_dir):
    records = load_manifest(tiny_manifest_dir)
    open(records[5].path, "wb").write(b"not an image")
    with pytest.raises(UserError, match="not a readable image"):
        build_cache(tiny_manifest_dir, 16)
    assert not (tiny_manifest_dir / "cache" / "resize-16").exists()


def test_cache_is_rebuilt_when_the_pixels_behind_an_id_change(tiny_manifest_dir):
    """Re-preparing after an image was replaced keeps its id but changes its sha256: the cache must follow."""
    records = [dataclasses.replace(r, sha256=sha256_file(r.path)) for r in load_manifest(tiny_manifest_dir)]
    save_manifest(records, tiny_manifest_dir / "manifest.csv")
    before = np.array(load_cache(tiny_manifest_dir, 16).images[3])
    replaced = np.full((32, 40), 7, dtype=np.uint8)
    save_grayscale_png(replaced, records[3].path)
    records[3] = dataclasses.replace(records[3], sha256=sha256_file(records[3].path))
    save_manifest(records, tiny_manifest_dir / "manifest.csv")
    cache = load_cache(tiny_manifest_dir, 16)
    assert [r.id for r in cache.records] == [r.id for r in records]  # the same ids ...
    assert not np.array_equal(before, np.full((16, 16), 7))
    assert np.array_equal(cache.images[3], np.full((16, 16), 7))  # ... and the new pixels
