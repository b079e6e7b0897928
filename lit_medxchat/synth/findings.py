"""Findings with ground truth: what each study has, and how it changes the chest's attenuation.

A `Finding` is the ground truth a report is written from (kind, side, radiologist location, size or
severity, certainty and the CheXpert labels it sets). `insert_finding` turns it into a `Delta`: a
small 3-D box of attenuation change on the anatomy's coarse grid (placed with the label map: a
consolidation fills part of a named lobe, an effusion pools at that hemithorax's base), or, for
support devices, 3-D polylines drawn analytically at render time so thin tubes stay sharp.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from lit_medxchat.synth.anatomy import (
    BONE,
    HEART,
    LEFT_LOBES,
    LLL,
    LOBE_NAMES,
    LUL,
    MU_WATER_PER_MM,
    RIGHT_LOBES,
    RLL,
    RML,
    RUL,
    TRACHEA,
    Anatomy,
)

KINDS: tuple[str, ...] = (
    "pleural_effusion",
    "consolidation",
    "nodule",
    "mass",
    "pneumothorax",
    "cardiomegaly",
    "edema",
    "atelectasis",
    "support_device",
)
DEVICES: tuple[str, ...] = (
    "endotracheal tube",
    "enteric tube",
    "right internal jugular central venous catheter",
    "left PICC line",
    "pacemaker",
)
FINDING_WEIGHTS = {
    "pleural_effusion": 0.19,
    "consolidation": 0.15,
    "nodule": 0.06,
    "mass": 0.03,
    "pneumothorax": 0.07,
    "cardiomegaly": 0.15,
    "edema": 0.1,
    "atelectasis": 0.15,
    "support_device": 0.1,
}


@dataclass(frozen=True)
class Finding:
    """Ground truth for one inserted abnormality.

    `labels` maps the CheXpert names this finding sets to 1.0 (stated) or -1.0 (hedged in the report).
    `size_mm` is the diameter (nodule, mass), fluid height (effusion), rim width (pneumothorax) or
    heart-border dilation (cardiomegaly); None where a grade is all a radiologist would give.
    """

    kind: str
    side: str  # "right" | "left" | "bilateral" | "none"
    location: str
    severity: str  # "small"/"moderate"/"large", "mild"/"moderate"/"severe", or a size phrase
    size_mm: float | None
    certain: bool
    labels: dict[str, float] = field(default_factory=dict)
    device: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Delta:
    """An attenuation change on the coarse grid: `values` (1/mm) starting at voxel `start` (i, j, k)."""

    start: tuple[int, int, int]
    values: np.ndarray


@dataclass
class Device:
    """A radiopaque tube/line: 3-D polyline (mm, anatomy coordinates) with outer/inner radius (mm)."""

    points: np.ndarray  # (N, 3)
    radius_mm: float
    lumen_mm: float
    mu: float  # attenuation of the wall, 1/mm
    box_mm: tuple[float, float, float] | None = None  # a pacemaker generator: (w, h, d) at points[0]


def _choice(rng: np.random.Generator, options, p=None):
    return options[int(rng.choice(len(options), p=p))]


def sample_findings(rng: np.random.Generator, portable: bool) -> list[Finding]:
    """Draw a study's findings: about a third of studies are normal, the rest have 1-3 kinds."""
    if rng.random() < 0.34:
        return []
    kinds = list(FINDING_WEIGHTS)
    weights = np.array([FINDING_WEIGHTS[k] * (2.5 if portable and k == "support_device" else 1.0) for k in kinds])
    count = int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
    chosen = list(rng.choice(kinds, size=count, replace=False, p=weights / weights.sum()))
    if "nodule" in chosen and "mass" in chosen:
        chosen.remove("mass")
    findings: list[Finding] = []
    for kind in chosen:
        if kind == "support_device":
            names = list(DEVICES)
            n = 1 + int(portable and rng.random() < 0.4)
            for name in rng.choice(names, size=n, replace=False):
                findings.append(_device_finding(str(name)))
        else:
            findings.append(_FINDING_SAMPLERS[kind](rng))
    return findings


def _side(rng: np.random.Generator, bilateral_p: float = 0.0) -> str:
    if rng.random() < bilateral_p:
        return "bilateral"
    return "right" if rng.random() < 0.5 else "left"


def _effusion(rng):
    side = _side(rng, 0.25)
    severity = _choice(rng, ["small", "moderate", "large"], p=[0.5, 0.35, 0.15])
    height = {"small": 22.0, "moderate": 55.0, "large": 105.0}[severity] * rng.uniform(0.85, 1.15)
    location = {"right": "right base", "left": "left base", "bilateral": "bilateral bases"}[side]
    certain = severity != "small" or rng.random() < 0.6
    return Finding(
        "pleural_effusion",
        side,
        location,
        severity,
        round(height, 1),
        certain,
        {"Pleural Effusion": 1.0 if certain else -1.0},
    )


