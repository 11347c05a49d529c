"""Procedural head anatomy for the digital phantom: one axial T1 contrast-enhanced slice at a time.

Everything is drawn analytically on a grid of patient-space coordinates, so rotating, shifting and scaling
a slice costs nothing (we transform the grid, not the image) and adjacent slices of one patient share their
3-D structure (gyri, ventricles), as real neighbouring slices do.

Conventions: image coordinates x (left->right) and y (top->bottom) run over [-1, 1]; anterior is at the top
(negative y), as in radiological axial images. The slice level z runs from about -0.8 (skull base, orbits,
sella) to +0.8 (near the vertex). Intensities are linear in [0, ~1] before the nuisances of `apply_nuisances`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import ndimage

# T1 contrast-enhanced tissue intensities (relative). Fat is bright, cortical bone and air are dark,
# white matter a little brighter than grey matter, CSF dark; enhancing vessels / dura are bright.
TISSUE = {
    "scalp": 0.78, "skull": 0.05, "marrow": 0.42, "csf": 0.07, "grey": 0.29, "white": 0.45,
    "deep_grey": 0.37, "vessel": 0.80, "orbit_fat": 0.55, "vitreous": 0.10, "sinus": 0.03, "gland": 0.50,
}
SELLA_Y = -0.05  # the pituitary fossa, as a fraction of the head's antero-posterior semi-axis
SKULL_BASE_Z = -0.35  # below this level the slice passes through orbits, sphenoid sinus and sella


@dataclasses.dataclass(frozen=True)
class Head:
    """One patient's anatomy: size, shape, layer thicknesses, gyral pattern and pose."""

    ax: float  # left-right semi-axis of the head (image units, before `scale`)
    ay: float  # antero-posterior semi-axis
    shape_amp: np.ndarray  # (4,) radial harmonic amplitudes, orders 2..5: a non-elliptic outline
    shape_phase: np.ndarray  # (4,)
    scalp: float  # layer thicknesses (image units)
    skull: float
    csf: float
    cortex: float
    gyri_k: np.ndarray  # (N, 3) wave vectors of the random field that folds the cortex
    gyri_phase: np.ndarray  # (N,)
    ventricles: float  # ventricle size factor
    tissue_jitter: np.ndarray  # (3,) multiplicative jitter of grey, white, scalp intensities
    rotation: float  # radians, in-plane
    shift: tuple[float, float]
    scale: float


