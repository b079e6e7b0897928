"""Inserting a finding into the chest: attenuation changes placed by the anatomy's label map.

Each finding becomes a `Delta` confined to the structure it belongs to (a consolidation fills part of
a named lobe, an effusion pools at that hemithorax's base, cardiomegaly dilates the heart) or, for
support devices, a `Device` built from anatomical landmarks (`lit_medxchat.synth.devices`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from lit_medxchat.synth.anatomy import BONE, HEART, LLL, LOBE_NAMES, MU_WATER_PER_MM, RLL, Anatomy
from lit_medxchat.synth.devices import device_geometry
from lit_medxchat.synth.findings import Delta, Device, Finding


def _crop(change: np.ndarray) -> Delta | None:
    nz = np.argwhere(change != 0)
    if len(nz) == 0:
        return None
    lo, hi = nz.min(0), nz.max(0) + 1
    box = change[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].astype(np.float32)
    return Delta((int(lo[0]), int(lo[1]), int(lo[2])), box)


def _sides(side: str) -> list[str]:
    return ["right", "left"] if side == "bilateral" else [side]


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float, mask: np.ndarray | None = None):
    """Zero-mean unit-variance smooth noise; computed only inside `mask`'s bounding box (zeros elsewhere)."""
    from scipy import ndimage

    out = np.zeros(shape, dtype=np.float32)
    if mask is not None and mask.any():
        idx = np.argwhere(mask)
        lo = np.maximum(idx.min(0) - 2, 0)
        hi = idx.max(0) + 3
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    else:
        box = tuple(slice(0, n) for n in shape)
    sub_shape = tuple(b.stop - b.start if b.stop <= n else n - b.start for b, n in zip(box, shape, strict=True))
    noise = rng.standard_normal(sub_shape).astype(np.float32)
    noise = ndimage.gaussian_filter(noise, sigma, truncate=2.5)
    out[box] = (noise - noise.mean()) / (noise.std() + 1e-6)
    return out


def insert_finding(anatomy: Anatomy, finding: Finding, rng: np.random.Generator) -> Delta | Device | None:
    """Return the attenuation change (or device geometry) of `finding` in this anatomy.

    3-D work runs on the bounding box of the structure the finding lives in (a lobe, one lung, the
    heart plus its dilation margin), which keeps a study's insertion cost in the tens of milliseconds.
    """
    if finding.kind == "support_device":
        return device_geometry(anatomy, finding.device or "")
    lo, hi = _region_box(anatomy, finding)
    if lo is None:
        return None
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    sub = replace(
        anatomy,
        mu=anatomy.mu[box],
        labels=anatomy.labels[box],
        lung_depth_mm=anatomy.lung_depth_mm[box],
        heart_dist_mm=anatomy.heart_dist_mm[box],
        origin_mm=anatomy.origin_mm + anatomy.spacing_mm * np.asarray(lo, dtype=np.float32),
    )
    delta = _INSERTERS[finding.kind](sub, finding, rng)
    if delta is None:
        return None
    return Delta(tuple(int(a + b) for a, b in zip(delta.start, lo, strict=True)), delta.values)


