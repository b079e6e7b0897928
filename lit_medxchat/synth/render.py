"""Digitally reconstructed radiographs from slab projections, fast enough for hundreds of studies.

Physics kept: line integrals of attenuation (Beer-Lambert), point-source magnification that differs
with depth (each slab and finding box is warped with its own magnification, so the heart is larger
on AP than on PA), pose jitter (yaw/tilt as depth-dependent shifts, roll and translation in-plane),
quantum noise from the exposure, detector blur. Display: log-domain image windowed and partly
histogram-equalised like MIMIC-CXR-JPG's conversion, bone bright and air dark.

All 3-D work happened before (anatomy slabs, finding boxes); one image costs ~15 2-D warps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from lit_medxchat.synth.anatomy import Anatomy, SlabStack
from lit_medxchat.synth.findings import Delta, Device

VIEWS: tuple[str, ...] = ("PA", "AP", "LATERAL")


@dataclass(frozen=True)
class Pose:
    """Acquisition geometry and exposure of one image (mm, degrees, photons per pixel)."""

    view: str  # "PA" | "AP" | "LATERAL"
    sid_mm: float  # source-to-detector distance
    detector_gap_mm: float  # isocentre-to-detector distance
    yaw_deg: float
    tilt_deg: float
    roll_deg: float
    shift_mm: tuple[float, float]  # detector-plane translation (horizontal, vertical)
    field_mm: float  # detector height covered by the image
    aspect: float  # width / height
    photons: float  # unattenuated photons per pixel (noise level)
    gamma: float
    equalise: float  # 0 = linear window, 1 = full histogram equalisation
    blur_px: float
    sharpen: float

    def to_json(self) -> dict:
        return asdict(self)


def sample_pose(rng: np.random.Generator, view: str) -> Pose:
    """Draw a plausible acquisition: portable AP is closer, noisier and less well aligned than PA."""
    if view not in VIEWS:
        raise ValueError(f"view {view!r} is not one of {VIEWS}")
    portable = view == "AP"
    jitter = 2.0 if portable else 1.0
    return Pose(
        view=view,
        sid_mm=float(rng.uniform(950, 1100) if portable else rng.uniform(1750, 1850)),
        detector_gap_mm=float(rng.uniform(150, 190) if view == "LATERAL" else rng.uniform(120, 160)),
        yaw_deg=float(rng.normal(0, 2.5 * jitter)),
        tilt_deg=float(rng.normal(0, 2.5 * jitter)),
        roll_deg=float(rng.normal(0, 1.5 * jitter)),
        # the lungs' bounding-box centre sits low (posterior recesses): frame the image a little higher
        shift_mm=(float(rng.normal(0, 10 * jitter)), float(rng.normal(-30.0, 10 * jitter))),
        field_mm=float(rng.uniform(330, 380) if view != "LATERAL" else rng.uniform(340, 390)),
        aspect=float(rng.uniform(0.84, 1.0) if portable else rng.uniform(0.8, 0.92)),
        photons=float(rng.uniform(1500, 4000) if portable else rng.uniform(4000, 12000)),
        gamma=float(rng.uniform(0.85, 1.15)),
        equalise=float(rng.uniform(0.35, 0.75)),
        blur_px=float(rng.uniform(0.5, 1.3)),
        sharpen=float(rng.uniform(0.3, 0.9)),
    )


def image_shape(pose: Pose, size: int) -> tuple[int, int]:
    """(rows, cols) with the longest side `size`."""
    return size, max(8, int(round(size * pose.aspect)))


def _to_detector_depth(view: str, beam_coord: float) -> float:
    """Distance toward the detector from the isocentre: PA detector anterior, AP posterior, lateral on the left."""
    return {"PA": beam_coord, "AP": -beam_coord, "LATERAL": -beam_coord}[view]


class _Projector:
    """Maps between object coordinates (display h, z, detector-depth d) and output pixels for one pose."""

    def __init__(self, pose: Pose, shape: tuple[int, int]):
        self.pose = pose
        self.rows, self.cols = shape
        self.pixel_mm = pose.field_mm / self.rows
        self.sod = pose.sid_mm - pose.detector_gap_mm
        self.tan_yaw = np.tan(np.radians(pose.yaw_deg))
        self.tan_tilt = np.tan(np.radians(pose.tilt_deg))
        a = np.radians(pose.roll_deg)
        self.cos, self.sin = np.cos(a), np.sin(a)

    def magnification(self, d: float | np.ndarray) -> float | np.ndarray:
        return self.pose.sid_mm / (self.sod + d)

    def pixel_to_object(self, r: np.ndarray, c: np.ndarray, d: float) -> tuple[np.ndarray, np.ndarray]:
        u = (c - 0.5 * (self.cols - 1)) * self.pixel_mm - self.pose.shift_mm[0]
        v = (0.5 * (self.rows - 1) - r) * self.pixel_mm - self.pose.shift_mm[1]
        u1 = self.cos * u + self.sin * v
        v1 = -self.sin * u + self.cos * v
        m = self.magnification(d)
        return u1 / m - d * self.tan_yaw, v1 / m - d * self.tan_tilt

    def object_to_pixel(self, h: np.ndarray, z: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = self.magnification(d)
        u1 = m * (h + d * self.tan_yaw)
        v1 = m * (z + d * self.tan_tilt)
        u = self.cos * u1 - self.sin * v1 + self.pose.shift_mm[0]
        v = self.sin * u1 + self.cos * v1 + self.pose.shift_mm[1]
        return 0.5 * (self.rows - 1) - v / self.pixel_mm, u / self.pixel_mm + 0.5 * (self.cols - 1)

    def warp(
        self, image: np.ndarray, top_mm: float, left_mm: float, spacing: float, d: float, extend: bool
    ) -> np.ndarray:
        """Resample a layer (rows from `top_mm` down, cols from `left_mm`) seen at depth `d` onto the detector."""
        from scipy import ndimage

        def layer_index(r: float, c: float) -> np.ndarray:
            h, z = self.pixel_to_object(np.array(r), np.array(c), d)
            return np.array([(top_mm - z) / spacing, (h - left_mm) / spacing])

        origin = layer_index(0.0, 0.0)
        matrix = np.stack([layer_index(1.0, 0.0) - origin, layer_index(0.0, 1.0) - origin], axis=1)
        return ndimage.affine_transform(
            image,
            matrix,
            offset=origin,
            output_shape=(self.rows, self.cols),
            order=1,
            mode="nearest" if extend else "constant",
            cval=0.0,
        )


def _delta_layer(anatomy: Anatomy, delta: Delta, view: str) -> tuple[np.ndarray, float, float, float]:
    """Project a finding box along the beam: (image, top_mm, left_mm, detector depth of its centre of mass)."""
    s = anatomy.spacing_mm
    beam_axis, other = (1, 0) if view != "LATERAL" else (0, 1)
    values = delta.values
    line = values.sum(axis=beam_axis) * s  # (other, Z)
    img = line[::-1, ::-1].T  # rows superior->inferior, cols in display order
    weights = np.abs(values).sum(axis=tuple(a for a in range(3) if a != beam_axis))
    centre = float((weights * np.arange(len(weights))).sum() / max(weights.sum(), 1e-9))
    beam_mm = anatomy.origin_mm[beam_axis] + s * (delta.start[beam_axis] + centre)
    top = anatomy.origin_mm[2] + s * (delta.start[2] + values.shape[2] - 1)
    h_max = anatomy.origin_mm[other] + s * (delta.start[other] + values.shape[other] - 1)
    return img.astype(np.float32), float(top), float(-h_max), _to_detector_depth(view, beam_mm)


def _draw_device(projector: _Projector, device: Device, view: str, out: np.ndarray) -> None:
    """Add a tube's line integral: the chord through a hollow cylinder, so tubes show two walls."""
    pts = device.points
    h = -pts[:, 0] if view != "LATERAL" else -pts[:, 1]
    beam = pts[:, 1] if view != "LATERAL" else pts[:, 0]
    d = np.array([_to_detector_depth(view, b) for b in beam])
    rows, cols = projector.object_to_pixel(h, pts[:, 2], d)
    mags = projector.magnification(d)
    _add_tube(out, rows, cols, device, float(np.mean(mags)), projector.pixel_mm)
    if device.box_mm is not None:
        w, hgt, depth = device.box_mm
        m = float(mags[0])
        r0, c0 = rows[0], cols[0]
        half_w = 0.5 * (w if view != "LATERAL" else depth) * m / projector.pixel_mm
        half_h = 0.5 * hgt * m / projector.pixel_mm
        rr, cc = np.ogrid[: out.shape[0], : out.shape[1]]
        inside = ((rr - r0) / half_h) ** 2 + ((cc - c0) / max(half_w, 1.0)) ** 4 <= 1.0
        thickness = depth if view != "LATERAL" else w
        out[inside] += device.mu * thickness * 0.6