def sample_head(rng: np.random.Generator, *, difficulty: float) -> Head:
    """Draw one patient's head; pose variation grows with `difficulty`."""
    ax = rng.uniform(0.60, 0.70)
    n_waves = 10
    directions = rng.normal(size=(n_waves, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    pose = 0.5 + difficulty
    return Head(
        ax=ax,
        ay=ax * rng.uniform(1.14, 1.28),
        shape_amp=rng.uniform(0.0, 0.018, size=4),
        shape_phase=rng.uniform(0, 2 * np.pi, size=4),
        scalp=rng.uniform(0.035, 0.055),
        skull=rng.uniform(0.030, 0.045),
        csf=rng.uniform(0.008, 0.016),
        cortex=rng.uniform(0.026, 0.036),
        gyri_k=directions * rng.uniform(30.0, 48.0, size=(n_waves, 1)),
        gyri_phase=rng.uniform(0, 2 * np.pi, size=n_waves),
        ventricles=rng.uniform(0.7, 1.4),
        tissue_jitter=rng.uniform(0.94, 1.06, size=3),
        rotation=np.deg2rad(rng.uniform(-8, 8) * pose),
        shift=(rng.uniform(-0.05, 0.05) * pose, rng.uniform(-0.05, 0.05) * pose),
        scale=rng.uniform(0.88, 1.08),
    )


@dataclasses.dataclass
class HeadMaps:
    """Per-patient maps that do not depend on the slice level, computed once and reused by every slice."""

    X: np.ndarray  # (S, S) float32 patient-space coordinates of the pixel centres
    Y: np.ndarray
    rho: np.ndarray  # (S, S) normalised radius of the head outline at its widest level (1 on the skin)
    gyri_basis: np.ndarray  # (2N, S*S) cos and sin of the in-plane phase of each gyral wave


def build_head_maps(size: int, head: Head) -> HeadMaps:
    """Patient-space grid of a size x size slice (pose applied) and the level-independent maps on it."""
    u = (np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0
    x, y = np.meshgrid(u - head.shift[0], u - head.shift[1])
    c, s = float(np.cos(head.rotation)), float(np.sin(head.rotation))
    X, Y = (c * x + s * y) / head.scale, (-s * x + c * y) / head.scale
    outline = radial_outline(np.arctan2(Y, X), head.shape_amp, head.shape_phase)
    rho = np.sqrt((X / head.ax) ** 2 + (Y / head.ay) ** 2) / outline
    # cos(kx X + ky Y + kz z + p) = cos(a) cos(kz z + p) - sin(a) sin(kz z + p) with a = kx X + ky Y: the
    # expensive part (a, its cos and sin) is computed here once per patient, each slice is then a mat-vec.
    phase = head.gyri_k[:, :2].astype(np.float32) @ np.stack([X.ravel(), Y.ravel()])  # (N, S*S)
    basis = np.concatenate([np.cos(phase), np.sin(phase)]).astype(np.float32)
    return HeadMaps(X=X.astype(np.float32), Y=Y.astype(np.float32), rho=rho.astype(np.float32), gyri_basis=basis)


def radial_outline(phi: np.ndarray, amp: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """1 + sum_k amp_k cos((k + 2) phi + phase_k): a wobbly circle's radius as a function of angle, float32."""
    out = np.ones_like(phi, dtype=np.float32)
    for order, (a, p) in enumerate(zip(amp.tolist(), phase.tolist())):
        out += np.float32(a) * np.cos((order + 2) * phi + np.float32(p))
    return out


def soft(d: np.ndarray, width: float) -> np.ndarray:
    """0 -> 1 ramp across a boundary at d = 0 (d > 0 inside), `width` wide: cheap anti-aliasing."""
    return np.clip(d / width + 0.5, 0.0, 1.0)


def ellipse_depth(X: np.ndarray, Y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Approximate signed distance inside an axis-aligned ellipse (> 0 inside), in image units."""
    rho = np.sqrt(((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2)
    return (1.0 - rho) * min(rx, ry)


@dataclasses.dataclass
class AnatomySlice:
    """A rendered slice plus the maps that lesions need to place and blend themselves."""

    image: np.ndarray  # (H, W) float32 intensities
    depth: np.ndarray  # (H, W) distance inward from the scalp surface (image units; < 0 outside the head)
    brain: np.ndarray  # (H, W) float32 in [0, 1]: brain parenchyma (soft edge)
    white: np.ndarray  # (H, W) float32 in [0, 1]: white matter
    inner_skull: float  # depth of the inner table of the skull (where the dura is)
    head_radius: float  # mean head radius at this level (image units)


def level_scale(z: float) -> float:
    """Head cross-section size relative to its widest level: shrinks towards the vertex and slightly at the base."""
    if z > 0:
        return float(np.sqrt(max(1.0 - (z / 1.05) ** 2, 0.08)))
    return 1.0 - 0.10 * (-z)


def render_anatomy(maps: HeadMaps, z: float, head: Head, *, pixel: float) -> AnatomySlice:
    """Draw scalp, skull, CSF, cortex with gyri and sulci, white matter, ventricles and skull base at level z."""
    X, Y = maps.X, maps.Y
    k = level_scale(z)
    ax, ay = head.ax * k, head.ay * k
    radius = float(np.sqrt(ax * ay))
    depth = (1.0 - maps.rho / np.float32(k)) * np.float32(radius)  # (H, W), 0 at the skin, > 0 inside

    t_scalp, t_skull = head.scalp, head.skull
    inner_skull = t_scalp + t_skull
    gj, wj, sj = head.tissue_jitter.tolist()
    img = TISSUE["scalp"] * sj * soft(depth, pixel)
    # Skull: dark outer and inner tables with fatty (bright) marrow between them.
    in_skull = soft(depth - t_scalp, pixel) * soft(inner_skull - depth, pixel)
    mid = np.abs(depth - (t_scalp + 0.5 * t_skull))
    marrow = soft(0.22 * t_skull - mid, pixel)
    img = img * (1 - in_skull) + in_skull * (TISSUE["skull"] + (TISSUE["marrow"] - TISSUE["skull"]) * marrow)

    brain_depth = depth - inner_skull - head.csf  # > 0 inside the brain
    brain = soft(brain_depth, pixel)
    gyri = gyral_field(maps, z, head)  # (H, W) in about [-1, 1]
    white = soft(brain_depth - head.cortex * (1.0 + 0.9 * gyri) - 0.01, pixel)
    # Sulci: CSF-filled clefts reaching in from the surface; some carry enhancing vessels.
    sulcus = soft(0.16 - np.abs(gyri + 0.25), 0.10) * soft(3.2 * head.cortex - brain_depth, 3 * pixel)
    vessel = soft(0.012 - np.abs(gyri + 0.25), 0.012) * soft(1.2 * head.cortex - brain_depth, pixel) * 0.5
    parenchyma = TISSUE["grey"] * gj * (1 - white) + TISSUE["white"] * wj * white  # (H, W)
    parenchyma = parenchyma * (1 - sulcus) + TISSUE["csf"] * sulcus
    parenchyma = parenchyma + vessel * (TISSUE["vessel"] - parenchyma)

    # Interhemispheric fissure, interrupted in the middle at levels with corpus callosum and ventricles.
    cc_gap = soft(0.22 * ay - np.abs(Y), pixel) if -0.2 < z < 0.4 else 0.0
    fissure = soft(0.007 - np.abs(X - 0.01 * np.sin(6 * Y)), pixel) * (1 - cc_gap)
    parenchyma = parenchyma * (1 - fissure) + TISSUE["csf"] * fissure

    parenchyma = _deep_structures(parenchyma, X, Y, z, head, ax=ax, ay=ay, pixel=pixel)
    img = img * (1 - brain) + parenchyma * brain
    csf_band = soft(depth - inner_skull, pixel) * (1 - brain)
    img = img * (1 - csf_band) + TISSUE["csf"] * csf_band

    if z < SKULL_BASE_Z:
        img, brain = _skull_base(img, brain, X, Y, z, inside=soft(depth - inner_skull, pixel), ax=ax, ay=ay, pixel=pixel)
        white = white * brain
    return AnatomySlice(
        image=img.astype(np.float32), depth=depth, brain=brain.astype(np.float32),
        white=(white * brain).astype(np.float32), inner_skull=inner_skull, head_radius=radius,
    )


def gyral_field(maps: HeadMaps, z: float, head: Head) -> np.ndarray:
    """A smooth 3-D random field (sum of plane waves, unit variance) on the slice at level z: folds the cortex."""
    c = head.gyri_k[:, 2] * z + head.gyri_phase  # (N,) phase contributed by the level
    weights = np.concatenate([np.cos(c), -np.sin(c)]) * np.sqrt(2.0 / len(c))
    # einsum rather than BLAS: no thread pool to fight with the worker processes.
    return np.einsum("n,np->p", weights.astype(np.float32), maps.gyri_basis).reshape(maps.X.shape)


def _deep_structures(par: np.ndarray, X, Y, z: float, head: Head, *, ax: float, ay: float, pixel: float) -> np.ndarray:
    """Lateral ventricles with the caudate/thalamus beside them, present at mid levels."""
    presence = 1.0 - ((z - 0.12) / 0.32) ** 2
    if presence <= 0:
        return par
    s = math.sqrt(presence) * head.ventricles
    # Deep grey nuclei: broad, slightly darker than white matter.
    for side in (-1, 1):
        nuclei = soft(ellipse_depth(X, Y, side * 0.16 * ax, 0.02 * ay, 0.09 * ax, 0.16 * ay), 0.03)
        par = par + 0.8 * nuclei * (TISSUE["deep_grey"] - par) * min(1.0, 2 * presence)
    for side in (-1, 1):
        # Each ventricle: an ellipse along the antero-posterior axis, the frontal end tilted to the midline.
        tilt = side * 0.08
        c, sn = math.cos(tilt), math.sin(tilt)
        dx, dy = X - side * 0.095 * ax, Y + 0.06 * ay
        u, v = c * dx + sn * dy, -sn * dx + c * dy
        d = ellipse_depth(u, v, 0.0, 0.0, 0.05 * ax * s + 0.012, 0.26 * ay * math.sqrt(presence))
        par = par + soft(d, pixel) * (TISSUE["csf"] - par)
    return par


def _skull_base(img, brain, X, Y, z: float, *, inside: np.ndarray, ax: float, ay: float, pixel: float):
    """At low levels: orbits in front, the sphenoid sinus in the middle, the sella and brainstem behind."""
    t = float(np.clip((SKULL_BASE_Z - z) / 0.25, 0.0, 1.0))  # 0 at the transition, 1 fully in the skull base
    if t == 0.0:
        return img, brain
    # The anterior skull base: muscle and bone of the face in front, rimmed by dark cortical bone.
    face_d = ellipse_depth(X, Y, 0.0, -0.74 * ay, 0.72 * ax * t, 0.52 * ay * t)
    face = soft(face_d, 2 * pixel) * inside  # (H, W): within the skull, the scalp and bone stay
    rim = soft(0.018 - np.abs(face_d), pixel) * inside
    img = img * (1 - face) + 0.26 * face
    for side in (-1, 1):
        # Globe (dark vitreous) in bright orbital fat.
        fat = soft(ellipse_depth(X, Y, side * 0.34 * ax, -0.70 * ay, 0.22 * ax * t, 0.19 * ay * t), 3 * pixel)
        globe = soft(ellipse_depth(X, Y, side * 0.36 * ax, -0.72 * ay, 0.13 * ax * t, 0.11 * ay * t), pixel) * inside
        img = img + fat * face * (TISSUE["orbit_fat"] - img)
        img = img + globe * (TISSUE["vitreous"] - img)
    img = img * (1 - rim) + TISSUE["skull"] * rim
    sinus = soft(ellipse_depth(X, Y, 0.0, -0.26 * ay, 0.10 * ax * t + 1e-3, 0.09 * ay * t + 1e-3), pixel)
    img = img * (1 - sinus) + TISSUE["sinus"] * sinus
    brain = brain * (1 - np.maximum(face, sinus))
    # Normal pituitary gland at the sella (every class has one: a small adenoma must compete with it).
    gland = soft(ellipse_depth(X, Y, 0.0, SELLA_Y * ay, 0.07 * ax, 0.05 * ay), pixel) * t
    img = img + gland * (TISSUE["gland"] - img)
    # Brainstem (pons) behind the sella, in a thin rim of CSF.
    cistern = soft(ellipse_depth(X, Y, 0.0, 0.24 * ay, 0.17 * ax, 0.135 * ay), pixel) * t
    stem = soft(ellipse_depth(X, Y, 0.0, 0.25 * ay, 0.15 * ax, 0.12 * ay), pixel) * t
    img = img + cistern * (TISSUE["csf"] - img)
    img = img + stem * (TISSUE["white"] - img)
    return img, brain


def apply_nuisances(img: np.ndarray, rng: np.random.Generator, *, difficulty: float) -> np.ndarray:
    """Scanner effects: partial-volume blur, texture, smooth bias field, intensity scaling, Rician noise."""
    size = img.shape[0]
    img = ndimage.gaussian_filter(img, sigma=0.6 * size / 256)
    # Fine tissue texture, then a smooth multiplicative bias field (low-order polynomial).
    texture = ndimage.gaussian_filter(rng.standard_normal(img.shape, dtype=np.float32), sigma=1.5 * size / 256)
    texture /= np.float32(max(float(texture.std()), 1e-6))  # unit variance whatever the image size
    img = np.maximum(img * (1.0 + 0.06 * texture), 0.0)
    u = (np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0
    x, y = np.meshgrid(u, u)
    b = rng.normal(0.0, 0.10 + 0.10 * difficulty, size=5).tolist()
    img = img * np.exp(b[0] * x + b[1] * y + b[2] * x * y + b[3] * (x * x - y * y) + b[4] * (x * x + y * y))
    img = np.float32(rng.uniform(0.85, 1.15)) * img ** np.float32(rng.uniform(0.9, 1.1))
    # Rician noise: magnitude of a complex signal with Gaussian noise in both channels.
    sigma = np.float32(rng.uniform(0.012, 0.025) * (1.0 + difficulty))
    noise = rng.standard_normal((2, *img.shape), dtype=np.float32) * sigma
    return np.sqrt((img + noise[0]) ** 2 + noise[1] ** 2)


def to_uint8_image(img: np.ndarray, *, white_level: float) -> np.ndarray:
    """Map intensities to 8 bit as the Figshare export did (a bright percentile to 255, clipped)."""
    return np.clip(img * (255.0 / white_level), 0, 255).round().astype(np.uint8)
