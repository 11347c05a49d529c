"""Phantom sites: site A is the phantom as it was (stored hash); site B images the same patients differently."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from mrisynth.cli import main
from mrisynth.config import read_yaml_mapping
from mrisynth.data.normalize import head_mask
from mrisynth.data.phantom import PhantomConfig, assign_classes, render_patient, run_phantom
from mrisynth.data.phantom_site import SITES, get_site
from mrisynth.errors import UserError

# sha256 of render_patient's ids, levels, images and masks for the config below, taken at commit 4d4a2ff,
# before phantom sites existed.
SITE_A_SHA256 = "3fa23744b33592c6ede23def0abe8acc04ab1c63c9212b5163dc5d115ccdb4ad"


def rendered(site: str, *, size: int = 48) -> list[tuple[str, str, float, np.ndarray, np.ndarray]]:
    cfg = PhantomConfig(patients=3, slices_per_patient=2, size=size, seed=7, site=site)
    return [(image_id, kind, level, img, mask) for i, kind in enumerate(assign_classes(cfg))
            for image_id, level, img, mask in render_patient(cfg, i, kind)]


def test_site_a_is_byte_identical_to_the_phantom_before_sites():
    h = hashlib.sha256()
    for image_id, kind, level, img, mask in rendered("A"):
        h.update(f"{image_id}|{kind}|{level:.6f}|".encode())
        h.update(img.tobytes())
        h.update(mask.tobytes())
    assert h.hexdigest() == SITE_A_SHA256


def test_site_b_shows_the_same_patients_brighter_smaller_and_on_a_grey_background():
    a, b = rendered("A", size=96), rendered("B", size=96)
    assert [(r[0], r[1], r[2]) for r in a] == [(r[0], r[1], r[2]) for r in b]  # ids, classes, levels
    imgs_a, imgs_b = np.stack([r[3] for r in a]), np.stack([r[3] for r in b])
    assert imgs_b.mean() > 1.6 * imgs_a.mean()
    heads_a = np.mean([head_mask(img).mean() for img in imgs_a])
    heads_b = np.mean([head_mask(img).mean() for img in imgs_b])
    assert 0.55 < heads_b / heads_a < 0.8  # field of view 0.82: head area x 0.67
    background_b = np.mean([img[~head_mask(img)].mean() for img in imgs_b])
    background_a = np.mean([img[~head_mask(img)].mean() for img in imgs_a])
    assert background_b > background_a + 20
    # The lesion masks follow the framing: every slice still has its lesion, smaller.
    masks_a, masks_b = np.stack([r[4] for r in a]) > 0, np.stack([r[4] for r in b]) > 0
    assert masks_b.any(axis=(1, 2)).all() and masks_b.sum() < masks_a.sum()


def test_sites_are_named_case_insensitively_and_unknown_ones_refused():
    assert get_site("b") is SITES["B"] and SITES["A"].is_reference and not SITES["B"].is_reference
    with pytest.raises(UserError, match="site 'C' is not known; use one of A, B"):
        get_site("C")


def test_cli_writes_a_site_b_phantom_and_refuses_an_unknown_site(tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["-q", "data", "phantom", "--out", str(out), "--patients", "3", "--slices-per-patient", "1",
                 "--size", "32", "--site", "B"]) == 0
    assert read_yaml_mapping(out / "config.yaml")["site"] == "B"
    assert len(list((out / "images").rglob("*.png"))) == 3
    capsys.readouterr()
    assert main(["-q", "data", "phantom", "--out", str(tmp_path / "c"), "--site", "C"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "site 'C' is not known" in err
    assert not (tmp_path / "c").exists()


def test_run_phantom_site_b_differs_from_site_a_in_images_only(tmp_path):
    base = dict(patients=3, slices_per_patient=2, size=32, seed=1, workers=1)
    a = run_phantom(PhantomConfig(**base), tmp_path / "a")
    b = run_phantom(PhantomConfig(**base, site="B"), tmp_path / "b")
    assert (a / "metadata.csv").read_bytes() == (b / "metadata.csv").read_bytes()
    names = sorted(p.relative_to(a).as_posix() for p in (a / "images").rglob("*.png"))
    assert names == sorted(p.relative_to(b).as_posix() for p in (b / "images").rglob("*.png"))
    assert all((a / n).read_bytes() != (b / n).read_bytes() for n in names)
