"""A procedural chest phantom in pure numpy, for tests and for machines that cannot fetch the CT.

Analytic shapes in mm (RAS: +x patient's right, +y anterior, +z superior), evaluated on a voxel grid:
body with a fat layer and shoulders, two lungs with diaphragm domes and vessel texture, heart, aorta,
trachea, spine, ribs, clavicles, scapulae, liver and a gastric air bubble. Lobes come from
`split_lung_into_lobes`, so the phantom exercises the same code as a thresholded CT.
"""

from __future__ import annotations

import numpy as np

from lit_medxchat.synth.anatomy import AORTA, BONE, HEART, TRACHEA, split_lung_into_lobes


def _tube(points: np.ndarray, radius: float, x, y, z, step: float) -> np.ndarray:
    """Voxels within `radius` mm of a polyline (sampled densely), as a boolean mask."""
    mask = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), dtype=bool)
    for a, b in zip(points[:-1], points[1:], strict=True):
        n = max(2, int(np.linalg.norm(b - a) / (0.5 * step)) + 1)
        for t in np.linspace(0.0, 1.0, n):
            p = a + t * (b - a)
            lo = np.floor((p - radius - np.array([x.min(), y.min(), z.min()])) / step).astype(int)
            hi = lo + int(np.ceil(2 * radius / step)) + 2
            sx, sy, sz = (slice(max(0, lo[i]), max(0, hi[i])) for i in range(3))
            d2 = (x[sx, :, :] - p[0]) ** 2 + (y[:, sy, :] - p[1]) ** 2 + (z[:, :, sz] - p[2]) ** 2
            mask[sx, sy, sz] |= d2 <= radius**2
    return mask


