"""Support devices as radiopaque 3-D polylines placed from anatomical landmarks."""

from __future__ import annotations

import numpy as np

from lit_medxchat.synth.anatomy import HEART, MU_WATER_PER_MM, TRACHEA, Anatomy
from lit_medxchat.synth.findings import DEVICES, Device


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
