"""Findings with ground truth: what each study has.

A `Finding` is the ground truth a report is written from (kind, side, radiologist location, size or
severity, certainty and the CheXpert labels it sets). `lit_medxchat.synth.insert` turns it into a
`Delta` (a small 3-D box of attenuation change on the anatomy's coarse grid) or, for support
devices, a `Device` (3-D polylines drawn analytically at render time so thin tubes stay sharp).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from lit_medxchat.synth.anatomy import LLL, LOBE_NAMES, LUL, RIGHT_LOBES, RLL, RML, RUL

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


def sample_delta_rng(seed: int, study_index: int, finding_index: int) -> np.random.Generator:
    """The RNG shaping one finding's geometry, independent of the worker that renders it."""
    return np.random.default_rng([seed, study_index, 1000 + finding_index])
