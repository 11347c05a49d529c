"""Tumours of the three Figshare classes, as 3-D shapes cut by each slice, drawn over a phantom anatomy.

- meningioma: extra-axial, based on the dura (convexity, falx, or at `difficulty` sometimes the skull base near
  the sella), broad flat dural contact, homogeneous bright enhancement, sometimes a dural tail.
- glioma: intra-axial in white matter, irregular outline, ring enhancement around a dark necrotic core, with
  hypointense peritumoral oedema; at `difficulty` sometimes non-enhancing (low grade), faint and dark.
- pituitary: small, midline, at the sella, moderately enhancing, sometimes with a cystic part.

Higher `difficulty` means smaller, fainter lesions, cut further from their centre, and more atypical sites.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from mrisynth.data.phantom_anatomy import (
    SELLA_Y,
    SKULL_BASE_Z,
    AnatomySlice,
    Head,
    HeadMaps,
    level_scale,
    radial_outline,
    soft,
)

CLASSES = ("glioma", "meningioma", "pituitary")


@dataclasses.dataclass(frozen=True)
class Lesion:
    """One tumour in patient space (image units): centre, radius, outline and appearance."""

    kind: str
    centre: tuple[float, float, float]  # x, y, z
    radius: float
    shape_amp: np.ndarray  # (K,) radial harmonic amplitudes, orders 2..K+1: irregularity of the outline
    shape_phase: np.ndarray  # (K,)
    brightness: float  # enhancing tissue intensity (rim for a glioma)
    core: float  # glioma: necrotic core intensity; pituitary: cyst intensity; meningioma: unused
    rim: float  # glioma: rim thickness as a fraction of the radius; pituitary: cyst size fraction
    oedema: float  # glioma: oedema extent as a multiple of the radius (0 = none)
    dural_angle: float  # meningioma: direction of its dural base (radians); nan when not on the convexity


def sample_lesion(kind: str, head: Head, rng: np.random.Generator, *, difficulty: float) -> Lesion:
    """Draw a tumour of class `kind` for the patient `head`."""
    d = difficulty
    faint = 1.0 - 0.45 * d * rng.uniform()  # < 1: contrast shrinks towards the surrounding tissue
    if kind == "glioma":
        z = rng.uniform(-0.45, 0.55)
        k = level_scale(z)
        ring = rng.uniform() > 0.30 * d  # otherwise a non-enhancing (low-grade-like) glioma
        angle, reach = rng.uniform(0, 2 * np.pi), rng.uniform(0.15, 0.55)
        return Lesion(
            kind, (reach * head.ax * k * np.cos(angle), reach * head.ay * k * np.sin(angle), z),
            radius=rng.uniform(0.09 - 0.04 * d, 0.26), shape_amp=rng.uniform(0.03, 0.14, size=5),
            shape_phase=rng.uniform(0, 2 * np.pi, size=5),
            brightness=(rng.uniform(0.62, 0.85) if ring else rng.uniform(0.24, 0.32)) * faint + 0.4 * (1 - faint),
            core=rng.uniform(0.10, 0.22), rim=rng.uniform(0.2, 0.45) if ring else 1.0,
            oedema=rng.uniform(1.4, 2.2), dural_angle=float("nan"),
        )
    if kind == "meningioma":
        site = rng.uniform()
        radius = rng.uniform(0.08 - 0.03 * d, 0.22)
        if site < 0.15 * d:  # parasellar / skull base: can be mistaken for a pituitary tumour
            z, centre = rng.uniform(-0.62, -0.5), (rng.uniform(0.08, 0.20) * rng.choice([-1, 1]), None)
            angle = float("nan")
        elif site < 0.35:  # falcine / parasagittal: against the midline dura
            z, centre, angle = rng.uniform(0.0, 0.6), (rng.choice([-1, 1]) * radius * 0.8, None), float("nan")
        else:  # convexity: against the inner table of the skull
            z, centre, angle = rng.uniform(-0.3, 0.65), None, rng.uniform(0, 2 * np.pi)
        k = level_scale(z)
        if centre is None:
            # Centre just inside the brain surface so that the lesion flattens against the inner skull table.
            reach = 1.0 - (head.scalp + head.skull + 0.35 * radius) / np.sqrt(head.ax * head.ay * k * k)
            x, y = reach * head.ax * k * np.cos(angle), reach * head.ay * k * np.sin(angle)
        elif np.isnan(angle) and z < SKULL_BASE_Z:
            x, y = centre[0], SELLA_Y * head.ay * k + rng.uniform(-0.05, 0.05)
        else:
            x, y = centre[0], rng.uniform(-0.5, 0.5) * head.ay * k
        return Lesion(
            kind, (x, y, z), radius=radius, shape_amp=rng.uniform(0.0, 0.05, size=3),
            shape_phase=rng.uniform(0, 2 * np.pi, size=3),
            brightness=rng.uniform(0.56, 0.80) * faint + 0.44 * (1 - faint),
            core=0.0, rim=0.0, oedema=rng.uniform(1.0, 1.5) if rng.uniform() < 0.3 else 0.0, dural_angle=angle,
        )
    if kind == "pituitary":
        radius = rng.uniform(0.05, 0.12 + 0.06 * (1 - d))
        cyst = rng.uniform() < 0.3
        return Lesion(
            kind, (rng.normal(0.0, 0.015), SELLA_Y * head.ay + rng.normal(0.0, 0.02), rng.uniform(-0.68, -0.58)),
            radius=radius, shape_amp=rng.uniform(0.0, 0.08, size=3), shape_phase=rng.uniform(0, 2 * np.pi, size=3),
            brightness=rng.uniform(0.50, 0.70) * faint + 0.42 * (1 - faint),
            core=rng.uniform(0.12, 0.25), rim=rng.uniform(0.3, 0.55) if cyst else 0.0,
            oedema=0.0, dural_angle=float("nan"),
        )
    raise ValueError(f"unknown lesion kind {kind!r}; expected one of {CLASSES}")


def slice_levels(lesion: Lesion, n: int, rng: np.random.Generator, *, difficulty: float, pixel: float) -> np.ndarray:
    """n sorted slice levels that all cut the lesion, spread over its extent like a real slice stack."""
    # Never cut so far from the centre that the section is under ~2 pixels across (the mask must show it).
    reach = min(0.45 + 0.45 * difficulty, np.sqrt(max(1.0 - (2.0 * pixel / lesion.radius) ** 2, 0.0)))
    return np.sort(lesion.centre[2] + lesion.radius * rng.uniform(-reach, reach, size=n))


def lesion_distance(maps: HeadMaps, lesion: Lesion) -> np.ndarray:
    """In-plane distance from the lesion's axis divided by its outline (H, W): the same for every slice."""
    dx, dy = maps.X - np.float32(lesion.centre[0]), maps.Y - np.float32(lesion.centre[1])
    return np.sqrt(dx * dx + dy * dy) / radial_outline(np.arctan2(dy, dx), lesion.shape_amp, lesion.shape_phase)


