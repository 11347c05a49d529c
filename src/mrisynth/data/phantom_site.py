"""Phantom scanner sites: the same anatomy and labels as seen by another scanner, for external-test experiments.

    PhantomConfig(site="B")          (CLI: mrisynth data phantom --site B --out DIR)

Site A is the phantom as it always was (its output is byte-identical to a phantom without sites). Site B is
another hospital's scanner: a larger field of view (smaller head), a lower acquired resolution, a stronger bias
field, more noise, and another intensity scale, offset and contrast curve. A site only changes how a slice is
imaged, never what is in it: patients, lesions, levels, classes and masks are drawn exactly as for site A, so a
site-B phantom with site A's seed shows the same patients scanned elsewhere (use another seed for an external
test set of new patients).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from mrisynth.data.phantom_anatomy import Head
from mrisynth.errors import UserError


@dataclasses.dataclass(frozen=True)
class Site:
    """How one scanner images a slice. The neutral values (site A) leave a slice untouched."""

    name: str
    fov: float = 1.0  # head size relative to site A: < 1 is a larger field of view (more background)
    resolution: float = 1.0  # fraction of the matrix actually acquired; the rest is interpolation blur
    bias: float = 0.0  # amplitude of an extra smooth multiplicative bias field (log scale, at the image edge)
    noise: float = 0.0  # extra Rician noise sigma (intensity units; the phantom's white level is 1.38)
    gamma: float = 1.0  # contrast curve: intensity ** gamma (< 1 lifts dark tissue)
    gain: float = 1.0  # intensity scale after reconstruction
    offset: float = 0.0  # intensity added after scaling: a background that is not black

    @property
    def is_reference(self) -> bool:
        """True when this site changes nothing (the phantom's original scanner)."""
        return self == Site(self.name)


# Site B's values make a shift of the size seen between real collections: a slice's mean grey level about doubles
# (33 -> 65 at 128 px; inside the head 76 -> 134, background 7 -> 40), as Figshare's 40 vs another collection's 71.
SITES = {
    "A": Site("A"),
    "B": Site("B", fov=0.82, resolution=0.6, bias=0.35, noise=0.03, gamma=0.75, gain=1.3, offset=0.08),
}


def get_site(name: str) -> Site:
    """The site called `name` (case-insensitive); an unknown name is a UserError listing the sites."""
    site = SITES.get(str(name).strip().upper())
    if site is None:
        raise UserError(f"phantom site '{name}' is not known; use one of {', '.join(SITES)} (A is the default)")
    return site


def site_head(head: Head, site: Site) -> Head:
    """The head as this site's field of view frames it (same anatomy, other size in the image)."""
    return head if site.fov == 1.0 else dataclasses.replace(head, scale=head.scale * site.fov)


def apply_site(img: np.ndarray, site: Site, rng: np.random.Generator) -> np.ndarray:
    """(S, S) float32 intensities as imaged at `site` (returned unchanged for a reference site)."""
    if site.is_reference:
        return img
    size = img.shape[0]
    if site.resolution < 1.0:
        # Acquired on a coarser matrix (anti-aliased), then interpolated back to the stored size.
        low = ndimage.zoom(ndimage.gaussian_filter(img, 0.5 / site.resolution), site.resolution, order=1)
        img = ndimage.zoom(low, (size / low.shape[0], size / low.shape[1]), order=1)
    u = (np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0
    x, y = np.meshgrid(u, u)
    a, b, c = rng.normal(0.0, 1.0, size=3).tolist()
    field = (a * x + b * y + c * (x * x + y * y - 0.66)) / max(np.sqrt(a * a + b * b + c * c), 1e-6)
    img = img * np.exp(np.float32(site.bias) * field)
    noise = rng.standard_normal((2, *img.shape), dtype=np.float32) * np.float32(site.noise)
    img = np.sqrt((img + noise[0]) ** 2 + noise[1] ** 2)  # Rician: magnitude of a noisy complex signal
    return (np.float32(site.gain) * img ** np.float32(site.gamma) + np.float32(site.offset)).astype(np.float32)
