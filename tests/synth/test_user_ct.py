"""`--ct`: any NIfTI chest CT; anatomy from thresholds and morphology instead of a label map."""

from __future__ import annotations

import numpy as np

from lit_medxchat.synth.anatomy import HEART, LEFT_LOBES, RIGHT_LOBES
from lit_medxchat.synth.ct_source import load_anatomy
from lit_medxchat.synth.phantom import build_phantom


def test_threshold_segmentation_finds_both_lungs_and_the_heart(tmp_path, synth_cache):
    import nibabel as nib

    hu, _, (s, _, _) = build_phantom(spacing_mm=4.0)
    # Stored LPS-like (x flipped) with its affine saying so: the reader must reorient to RAS itself.
    affine = np.diag([-s, s, s, 1.0])
    path = tmp_path / "chest.nii.gz"
    nib.save(nib.Nifti1Image(hu[::-1].astype(np.int16), affine), str(path))

    anatomy = load_anatomy(ct=path, use_cache=False)
    x, _, _ = anatomy.axes_mm()
    for lobes, sign in ((RIGHT_LOBES, 1), (LEFT_LOBES, -1)):
        mask = np.isin(anatomy.labels, lobes)
        assert mask.sum() > 500
        assert np.sign(np.broadcast_to(x, mask.shape)[mask].mean()) == sign  # RAS: right lung at +x
    heart = anatomy.labels == HEART
    assert heart.sum() > 100
    assert np.broadcast_to(x, heart.shape)[heart].mean() < 0  # the phantom's heart leans left
    assert anatomy.source.startswith("ct:")