def _add_tube(out: np.ndarray, rows: np.ndarray, cols: np.ndarray, device: Device, mag: float, pixel_mm: float) -> None:
    """Distance to the projected polyline (min over segments), then one chord per pixel: joints do not double."""
    r_out = device.radius_mm * mag / pixel_mm
    r_in = device.lumen_mm * mag / pixel_mm
    pad = int(np.ceil(r_out)) + 1
    r_lo, r_hi = int(max(0, rows.min() - pad)), int(min(out.shape[0], rows.max() + pad + 1))
    c_lo, c_hi = int(max(0, cols.min() - pad)), int(min(out.shape[1], cols.max() + pad + 1))
    if r_lo >= r_hi or c_lo >= c_hi:
        return
    rr, cc = np.mgrid[r_lo:r_hi, c_lo:c_hi].astype(np.float32)
    dist = np.full(rr.shape, np.inf, dtype=np.float32)
    for i in range(len(rows) - 1):
        a = (rows[i], cols[i])
        seg = (rows[i + 1] - a[0], cols[i + 1] - a[1])
        length2 = float(seg[0] ** 2 + seg[1] ** 2) or 1e-6
        t = np.clip(((rr - a[0]) * seg[0] + (cc - a[1]) * seg[1]) / length2, 0.0, 1.0)
        np.minimum(dist, np.hypot(rr - (a[0] + t * seg[0]), cc - (a[1] + t * seg[1])), out=dist)
    chord = 2 * np.sqrt(np.clip(r_out**2 - dist**2, 0, None)) - 2 * np.sqrt(np.clip(r_in**2 - dist**2, 0, None))
    out[r_lo:r_hi, c_lo:c_hi] += device.mu * chord * pixel_mm / mag


