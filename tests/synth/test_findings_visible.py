"""Each kind of finding changes the radiograph where anatomy says it should, in frontal and lateral views.

Same pose and same noise with and without the finding; the change must concentrate in the expected
region of the image (fractions of height/width; frontal images show the patient's right on the left,
lateral images show anterior on the left) and have the expected sign (denser = brighter).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from lit_medxchat.synth.findings import Device, Finding
from lit_medxchat.synth.insert import insert_finding
from lit_medxchat.synth.render import render_view, sample_pose

SIZE = 128

# kind -> (finding, {view: (row0, row1, col0, col1) as fractions}, expected sign of the mean change)
CASES = {
    "pleural_effusion": (
        Finding("pleural_effusion", "right", "right base", "moderate", 55.0, True),
        {"frontal": (0.5, 1.0, 0.0, 0.5), "LATERAL": (0.5, 1.0, 0.0, 1.0)},
        +1,
    ),
    "consolidation": (
        Finding("consolidation", "left", "left lower lobe", "severe", None, True),
        {"frontal": (0.35, 1.0, 0.5, 1.0), "LATERAL": (0.35, 1.0, 0.35, 1.0)},
        +1,
    ),
    "nodule": (
        Finding("nodule", "right", "right upper lobe", "20 mm", 20.0, True),
        {"frontal": (0.0, 0.6, 0.0, 0.5), "LATERAL": (0.0, 0.6, 0.0, 1.0)},
        +1,
    ),
    "mass": (
        Finding("mass", "left", "left upper lobe", "5.0 cm", 50.0, True),
        {"frontal": (0.0, 0.6, 0.5, 1.0), "LATERAL": (0.0, 0.6, 0.0, 1.0)},
        +1,
    ),
    "pneumothorax": (
        Finding("pneumothorax", "left", "left apical", "large", 30.0, True),
        {"frontal": (0.0, 0.75, 0.5, 1.0), "LATERAL": (0.0, 0.75, 0.0, 1.0)},
        -1,
    ),
    "cardiomegaly": (
        Finding("cardiomegaly", "none", "cardiac silhouette", "severe", 30.0, True),
        {"frontal": (0.35, 0.9, 0.3, 0.95), "LATERAL": (0.35, 0.9, 0.0, 0.7)},
        +1,
    ),
    "edema": (
        Finding("edema", "bilateral", "perihilar", "severe", None, True),
        {"frontal": (0.15, 0.85, 0.1, 0.9), "LATERAL": (0.15, 0.85, 0.1, 0.9)},
        +1,
    ),
    "atelectasis": (
        Finding("atelectasis", "right", "right base", "moderate", None, True),
        {"frontal": (0.45, 1.0, 0.0, 0.5), "LATERAL": (0.45, 1.0, 0.0, 1.0)},
        +1,
    ),
    "support_device": (
        Finding("support_device", "none", "tip above the carina", "n/a", None, True, device="endotracheal tube"),
        {"frontal": (0.0, 0.55, 0.3, 0.7), "LATERAL": (0.0, 0.55, 0.0, 1.0)},
        +1,
    ),
}


def _neutral_pose(view: str):
    pose = sample_pose(np.random.default_rng(0), view)
    return replace(pose, yaw_deg=0.0, tilt_deg=0.0, roll_deg=0.0, shift_mm=(0.0, 0.0), aspect=1.0)


@pytest.mark.parametrize("view", ["PA", "AP", "LATERAL"])
@pytest.mark.parametrize("kind", list(CASES))
def test_finding_shows_in_expected_region(phantom, kind, view):
    finding, regions, sign = CASES[kind]
    change = insert_finding(phantom, finding, np.random.default_rng(1))
    deltas = [change] if not isinstance(change, Device) else []
    devices = [change] if isinstance(change, Device) else []
    pose = _neutral_pose(view)
    base = render_view(phantom, pose, SIZE, np.random.default_rng(2)).astype(np.float32)
    with_finding = render_view(phantom, pose, SIZE, np.random.default_rng(2), deltas, devices).astype(np.float32)
    diff = with_finding - base
    r0, r1, c0, c1 = regions["LATERAL" if view == "LATERAL" else "frontal"]
    h, w = diff.shape
    inside = np.zeros_like(diff, dtype=bool)
    inside[int(r0 * h) : int(r1 * h), int(c0 * w) : int(c1 * w)] = True
    peak = np.sort(np.abs(diff), axis=None)[-20]  # at least 20 pixels change this much: a spot, not a speck
    assert peak >= 6.0, f"{kind} barely visible in {view}: 20th strongest change {peak:.1f} grey levels"
    strong = np.abs(diff) >= 0.5 * peak
    share = strong[inside].sum() / strong.sum()
    assert share >= 0.8, f"{kind} in {view}: only {share:.0%} of the clear change lies in the expected region"
    assert np.sign(diff[strong].mean()) == sign, f"{kind} in {view} changes the wrong way"


def test_heart_projects_larger_on_ap_than_on_pa(phantom):
    """Magnification: the anterior heart is close to the detector on PA and close to the source on AP."""
    from lit_medxchat.synth.render import line_integrals

    finding = CASES["cardiomegaly"][0]
    change = insert_finding(phantom, finding, np.random.default_rng(1))
    areas = {}
    for view in ("PA", "AP"):
        pose = _neutral_pose(view)
        footprint = line_integrals(phantom, pose, SIZE, [change]) - line_integrals(phantom, pose, SIZE)
        areas[view] = int((footprint > 0.05).sum())
    assert areas["AP"] > 1.1 * areas["PA"], areas


def test_finding_without_its_structure_is_not_placed(phantom):
    """A CT segmentation lacking a lobe cannot show a finding there; the generator then leaves it out."""
    from lit_medxchat.synth.anatomy import RML, RUL

    no_middle_lobe = replace(phantom, labels=np.where(phantom.labels == RML, RUL, phantom.labels).astype(np.uint8))
    finding = Finding("consolidation", "right", "right middle lobe", "moderate", None, True)
    assert insert_finding(no_middle_lobe, finding, np.random.default_rng(0)) is None
    assert insert_finding(phantom, finding, np.random.default_rng(0)) is not None
