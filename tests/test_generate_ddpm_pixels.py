"""The DDPM's model space [-1, 1] maps onto the full uint8 range of the images it writes."""

import numpy as np
import torch

from mrisynth.generate.ddpm_model import to_uint8_images


def test_model_space_maps_to_the_full_uint8_range():
    x = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]).view(1, 1, 1, 5)  # (B, 1, H, W) in [-1, 1]
    # (x + 1) * 127.5, rounded half to even: 0, 63.75 -> 64, 127.5 -> 128, 191.25 -> 191, 255
    np.testing.assert_array_equal(to_uint8_images(x), np.array([[[0, 64, 128, 191, 255]]], dtype=np.uint8))
    assert to_uint8_images(x).dtype == np.uint8
