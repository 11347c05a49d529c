"""Feature spaces: the weight-free stats space, a classifier's penultimate layer, and local-weights loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mrisynth.errors import UserError
from mrisynth.quality.distances import frechet_distance
from mrisynth.quality.features import (
    build_feature_spaces,
    classifier_space,
    load_dinov2_space,
    load_inception_space,
    load_radimagenet_space,
    stats_features,
)


def _phantoms(n: int, size: int, seed: int) -> np.ndarray:
    """Bright discs of random radius and position over a dark noisy background: (N, S, S) uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.empty((n, size, size), np.uint8)
    for i in range(n):
        cy, cx = rng.uniform(0.35, 0.65, 2) * size
        r = rng.uniform(0.2, 0.35) * size
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2) * rng.uniform(140, 200)
        out[i] = np.clip(disc + rng.normal(20, 8, (size, size)), 0, 255)
    return out


def test_stats_space_same_set_near_zero_shifted_and_blurred_far() -> None:
    a, b = _phantoms(120, 32, 0), _phantoms(120, 32, 1)
    fa, fb = stats_features(a), stats_features(b)
    assert fa.shape == (120, 29) and np.isfinite(fa).all()
    mean, sd = fa.mean(0), fa.std(0) + 1e-8
    z = lambda f: (f - mean) / sd  # noqa: E731 - the audit standardises stats features the same way
    same = frechet_distance(z(fa), z(fa))
    baseline = frechet_distance(z(fa), z(fb))
    brighter = frechet_distance(z(fa), z(stats_features(np.clip(b.astype(int) + 40, 0, 255).astype(np.uint8))))
    blurred_b = torch.nn.functional.avg_pool2d(torch.from_numpy(b).float()[:, None], 3, 1, 1)[:, 0]
    blurred = frechet_distance(z(fa), z(stats_features(blurred_b.round().numpy().astype(np.uint8))))
    assert same < 1e-6
    assert brighter > 5 * baseline and blurred > 5 * baseline


class TinyClassifier(nn.Module):
    """The classifier contract: (B, 1, H, W) in [0, 1] in, last layer `fc`."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (1, 24, 24) and 0 <= x.min() and x.max() <= 1
        return self.fc(self.body(x))


def test_classifier_space_uses_penultimate_layer() -> None:
    torch.manual_seed(0)
    model = TinyClassifier()
    space = classifier_space(model, input_size=24)
    feats = space.embed(_phantoms(5, 32, 0))
    assert feats.shape == (5, 16) and isinstance(model.fc, nn.Identity)
    with pytest.raises(UserError, match="fc"):
        classifier_space(nn.Sequential(nn.Flatten()), input_size=24)


def test_missing_weights_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="inception_weights"):
        load_inception_space("")
    with pytest.raises(UserError, match="does not exist"):
        load_dinov2_space(str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="unknown feature space 'fid'"):
        build_feature_spaces(["fid"])
    spaces, warnings = build_feature_spaces(["stats", "classifier"])
    assert [s.name for s in spaces] == ["stats"] and "classifier" in warnings[0]


def test_wrong_state_dict_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "radimagenet.pth"
    torch.save({"module.conv1.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(UserError, match="do not fit the radimagenet network"):
        load_radimagenet_space(str(path))
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(UserError, match="cannot read weights"):
        load_radimagenet_space(str(tmp_path / "junk.pth"))


def test_dinov2_loads_from_a_local_folder(tmp_path: Path) -> None:
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                          image_size=28, patch_size=14)
    Dinov2Model(config).save_pretrained(tmp_path / "dino")
    space = load_dinov2_space(str(tmp_path / "dino"))
    feats = space.embed(_phantoms(3, 32, 0))
    assert feats.shape == (3, 16) and np.isfinite(feats).all()
    assert not np.allclose(feats[0], feats[1])


@pytest.mark.slow
def test_inception_and_radimagenet_load_full_state_dicts(tmp_path: Path) -> None:
    from torchvision.models import inception_v3, resnet50

    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), tmp_path / "i.pth")
    torch.save({f"backbone.{k}": v for k, v in resnet50(weights=None).state_dict().items()}, tmp_path / "r.pth")
    images = _phantoms(2, 32, 0)
    assert load_inception_space(str(tmp_path / "i.pth")).embed(images).shape == (2, 2048)
    assert load_radimagenet_space(str(tmp_path / "r.pth")).embed(images).shape == (2, 2048)