def render_lesion(anat: AnatomySlice, maps: HeadMaps, dist: np.ndarray, z: float, lesion: Lesion, *,
                  pixel: float) -> tuple[np.ndarray, np.ndarray]:
    """Draw `lesion` into the slice at level z: (image (H, W) float32, mask (H, W) bool).

    `dist` is `lesion_distance(maps, lesion)`, computed once per patient.
    """
    img = anat.image.copy()
    r2 = lesion.radius ** 2 - (z - lesion.centre[2]) ** 2
    if r2 <= 0:
        return img, np.zeros(img.shape, dtype=bool)
    r = math.sqrt(r2)  # radius of the section at this level
    q = dist / np.float32(r)  # (H, W): < 1 inside the tumour
    inside = soft((1.0 - q) * r, pixel)
    if lesion.kind == "meningioma":
        # Extra-axial: bounded by the inner skull table, so it flattens against the dura (broad contact).
        inside = inside * soft(anat.depth - anat.inner_skull, pixel)
        if lesion.oedema:
            _blend(img, soft((lesion.oedema - q) * r, 4 * pixel) * anat.brain, 0.80 * img)
        if not np.isnan(lesion.dural_angle):
            tail = soft((2.2 - q) * r, pixel) * soft(anat.inner_skull + 0.012 - anat.depth, pixel)
            _blend(img, tail * soft(anat.depth - anat.inner_skull + 0.004, pixel), lesion.brightness * 0.9)
        _blend(img, inside, lesion.brightness)
    elif lesion.kind == "glioma":
        inside = inside * anat.brain  # intra-axial
        if lesion.oedema:
            oedema = soft((lesion.oedema - q) * r, 6 * pixel) * anat.brain * (0.5 + 0.5 * anat.white)
            _blend(img, oedema, 0.72 * img)
        core = soft((1.0 - lesion.rim - q) * r, 2 * pixel)
        _blend(img, inside, lesion.brightness)
        _blend(img, inside * core, lesion.core)
    else:  # pituitary
        _blend(img, inside, lesion.brightness)
        if lesion.rim:
            dx, dy = maps.X - lesion.centre[0], maps.Y - lesion.centre[1]
            cyst = soft((lesion.rim - np.hypot(dx + 0.3 * r, dy - 0.2 * r) / r) * r, pixel)
            _blend(img, inside * cyst, lesion.core)
    return img, inside > 0.5


def _blend(img: np.ndarray, weight: np.ndarray, value) -> None:
    """img <- img * (1 - weight) + value * weight, in place (value: scalar or array)."""
    img += weight * (value - img)