def _consolidation(rng):
    lobe = _choice(rng, [RLL, LLL, RML, RUL, LUL], p=[0.32, 0.28, 0.15, 0.13, 0.12])
    severity = _choice(rng, ["mild", "moderate", "severe"], p=[0.35, 0.4, 0.25])
    pneumonia = rng.random() < 0.6
    pneumonia_certain = rng.random() < 0.45
    labels = {"Consolidation": 1.0, "Lung Opacity": 1.0}
    if pneumonia:
        labels["Pneumonia"] = 1.0 if pneumonia_certain else -1.0
    side = "right" if lobe in RIGHT_LOBES else "left"
    return Finding("consolidation", side, LOBE_NAMES[lobe], severity, None, True, labels)


def _nodule(rng):
    lobe = _choice(rng, [RUL, LUL, RLL, LLL, RML], p=[0.3, 0.25, 0.18, 0.17, 0.1])
    diameter = float(rng.uniform(11.0, 25.0))
    side = "right" if lobe in RIGHT_LOBES else "left"
    return Finding(
        "nodule", side, LOBE_NAMES[lobe], f"{diameter:.0f} mm", round(diameter, 1), True, {"Lung Lesion": 1.0}
    )


def _mass(rng):
    lobe = _choice(rng, [RUL, LUL, RLL, LLL], p=[0.3, 0.3, 0.2, 0.2])
    diameter = float(rng.uniform(35.0, 60.0))
    side = "right" if lobe in RIGHT_LOBES else "left"
    return Finding(
        "mass", side, LOBE_NAMES[lobe], f"{diameter / 10:.1f} cm", round(diameter, 1), True, {"Lung Lesion": 1.0}
    )


def _pneumothorax(rng):
    side = _side(rng)
    severity = _choice(rng, ["small", "moderate", "large"], p=[0.5, 0.35, 0.15])
    rim = {"small": 10.0, "moderate": 18.0, "large": 30.0}[severity] * rng.uniform(0.9, 1.1)
    certain = severity != "small" or rng.random() < 0.6
    return Finding(
        "pneumothorax",
        side,
        f"{side} apical",
        severity,
        round(rim, 1),
        certain,
        {"Pneumothorax": 1.0 if certain else -1.0},
    )


def _cardiomegaly(rng):
    severity = _choice(rng, ["mild", "moderate", "severe"], p=[0.45, 0.35, 0.2])
    dilation = {"mild": 12.0, "moderate": 20.0, "severe": 30.0}[severity] * rng.uniform(0.9, 1.1)
    certain = severity != "mild" or rng.random() < 0.6
    return Finding(
        "cardiomegaly",
        "none",
        "cardiac silhouette",
        severity,
        round(dilation, 1),
        certain,
        {"Cardiomegaly": 1.0 if certain else -1.0},
    )


def _edema(rng):
    severity = _choice(rng, ["mild", "moderate", "severe"], p=[0.45, 0.35, 0.2])
    certain = severity != "mild" or rng.random() < 0.6
    return Finding("edema", "bilateral", "perihilar", severity, None, certain, {"Edema": 1.0 if certain else -1.0})


def _atelectasis(rng):
    side = _side(rng, 0.35)
    severity = _choice(rng, ["minimal", "mild", "moderate"], p=[0.3, 0.45, 0.25])
    location = {"right": "right base", "left": "left base", "bilateral": "bibasilar"}[side]
    certain = rng.random() < 0.7
    return Finding("atelectasis", side, location, severity, None, certain, {"Atelectasis": 1.0 if certain else -1.0})


def _device_finding(name: str) -> Finding:
    location = {
        "endotracheal tube": "tip above the carina",
        "enteric tube": "tip in the stomach",
        "right internal jugular central venous catheter": "tip in the mid SVC",
        "left PICC line": "tip in the low SVC",
        "pacemaker": "left chest wall, leads in the right atrium and right ventricle",
    }[name]
    side = {"right internal jugular central venous catheter": "right", "left PICC line": "left", "pacemaker": "left"}
    return Finding(
        "support_device", side.get(name, "none"), location, "n/a", None, True, {"Support Devices": 1.0}, device=name
    )


_FINDING_SAMPLERS = {
    "pleural_effusion": _effusion,
    "consolidation": _consolidation,
    "nodule": _nodule,
    "mass": _mass,
    "pneumothorax": _pneumothorax,
    "cardiomegaly": _cardiomegaly,
    "edema": _edema,
    "atelectasis": _atelectasis,
}


# ---------------------------------------------------------------------------------------------
# Insertion into the volume


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