def _region_box(anatomy: Anatomy, finding: Finding) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Voxel bounds (lo, hi) of the structure a finding is confined to, with a small margin."""
    codes = {v: k for k, v in LOBE_NAMES.items()}
    margin_mm = 5.0
    if finding.kind in ("consolidation", "nodule", "mass"):
        mask = anatomy.labels == codes[finding.location]
    elif finding.kind in ("pleural_effusion", "pneumothorax"):
        mask = anatomy.lung_mask("both" if finding.side == "bilateral" else finding.side)
    elif finding.kind == "atelectasis":
        lobes = {"right": (RLL,), "left": (LLL,), "bilateral": (RLL, LLL)}[finding.side]
        mask = np.isin(anatomy.labels, lobes)
    elif finding.kind == "cardiomegaly":
        mask = anatomy.labels == HEART
        margin_mm = 2.0 * (finding.size_mm or 0.0) + 5.0
    else:
        mask = anatomy.lung_mask("both")
    idx = np.argwhere(mask)
    if len(idx) == 0:
        return None, None
    pad = int(np.ceil(margin_mm / anatomy.spacing_mm))
    lo = np.maximum(idx.min(0) - pad, 0)
    hi = np.minimum(idx.max(0) + 1 + pad, np.array(anatomy.mu.shape))
    return lo, hi


def _fluid_like(anatomy: Anatomy, region: np.ndarray, target: float) -> np.ndarray:
    """Change that raises attenuation to `target` inside `region` (never lowers bone)."""
    return np.where(region, np.clip(target - anatomy.mu, 0.0, None), 0.0)


def _insert_effusion(anatomy, finding, rng):
    x, y, z = anatomy.axes_mm()
    change = np.zeros(anatomy.mu.shape, dtype=np.float32)
    for side in _sides(finding.side):
        lung = anatomy.lung_mask(side)
        zs = np.broadcast_to(z, lung.shape)[lung]
        xs = np.broadcast_to(x, lung.shape)[lung]
        z_floor = np.percentile(zs, 0.5)
        half_width = 0.5 * (xs.max() - xs.min())
        lateral = np.clip((np.abs(x) - np.abs(xs).mean()) / half_width + 0.5, 0.0, 1.0)
        # Meniscus: the fluid climbs the lateral chest wall (quadratically) and every pleural surface a
        # little; the top fades over ~2 cm as the layer thins, so no flat edge shows in any projection.
        level = (
            z_floor
            + finding.size_mm * (0.45 + 1.1 * lateral**2)
            + 0.35 * finding.size_mm * np.exp(-anatomy.lung_depth_mm / 12.0)
        )
        fraction = np.clip((level - z) / 22.0, 0.0, 1.0) * lung
        change += fraction * np.clip(MU_WATER_PER_MM * 1.02 - anatomy.mu, 0.0, None)
    return _crop(change)


def _insert_consolidation(anatomy, finding, rng):
    code = {v: k for k, v in LOBE_NAMES.items()}[finding.location]
    lobe = anatomy.labels == code
    fraction = {"mild": 0.3, "moderate": 0.55, "severe": 0.85}[finding.severity]
    field_ = _smooth_field(rng, lobe.shape, 3.0, lobe)
    inside = field_[lobe]
    if inside.size == 0:
        return None
    threshold = np.quantile(inside, 1.0 - fraction)
    weight = np.clip((field_ - threshold) / 0.6, 0.0, 1.0) * lobe
    return _crop(weight * np.clip(MU_WATER_PER_MM * 0.9 - anatomy.mu, 0.0, None))


def _lobe_point(anatomy: Anatomy, location: str, margin_mm: float, rng: np.random.Generator) -> np.ndarray:
    code = {v: k for k, v in LOBE_NAMES.items()}[location]
    candidates = np.argwhere((anatomy.labels == code) & (anatomy.lung_depth_mm > margin_mm))
    if len(candidates) == 0:
        candidates = np.argwhere(anatomy.labels == code)
        depth = anatomy.lung_depth_mm[tuple(candidates.T)]
        candidates = candidates[depth >= np.quantile(depth, 0.9)]
    return candidates[int(rng.integers(len(candidates)))]


def _insert_sphere(anatomy, finding, rng, lobulated: bool):
    radius = 0.5 * finding.size_mm
    centre = _lobe_point(anatomy, finding.location, radius + 4.0, rng)
    x, y, z = anatomy.axes_mm()
    c = anatomy.origin_mm + anatomy.spacing_mm * centre
    dist = np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2)
    if lobulated:
        dist = dist * (1.0 + 0.12 * _smooth_field(rng, dist.shape, 2.0, dist < radius * 1.5))
    inside = np.clip((radius - dist) / anatomy.spacing_mm + 0.5, 0.0, 1.0)
    return _crop(inside * np.clip(MU_WATER_PER_MM * 1.4 - anatomy.mu, 0.0, None))  # nodules read dense


def _insert_nodule(anatomy, finding, rng):
    return _insert_sphere(anatomy, finding, rng, lobulated=False)


def _insert_mass(anatomy, finding, rng):
    return _insert_sphere(anatomy, finding, rng, lobulated=True)


def _insert_pneumothorax(anatomy, finding, rng):
    """Apical air rim without lung markings; the visceral pleural line shows where the lung edge went."""
    x, y, z = anatomy.axes_mm()
    lung = anatomy.lung_mask(finding.side)
    zs = np.broadcast_to(z, lung.shape)[lung]
    z_top = zs.max()
    extent = {"small": 0.3, "moderate": 0.55, "large": 1.0}[finding.severity] * (z_top - zs.min())
    region = lung & (z > z_top - extent)
    rim = finding.size_mm
    taper = np.clip((z - (z_top - extent)) / max(extent, 1.0) * 1.5, 0.3, 1.0)  # widest at the apex
    depth = anatomy.lung_depth_mm
    # Air collects against the chest wall (lateral and apical), not along the mediastinum.
    xs = np.broadcast_to(x, lung.shape)[lung]
    half_width = 0.5 * (xs.max() - xs.min())
    lateral = (np.abs(x) - np.abs(xs).mean()) / half_width + 0.6
    region &= (lateral > 0.0) | (z > z_top - 30.0)
    air = region & (depth < rim * taper)
    line = region & (depth >= rim * taper) & (depth < rim * taper + 2.5)
    change = np.where(air, -anatomy.mu, 0.0)
    change += np.where(line, MU_WATER_PER_MM * 0.45, 0.0)
    collapsed = region & (depth >= rim * taper + 2.5)
    change += np.where(collapsed, MU_WATER_PER_MM * 0.04 * rim / 30.0, 0.0)
    return _crop(change)


def _insert_cardiomegaly(anatomy, finding, rng):
    """Dilate the heart, more to the left and inferolaterally, replacing lung and fat it grows into."""
    x, y, z = anatomy.axes_mm()
    heart = anatomy.labels == HEART
    if not heart.any():
        return None
    xc = float(np.broadcast_to(x, heart.shape)[heart].mean())
    toward_left = np.clip((xc - x) / 60.0, -1.0, 1.0)
    reach = finding.size_mm * (1.0 + 0.5 * toward_left)
    zc = float(np.broadcast_to(z, heart.shape)[heart].mean())
    reach = reach * np.clip((zc + 45.0 - z) / 45.0, 0.0, 1.0)  # the great vessels above do not dilate
    shell = (anatomy.heart_dist_mm > 0) & (anatomy.heart_dist_mm < reach) & (anatomy.labels != BONE)
    return _crop(_fluid_like(anatomy, shell, MU_WATER_PER_MM * 1.04))


def _hila(anatomy: Anatomy) -> list[np.ndarray]:
    x, y, z = anatomy.axes_mm()
    points = []
    for side in ("right", "left"):
        lung = anatomy.lung_mask(side)
        xs = np.broadcast_to(x, lung.shape)[lung]
        ys = np.broadcast_to(y, lung.shape)[lung]
        zs = np.broadcast_to(z, lung.shape)[lung]
        medial = np.quantile(xs, 0.1) if side == "right" else np.quantile(xs, 0.9)
        points.append(np.array([medial, np.median(ys), zs.min() + 0.55 * (zs.max() - zs.min())]))
    return points


def _insert_edema(anatomy, finding, rng):
    """Bilateral perihilar haze fading toward the periphery, with an interstitial texture."""
    x, y, z = anatomy.axes_mm()
    lung = anatomy.lung_mask("both")
    strength = {"mild": 0.14, "moderate": 0.26, "severe": 0.4}[finding.severity]
    sigma = {"mild": 45.0, "moderate": 60.0, "severe": 80.0}[finding.severity]
    dist = np.minimum(*[np.sqrt((x - h[0]) ** 2 + (y - h[1]) ** 2 + (z - h[2]) ** 2) for h in _hila(anatomy)])
    texture = 1.0 + 0.35 * _smooth_field(rng, lung.shape, 1.2, lung)
    weight = np.clip(np.exp(-dist / sigma) * texture, 0.0, 1.2)
    return _crop(np.where(lung, strength * weight * MU_WATER_PER_MM * 2.5, 0.0))


def _insert_atelectasis(anatomy, finding, rng):
    """Basal subsegmental density with a fuzzy top, plus a short discoid (plate-like) band above it."""
    x, y, z = anatomy.axes_mm()
    change = np.zeros(anatomy.mu.shape, dtype=np.float32)
    height = {"minimal": 14.0, "mild": 24.0, "moderate": 40.0}[finding.severity]
    for side in _sides(finding.side):
        lobe = anatomy.labels == (RLL if side == "right" else LLL)
        zs = np.broadcast_to(z, lobe.shape)[lobe]
        if zs.size == 0:
            continue
        z_base = np.percentile(zs, 5)
        level = z_base + height * (1.0 + 0.35 * _smooth_field(rng, lobe.shape, 3.0, lobe))
        fraction = np.clip((level - z) / 15.0, 0.0, 1.0) * lobe
        change += fraction * np.clip(MU_WATER_PER_MM * 0.6 - anatomy.mu, 0.0, None)
        # discoid atelectasis: a 3 mm plate, 4-7 cm wide, gently tilted, above the basal density
        lobe_x = np.broadcast_to(x, lobe.shape)[lobe]
        lobe_y = np.broadcast_to(y, lobe.shape)[lobe]
        x0 = float(np.median(lobe_x)) + rng.uniform(-10, 10)
        y0 = float(np.median(lobe_y))
        half = rng.uniform(20.0, 35.0)
        plate_z = z_base + height + rng.uniform(10.0, 20.0) + 0.15 * (x - x0) + 0.1 * (y - y0)
        plate = lobe & (np.abs(z - plate_z) < 1.8) & (np.abs(x - x0) < half) & (np.abs(y - y0) < 2 * half)
        change += _fluid_like(anatomy, plate, MU_WATER_PER_MM * 0.7)
    return _crop(change)


_INSERTERS = {
    "pleural_effusion": _insert_effusion,
    "consolidation": _insert_consolidation,
    "nodule": _insert_nodule,
    "mass": _insert_mass,
    "pneumothorax": _insert_pneumothorax,
    "cardiomegaly": _insert_cardiomegaly,
    "edema": _insert_edema,
    "atelectasis": _insert_atelectasis,
}
