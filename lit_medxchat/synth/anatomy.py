"""The preprocessed chest every synthetic study starts from: attenuation, anatomy labels, slab projections.

A volume arrives as Hounsfield units plus a compact label map in RAS orientation (index i grows toward
the patient's right, j toward anterior, k toward superior) with voxel spacing in mm. `build_anatomy`
turns it into what rendering needs, once:

- a coarse isotropic grid (`COARSE_SPACING_MM`) of attenuation and labels on which findings are
  inserted (3-D work stays small);
- slab line integrals of the full-resolution volume for the frontal (beam along y) and lateral
  (beam along x) directions, so a radiograph is a sum of a few 2-D warps instead of a 3-D projection;
- distance maps (depth inside the lungs, distance outside the heart) used to shape findings.

The result is cached as an .npz so later runs load it in well under a second.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

# Compact label codes shared by every anatomy source (CT label map, thresholds, phantom).
BACKGROUND, RUL, RML, RLL, LUL, LLL, HEART, TRACHEA, AORTA, BONE = range(10)
LOBE_NAMES: dict[int, str] = {
    RUL: "right upper lobe",
    RML: "right middle lobe",
    RLL: "right lower lobe",
    LUL: "left upper lobe",
    LLL: "left lower lobe",
}
RIGHT_LOBES = (RUL, RML, RLL)
LEFT_LOBES = (LUL, LLL)

MU_WATER_PER_MM = 0.02  # linear attenuation of water at ~70 keV effective energy, 1/mm
BONE_CONTRAST_BOOST = 1.6  # bone attenuates relatively more at radiographic energies than at CT energies
COARSE_SPACING_MM = 2.5
EXTEND_MM = 80.0  # slabs continue this far above and below the scanned range
NUM_SLABS = 8
CACHE_VERSION = 8


def hu_to_mu(hu: np.ndarray) -> np.ndarray:
    """Hounsfield units -> linear attenuation (1/mm); air is 0, dense bone is boosted to read bright."""
    hu = np.asarray(hu, dtype=np.float32)
    scale = np.where(hu > 0, BONE_CONTRAST_BOOST, 1.0).astype(np.float32)
    return np.clip(MU_WATER_PER_MM * (1.0 + scale * hu / 1000.0), 0.0, None).astype(np.float32)


@dataclass
class SlabStack:
    """Line integrals of consecutive slabs along one beam axis.

    `images` is (K, rows, cols): rows run superior -> inferior, cols in display order (frontal: patient's
    right -> left; lateral: anterior -> posterior). Values are dimensionless (mu * mm).
    `depths_mm` is each slab's centre along the beam axis (frontal: +anterior, lateral: +right).
    `top_mm` is the z of row 0, `left_mm` the display coordinate of col 0, `spacing_mm` the pixel size.
    """

    images: np.ndarray
    depths_mm: np.ndarray
    top_mm: float
    left_mm: float
    spacing_mm: float


@dataclass
class Anatomy:
    """Everything a study needs, in mm coordinates centred on the lungs (isocentre = (0, 0, 0)).

    Coarse-grid arrays are (X, Y, Z) in RAS order; voxel (i, j, k) sits at `origin_mm + spacing_mm * (i, j, k)`.
    """

    mu: np.ndarray  # float32 attenuation, 1/mm
    labels: np.ndarray  # uint8 compact codes above
    lung_depth_mm: np.ndarray  # float32 distance from a lung voxel to the lung surface; 0 outside lungs
    heart_dist_mm: np.ndarray  # float32 distance from the heart; 0 inside
    origin_mm: np.ndarray  # (3,) float
    spacing_mm: float
    frontal: SlabStack
    lateral: SlabStack
    source: str

    def axes_mm(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """1-D coordinate vectors (x, y, z) of the coarse grid, for broadcasting (X,1,1), (1,Y,1), (1,1,Z)."""
        nx, ny, nz = self.mu.shape
        o, s = self.origin_mm, self.spacing_mm
        return (
            (o[0] + s * np.arange(nx, dtype=np.float32))[:, None, None],
            (o[1] + s * np.arange(ny, dtype=np.float32))[None, :, None],
            (o[2] + s * np.arange(nz, dtype=np.float32))[None, None, :],
        )

    def lung_mask(self, side: str = "both") -> np.ndarray:
        codes = {"right": RIGHT_LOBES, "left": LEFT_LOBES, "both": RIGHT_LOBES + LEFT_LOBES}[side]
        return np.isin(self.labels, codes)

    def save(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {"cache_version": np.array(CACHE_VERSION)}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, SlabStack):
                for g in fields(value):
                    arrays[f"{f.name}.{g.name}"] = np.asarray(getattr(value, g.name))
            else:
                arrays[f.name] = np.asarray(value)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")  # concurrent runs never share a temp file
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Anatomy | None:
        """Load a cached anatomy; None when absent or written by another cache version."""
        if not path.is_file():
            return None
        with np.load(path) as data:
            if int(data["cache_version"]) != CACHE_VERSION:
                return None

            def stack(name: str) -> SlabStack:
                return SlabStack(
                    images=data[f"{name}.images"],
                    depths_mm=data[f"{name}.depths_mm"],
                    top_mm=float(data[f"{name}.top_mm"]),
                    left_mm=float(data[f"{name}.left_mm"]),
                    spacing_mm=float(data[f"{name}.spacing_mm"]),
                )

            return cls(
                mu=data["mu"],
                labels=data["labels"],
                lung_depth_mm=data["lung_depth_mm"],
                heart_dist_mm=data["heart_dist_mm"],
                origin_mm=data["origin_mm"],
                spacing_mm=float(data["spacing_mm"]),
                frontal=stack("frontal"),
                lateral=stack("lateral"),
                source=str(data["source"]),
            )


def _slab_stack(
    mu: np.ndarray, spacing: tuple[float, float, float], origin: np.ndarray, beam_axis: int, fine_mm: float
) -> SlabStack:
    """Sum `mu` within NUM_SLABS slabs along `beam_axis` (0 = x for lateral, 1 = y for frontal)."""
    from scipy import ndimage

    n = mu.shape[beam_axis]
    pad_rows = int(EXTEND_MM / fine_mm)
    edges = np.linspace(0, n, NUM_SLABS + 1).round().astype(int)
    other = 1 - beam_axis  # the in-plane horizontal axis: y for lateral, x for frontal
    images, depths = [], []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        part = np.take(mu, np.arange(a, b), axis=beam_axis).sum(axis=beam_axis) * spacing[beam_axis]  # (H, Z)
        # display order: rows superior->inferior, cols right->left (frontal) or anterior->posterior (lateral)
        img = part[::-1, ::-1].T
        zoom = (spacing[2] / fine_mm, spacing[other] / fine_mm)
        images.append(_extend_rows(ndimage.zoom(img, zoom, order=1).astype(np.float32), pad_rows))
        depths.append(origin[beam_axis] + spacing[beam_axis] * (0.5 * (a + b) - 0.5))
    h_max = origin[other] + spacing[other] * (mu.shape[other] - 1)
    z_max = origin[2] + spacing[2] * (mu.shape[2] - 1)
    # display coordinate of col 0: frontal cols go toward -x (patient's left), lateral toward -y (posterior)
    top = float(z_max) + pad_rows * fine_mm
    return SlabStack(np.stack(images), np.array(depths, dtype=np.float32), top, float(-h_max), fine_mm)


def _extend_rows(img: np.ndarray, pad: int) -> np.ndarray:
    """Continue the body past the scanned range (neck above, abdomen below) without streaks.

    The edge rows are blurred sideways and fade slightly, so a detector field taller than the CT shows a
    plausible neck and abdomen instead of copies of one slice.
    """
    from scipy import ndimage

    if pad <= 0:
        return img
    fade = np.linspace(1.0, 0.8, pad, dtype=np.float32)[:, None]
    top = ndimage.gaussian_filter1d(img[:4].mean(0), sigma=6.0)[None, :] * fade[::-1]
    bottom = ndimage.gaussian_filter1d(img[-4:].mean(0), sigma=6.0)[None, :] * fade
    return np.concatenate([top, img, bottom]).astype(np.float32)


def build_anatomy(
    hu: np.ndarray,
    labels: np.ndarray,
    spacing_mm: tuple[float, float, float],
    source: str,
    coarse_spacing_mm: float = COARSE_SPACING_MM,
) -> Anatomy:
    """Preprocess a RAS volume (HU, compact labels, voxel spacing in mm) into an `Anatomy`.

    The isocentre is the centre of the lungs' bounding box, so every view is framed on the chest.
    `coarse_spacing_mm` sets the grid findings are inserted on (tests use a coarser one for speed).
    """
    from scipy import ndimage

    if hu.shape != labels.shape or hu.ndim != 3:
        raise ValueError(f"volume and label map must be 3-D and the same shape, got {hu.shape} and {labels.shape}")
    lung = np.isin(labels, RIGHT_LOBES + LEFT_LOBES)
    if lung.sum() < 1000:
        raise ValueError(f"{source}: found almost no lung ({int(lung.sum())} voxels); is this a chest CT?")
    # Drop empty end slices (reconstruction padding): the renderer extends the edge rows beyond the CT.
    filled = (hu > -500).mean(axis=(0, 1))
    keep = np.flatnonzero(filled > 0.2 * filled.max())
    hu, labels, lung = (v[:, :, keep[0] : keep[-1] + 1] for v in (hu, labels, lung))
    idx = np.argwhere(lung)
    centre_idx = 0.5 * (idx.min(0) + idx.max(0))
    spacing = np.asarray(spacing_mm, dtype=np.float32)
    origin = (-centre_idx * spacing).astype(np.float32)
    mu_full = hu_to_mu(hu)
    fine = max(1.25, float(min(spacing_mm)))
    frontal = _slab_stack(mu_full, spacing_mm, origin, beam_axis=1, fine_mm=fine)
    lateral = _slab_stack(mu_full, spacing_mm, origin, beam_axis=0, fine_mm=fine)

    factors = spacing / coarse_spacing_mm
    mu = ndimage.zoom(mu_full, factors, order=1).astype(np.float32)
    coarse_labels = ndimage.zoom(labels, factors, order=0).astype(np.uint8)
    coarse_lung = np.isin(coarse_labels, RIGHT_LOBES + LEFT_LOBES)
    lung_depth = (ndimage.distance_transform_edt(coarse_lung) * coarse_spacing_mm).astype(np.float32)
    heart = coarse_labels == HEART
    if heart.any():
        heart_dist = (ndimage.distance_transform_edt(~heart) * coarse_spacing_mm).astype(np.float32)
    else:
        heart_dist = np.full(mu.shape, 1e6, dtype=np.float32)
    return Anatomy(
        mu=mu,
        labels=coarse_labels,
        lung_depth_mm=lung_depth,
        heart_dist_mm=heart_dist,
        origin_mm=origin,
        spacing_mm=float(coarse_spacing_mm),
        frontal=frontal,
        lateral=lateral,
        source=source,
    )


def split_lung_into_lobes(lung: np.ndarray, right_is_high_x: bool, y_mm: np.ndarray, z_mm: np.ndarray) -> np.ndarray:
    """Approximate lobes for a lung mask without a lobe label map (threshold segmentation, phantom).

    Oblique fissure: a plane rising posteriorly (lower lobes reach higher at the back); horizontal
    fissure splits the right upper from the middle lobe. Returns compact lobe codes (0 outside lungs).
    """
    from scipy import ndimage

    out = np.zeros(lung.shape, dtype=np.uint8)
    components, n = ndimage.label(lung)
    sizes = ndimage.sum(lung, components, index=np.arange(1, n + 1)) if n else np.array([])
    order = np.argsort(sizes)[::-1][:2] + 1
    xs = [np.argwhere(components == c)[:, 0].mean() for c in order]
    for comp, x_mean in zip(order, xs, strict=True):
        mask = components == comp
        is_right = (x_mean > lung.shape[0] / 2) == right_is_high_x
        zz = np.broadcast_to(z_mm, lung.shape)[mask]
        yy = np.broadcast_to(y_mm, lung.shape)[mask]
        z_lo, z_hi = zz.min(), zz.max()
        y_mid = 0.5 * (yy.min() + yy.max())
        fissure = z_lo + 0.45 * (z_hi - z_lo) - 0.8 * (yy - y_mid)
        lower = zz < fissure
        codes = np.where(lower, RLL if is_right else LLL, RUL if is_right else LUL).astype(np.uint8)
        if is_right:
            middle = (~lower) & (zz < z_lo + 0.6 * (z_hi - z_lo)) & (yy > y_mid)
            codes[middle] = RML
        out[mask] = codes
    return out