def build_phantom(spacing_mm: float = 2.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Return (HU volume, compact labels, spacing) of an adult chest in RAS order.

    `seed` only changes the lung vessel texture. About 1-2 s at the default 2 mm spacing.
    """
    from scipy import ndimage

    s = float(spacing_mm)
    x = np.arange(-190.0, 190.0, s, dtype=np.float32)[:, None, None]
    y = np.arange(-135.0, 135.0, s, dtype=np.float32)[None, :, None]
    z = np.arange(-210.0, 190.0, s, dtype=np.float32)[None, None, :]
    shape = (x.shape[0], y.shape[1], z.shape[2])
    hu = np.full(shape, -1000.0, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)

    # Body: elliptic cylinder, narrowing to the neck above the shoulders.
    half_w = np.where(z > 110, 165 - 1.5 * np.clip(z - 110, 0, 60), 165.0) * np.ones_like(z)
    half_d = np.where(z > 130, 115 - 0.8 * np.clip(z - 130, 0, 50), 115.0) * np.ones_like(z)
    r_body = (x / half_w) ** 2 + (y / half_d) ** 2
    body = np.broadcast_to(r_body <= 1.0, shape)
    hu[body] = -90.0  # fat
    hu[np.broadcast_to(r_body <= 0.82, shape)] = 40.0  # muscle / soft tissue

    # Liver under the right hemidiaphragm and a gastric air bubble under the left.
    liver = ((x - 40) / 110) ** 2 + ((y + 5) / 90) ** 2 + ((z + 140) / 80) ** 2 <= 1.0
    hu[liver & body] = 60.0
    bubble = ((x + 75) / 35) ** 2 + ((y - 10) / 30) ** 2 + ((z + 118) / 14) ** 2 <= 1.0
    hu[np.broadcast_to(bubble, shape)] = -950.0

    # Lungs: ellipsoids cut by diaphragm domes (the right dome sits higher, as in most patients).
    lung = np.zeros(shape, dtype=bool)
    for side, cx in ((1, 75.0), (-1, -78.0)):
        ell = ((x - cx) / 68) ** 2 + ((y + 5) / 92) ** 2 + ((z - 5) / 135) ** 2 <= 1.0
        dome_top = -85.0 if side == 1 else -95.0
        dome = dome_top - 0.012 * (x - cx) ** 2 - 0.006 * (y + 10) ** 2
        lung |= ell & (z > dome)
    mediastinum = (np.abs(x - 4) < 22 + 0.15 * np.clip(40 - z, 0, None)) & (y > -60)
    lung &= ~mediastinum

    # Heart: left-leaning ellipsoid, carving the lungs; aorta arch and descending aorta.
    heart = ((x + 22) / 62) ** 2 + ((y - 30) / 52) ** 2 + ((z + 55) / 58) ** 2 <= 1.0
    heart = np.broadcast_to(heart, shape) & body
    lung &= ~heart
    arch = np.array([[5, 35, -10], [8, 25, 60], [0, 0, 75], [-20, -30, 60], [-22, -45, 0], [-20, -45, -120]], float)
    aorta = _tube(arch, 14.0, x, y, z, s)
    lung &= ~aorta
    trachea = _tube(np.array([[2, 10, 190], [2, 5, 60], [2, 0, 35]], float), 9.0, x, y, z, s)
    bronchi = _tube(np.array([[2, 0, 35], [30, -5, 10]], float), 6.0, x, y, z, s) | _tube(
        np.array([[2, 0, 35], [-32, -5, 5]], float), 5.5, x, y, z, s
    )

    # Lung parenchyma with branching-vessel texture denser toward the hila.
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 2.0 / s * 1.5)
    noise /= noise.std() + 1e-6
    hilum_d = np.minimum(
        np.sqrt((x - 40) ** 2 + (y + 5) ** 2 + (z - 15) ** 2), np.sqrt((x + 45) ** 2 + (y + 5) ** 2 + (z - 10) ** 2)
    )
    vessel = np.clip(noise - 1.2, 0, None) * (350.0 * np.exp(-hilum_d / 90.0) + 80.0)
    hu[lung] = (-860.0 + vessel)[lung]

    hu[heart] = 45.0
    hu[aorta] = 50.0
    hu[trachea | bronchi] = -1000.0

    # Bones: vertebral bodies with discs, ribs sloping down anteriorly, clavicles, scapulae, sternum.
    bone = np.zeros(shape, dtype=bool)
    vert = (x / 20) ** 2 + ((y + 78) / 17) ** 2 <= 1.0
    discs = np.mod(z + 200, 26.0) < 4.0
    bone |= np.broadcast_to(vert & ~discs & (z < 175), shape)
    bone |= np.broadcast_to((x / 9) ** 2 + ((y + 100) / 12) ** 2 <= 1.0, shape) & ~np.broadcast_to(discs, shape)
    for k in range(12):
        z_post = 160 - 21.0 * k  # posterior end height; ribs descend anteriorly
        width = (0.45, 0.62, 0.78, 0.88, 0.94, 0.97, 1.0, 1.0, 0.98, 0.95, 0.9, 0.85)[k]
        t_end = 0.82 * np.pi if k < 10 else 0.45 * np.pi  # floating ribs stop laterally
        t = np.linspace(0.0, t_end, 20)
        for side in (1, -1):
            pts = np.stack(
                [
                    side * (24 + 126 * width * np.sin(t)),
                    -88 * np.cos(t) * (0.7 + 0.3 * width),
                    z_post - 70 * (1 - np.cos(t)) / 2,
                ],
                axis=1,
            )
            bone |= _tube(pts, 4.5, x, y, z, s) & body
    for side in (1, -1):
        bone |= _tube(
            np.array([[side * 12, 80, 150], [side * 80, 60, 165], [side * 150, 20, 172]], float), 6.0, x, y, z, s
        )
        scap = ((x - side * 105) / 55) ** 2 + ((y + 95) / 8) ** 2 + ((z - 95) / 75) ** 2 <= 1.0
        bone |= np.broadcast_to(scap, shape) & body
    bone |= np.broadcast_to((x / 16) ** 2 + ((y - 100) / 7) ** 2 <= 1.0, shape) & (z > -40) & (z < 150) & body
    hu[bone] = 750.0
    lung &= ~bone

    labels[lung] = 0
    labels[heart] = HEART
    labels[aorta] = AORTA
    labels[trachea] = TRACHEA
    labels[bone] = BONE
    lobes = split_lung_into_lobes(lung, right_is_high_x=True, y_mm=y, z_mm=z)
    labels[lobes > 0] = lobes[lobes > 0]
    return hu, labels, (s, s, s)