def line_integrals(
    anatomy: Anatomy, pose: Pose, size: int, deltas: list[Delta] = (), devices: list[Device] = ()
) -> np.ndarray:
    """The noiseless projection image P = integral of mu along each ray (dimensionless), shape (rows, cols)."""
    shape = image_shape(pose, size)
    stack: SlabStack = anatomy.lateral if pose.view == "LATERAL" else anatomy.frontal
    # Warp at about the slabs' own resolution (finer would only interpolate), then upsample once.
    work_rows = min(shape[0], max(32, int(pose.field_mm / stack.spacing_mm)))
    work = (work_rows, max(8, int(round(work_rows * shape[1] / shape[0]))))
    projector = _Projector(pose, work)
    total = np.zeros(work, dtype=np.float32)
    for img, depth in zip(stack.images, stack.depths_mm, strict=True):
        d = _to_detector_depth(pose.view, float(depth))
        total += projector.warp(img, stack.top_mm, stack.left_mm, stack.spacing_mm, d, extend=True)
    for delta in deltas:
        img, top, left, d = _delta_layer(anatomy, delta, pose.view)
        total += projector.warp(img, top, left, anatomy.spacing_mm, d, extend=False)
    if work != shape:
        from PIL import Image

        total = np.asarray(Image.fromarray(total, mode="F").resize((shape[1], shape[0]), Image.BILINEAR))
        total = np.array(total, dtype=np.float32)
    full = _Projector(pose, shape)
    for device in devices:
        _draw_device(full, device, pose.view, total)
    return total


def to_radiograph(line: np.ndarray, pose: Pose, rng: np.random.Generator) -> np.ndarray:
    """Exposure, quantum noise, detector blur and display processing: P -> 8-bit image (bone bright)."""
    from scipy import ndimage

    counts = pose.photons * np.exp(-line)
    noisy = line + rng.standard_normal(line.shape).astype(np.float32) / np.sqrt(np.maximum(counts, 1.0))
    noisy = ndimage.gaussian_filter(noisy, pose.blur_px)
    img = np.clip(noisy, 0.0, None) ** pose.gamma
    lo, hi = np.percentile(img, [0.5, 99.7])
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    ranks = np.interp(img, *_cdf(img))
    img = (1.0 - pose.equalise) * img + pose.equalise * ranks
    background = ndimage.uniform_filter(img, size=max(3, img.shape[0] // 24))
    img = np.clip(img + pose.sharpen * (img - background), 0.0, 1.0)
    return np.round(img * 255.0).astype(np.uint8)


def _cdf(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hist, edges = np.histogram(img, bins=256, range=(0.0, 1.0))
    cdf = np.cumsum(hist).astype(np.float64)
    cdf /= cdf[-1]
    return edges[1:], cdf


def render_view(
    anatomy: Anatomy,
    pose: Pose,
    size: int,
    rng: np.random.Generator,
    deltas: list[Delta] = (),
    devices: list[Device] = (),
) -> np.ndarray:
    """One radiograph (uint8, rows x cols, longest side `size`)."""
    return to_radiograph(line_integrals(anatomy, pose, size, deltas, devices), pose, rng)
