"""`prepare mimic-cxr` vs a bare decode-resize-encode loop over the same images, and 2 workers vs 1.

The bare loop is the practical limit of this step: PIL reduced-size JPEG decode, Lanczos resize
to the longest side, JPEG q95 encode, nothing else (no CSVs, reports, labels, dialogues, tars).
Both run in the same process, one after the other, best of `--repeats`, so the ratios hold on a
busy machine even when the absolute times swing.

    python benchmarks/bench_prepare.py --images 96 --repeats 3
"""

from __future__ import annotations

import argparse
import io
import resource
import shutil
import tempfile
import time
from pathlib import Path

from PIL import Image


def _make_source(root: Path, num_images: int, size: tuple[int, int]) -> None:
    """A MIMIC-CXR-JPG tree of `num_images` full-size grey JPEGs (2 per study) with reports and CSVs."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "prepare"))
    from prep_fixtures import MimicTree, cxr_pixels, mimic_report

    tree = MimicTree(root)
    base = cxr_pixels(0, size)
    for index in range(num_images):
        subject, study = 10000000 + index // 2, 50000000 + index // 2
        directory = tree.study_dir(subject, study)
        directory.mkdir(parents=True, exist_ok=True)
        (directory.parent / f"s{study}.txt").write_text(
            mimic_report("Small left effusion. No pneumothorax.", "Effusion.")
        )
        key = f"{index:08x}-00000000-00000000-00000000-00000000"
        Image.fromarray(base).rotate(index % 7).save(directory / f"{key}.jpg", quality=95)
        tree.metadata.append(
            dict(dicom_id=key, subject_id=subject, study_id=study, ViewPosition=("PA", "LATERAL")[index % 2])
        )
        tree.splits.append(dict(dicom_id=key, study_id=study, subject_id=subject, split="train"))
        tree.labels.append(dict(subject_id=subject, study_id=study, **{"Pleural Effusion": "1.0"}))
    tree.write_tables()


def bare_loop(paths: list[Path], image_size: int) -> None:
    """The baseline: only decode (reduced size), resize and encode."""
    for path in paths:
        with Image.open(path) as image:
            scale = image_size / max(image.size)
            size = (round(image.width * scale), round(image.height * scale))
            image.draft("L", size)
            image = image.convert("L").resize(size, Image.Resampling.LANCZOS)
            image.save(io.BytesIO(), format="JPEG", quality=95)


def bare_loop_two_processes(paths: list[Path], image_size: int) -> None:
    """The baseline split over 2 processes: what this machine's cores allow right now."""
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.starmap(bare_loop, [(paths[0::2], image_size), (paths[1::2], image_size)])


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its reaped children (the decoding workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(function) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), _cpu_seconds()
    function()
    return time.perf_counter() - wall, _cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--width", type=int, default=2544)
    parser.add_argument("--height", type=int, default=3056)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass  # the data path uses no torch; the setting only matters where torch is installed
    from datamodules.prepare import PrepareOptions, prepare_mimic_cxr

    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        root = Path(tmp) / "src"
        _make_source(root, args.images, (args.width, args.height))
        paths = sorted((root / "files").rglob("*.jpg"))

        def run(workers: int) -> None:
            out = Path(tmp) / "out"
            shutil.rmtree(out, ignore_errors=True)
            # the CLI default shard size: one fsync per 1000 images, as in real runs
            options = PrepareOptions(
                image_size=args.image_size, samples_per_shard=1000, workers=workers, progress=False
            )
            with open("/dev/null", "w") as quiet:
                import contextlib

                with contextlib.redirect_stdout(quiet):
                    prepare_mimic_cxr(root, out, options=options)

        run(1)  # warm-up: lazy imports (labeler, dialogues) and the page cache, a one-off cost of any real run
        # the three take turns within each repeat, so a change in the machine's load hits all of them
        runs: dict[str, list[tuple[float, float]]] = {"bare": [], "bare2": [], "one": [], "two": []}
        for _ in range(args.repeats):
            runs["bare"].append(_timed(lambda: bare_loop(paths, args.image_size)))
            runs["bare2"].append(_timed(lambda: bare_loop_two_processes(paths, args.image_size)))
            runs["one"].append(_timed(lambda: run(1)))
            runs["two"].append(_timed(lambda: run(2)))
        bare, bare2, one, two = (min(runs[name]) for name in ("bare", "bare2", "one", "two"))
    n = args.images
    print(
        f"images: {n} x {args.width}x{args.height} grey JPEG -> longest side {args.image_size}, best of {args.repeats}"
    )
    print(f"{'run':<28}{'wall s':>8}{'CPU s':>8}{'images/s':>10}")
    for name, (wall, cpu) in (
        ("bare decode/resize/encode", bare),
        ("bare loop, 2 processes", bare2),
        ("prepare, 1 worker", one),
        ("prepare, 2 workers", two),
    ):
        print(f"{name:<28}{wall:>8.2f}{cpu:>8.2f}{n / wall:>10.1f}")
    print(
        f"prepare (1 worker) / bare loop, per core: {bare[0] / one[0]:.2f}x wall, "
        f"{bare[1] / one[1]:.2f}x CPU (>= 0.85x)"
    )
    print(f"prepare 2 workers / 1 worker: {one[0] / two[0]:.2f}x wall (>= 1.7x)")
    print(f"machine check, bare loop 2 processes / 1: {bare[0] / bare2[0]:.2f}x wall (the most 2 workers can get now)")


if __name__ == "__main__":
    main()
