"""Pictures for the run report: training curves and a contact sheet of real vs generated CXRs."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np


def read_metrics_csv(path: Path) -> dict[str, tuple[list[float], list[float]]]:
    """Lightning CSVLogger `metrics.csv` -> {metric: (steps, values)}, empty cells dropped."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            step = row.get("step")
            if step in (None, ""):
                continue
            for name, value in row.items():
                if name in ("step", "epoch") or value in (None, ""):
                    continue
                steps, values = series.setdefault(name, ([], []))
                steps.append(float(step))
                values.append(float(value))
    return series


def plot_training_curves(runs: dict[str, Path], out_path: Path, metric_prefix: str = "train/loss") -> Path | None:
    """One panel per run: the training loss (raw and smoothed) and the validation loss when logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = {name: path for name, path in runs.items() if path.exists()}
    if not found:
        return None
    fig, axes = plt.subplots(1, len(found), figsize=(4.2 * len(found), 3.2), squeeze=False)
    for ax, (name, path) in zip(axes[0], found.items(), strict=True):
        series = read_metrics_csv(path)
        for metric, (steps, values) in sorted(series.items()):
            if not metric.startswith(metric_prefix) and not metric.startswith("val/loss"):
                continue
            if metric.endswith("_epoch"):
                continue
            style = "o-" if metric.startswith("val/") else "-"
            alpha = 1.0 if metric.startswith("val/") else 0.35
            ax.plot(steps, values, style, alpha=alpha, label=metric, markersize=3)
            if not metric.startswith("val/") and len(values) >= 8:
                window = max(3, len(values) // 10)
                smooth = np.convolve(values, np.ones(window) / window, mode="valid")
                ax.plot(steps[window - 1 :], smooth, "-", label=f"{metric} (mean of {window})")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend(fontsize=7)
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def contact_sheet(
    rows: list[tuple[str, list[np.ndarray], list[str]]], out_path: Path, tile_px: int = 160, wrap: int = 32
) -> Path:
    """A grid: one row per group (e.g. "real" / "generated"), images as HxW or HxWx3 arrays in [0, 1]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(len(images) for _, images, _ in rows)
    fig, axes = plt.subplots(
        len(rows), columns, figsize=(columns * tile_px / 80, len(rows) * (tile_px / 80 + 0.7)), squeeze=False
    )
    for r, (label, images, captions) in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(images):
                continue
            image = np.clip(images[c], 0.0, 1.0)
            ax.imshow(image if image.ndim == 3 else image, cmap="gray", vmin=0.0, vmax=1.0)
            caption = captions[c] if c < len(captions) else ""
            wrapped = "\n".join(caption[i : i + wrap] for i in range(0, min(len(caption), wrap * 3), wrap))
            ax.set_title(f"{label}\n{wrapped}" if c == 0 else wrapped, fontsize=6)
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def finite_or_nan(value: float | None) -> float:
    return float("nan") if value is None or (isinstance(value, float) and not math.isfinite(value)) else float(value)