# ---------------------------------------------------------------------------------------------
# Support devices: polylines from landmarks


def landmarks(anatomy: Anatomy) -> dict[str, np.ndarray]:
    """Carina, trachea axis, SVC, stomach and skin points (mm) from lung/heart geometry and labels."""
    x, y, z = anatomy.axes_mm()
    lung = anatomy.lung_mask("both")
    heart = anatomy.labels == HEART
    lx = np.broadcast_to(x, lung.shape)[lung]
    ly = np.broadcast_to(y, lung.shape)[lung]
    lz = np.broadcast_to(z, lung.shape)[lung]
    top = float(z.max())
    heart_top = float(np.broadcast_to(z, heart.shape)[heart].max()) if heart.any() else float(np.median(lz))
    trachea = anatomy.labels == TRACHEA
    if trachea.sum() > 20:
        tx = float(np.broadcast_to(x, trachea.shape)[trachea].mean())
        ty = float(np.broadcast_to(y, trachea.shape)[trachea].mean())
        tz = np.broadcast_to(z, trachea.shape)[trachea]
        carina_z = float(max(tz.min(), heart_top - 10.0))
    else:
        tx, ty, carina_z = 0.0, float(np.median(ly)), heart_top + 15.0
    left_floor = float(np.broadcast_to(z, lung.shape)[anatomy.lung_mask("left")].min())
    return {
        "carina": np.array([tx, ty, carina_z]),
        "mouth": np.array([tx, ty + 30.0, top + 40.0]),
        "svc": np.array([tx + 25.0, ty + 5.0, carina_z - 25.0]),
        "stomach": np.array([tx - 70.0, ty + 20.0, left_floor - 35.0]),
        "right_neck": np.array([tx + 35.0, ty + 15.0, top + 40.0]),
        "left_arm": np.array([float(lx.min()) - 60.0, ty, float(lz.max()) - 30.0]),
        "left_chest": np.array([float(lx.min()) + 45.0, float(ly.max()) + 25.0, float(lz.max()) - 50.0]),
        "heart_apex": np.array([tx - 60.0, ty + 40.0, heart_top - 80.0]),
    }


def device_geometry(anatomy: Anatomy, name: str) -> Device:
    m = landmarks(anatomy)
    c = m["carina"]
    dense = MU_WATER_PER_MM * 4.0
    if name == "endotracheal tube":
        tip = c + np.array([0.0, 0.0, 45.0])
        pts = np.stack([m["mouth"], 0.5 * (m["mouth"] + tip) + np.array([0, -10.0, 0]), tip])
        return Device(pts, 4.5, 3.5, dense)
    if name == "enteric tube":
        eso = c + np.array([-5.0, -25.0, 0.0])
        pts = np.stack(
            [
                m["mouth"] + np.array([-3.0, -15.0, 0]),
                eso + np.array([0, 0, 80.0]),
                eso,
                eso + np.array([-10.0, 0, -110.0]),
                m["stomach"],
                m["stomach"] + np.array([-25.0, 10.0, -15.0]),
            ]
        )
        return Device(pts, 2.5, 1.5, dense)
    if name == "right internal jugular central venous catheter":
        pts = np.stack(
            [m["right_neck"], m["right_neck"] + np.array([-5.0, 0, -60.0]), m["svc"] + np.array([0, 0, 25.0]), m["svc"]]
        )
        return Device(pts, 1.6, 0.8, dense * 1.3)
    if name == "left PICC line":
        arm = m["left_arm"]
        pts = np.stack(
            [
                arm + np.array([-40.0, 0, -40.0]),
                arm,
                0.5 * (arm + m["svc"]) + np.array([0, 0, 25.0]),
                m["svc"] + np.array([0, 0, -15.0]),
            ]
        )
        return Device(pts, 1.2, 0.5, dense * 1.3)
    if name == "pacemaker":
        gen = m["left_chest"]
        ra = m["svc"] + np.array([0, 0, -30.0])
        pts = np.stack(
            [gen, gen + np.array([40.0, -20.0, 15.0]), m["svc"] + np.array([0, 0, 15.0]), ra, m["heart_apex"]]
        )
        return Device(pts, 1.3, 0.0, dense * 2.0, box_mm=(48.0, 42.0, 8.0))
    raise ValueError(f"unknown device {name!r}; expected one of {DEVICES}")


def sample_delta_rng(seed: int, study_index: int, finding_index: int) -> np.random.Generator:
    """The RNG shaping one finding's geometry, independent of the worker that renders it."""
    return np.random.default_rng([seed, study_index, 1000 + finding_index])


__all__ = ["Delta", "Device", "Finding", "KINDS", "insert_finding", "sample_findings", "LEFT_LOBES", "LUL"]
