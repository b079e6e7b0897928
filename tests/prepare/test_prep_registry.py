"""The data-source registry: a source declared outside `datamodules.sources` is prepared by the same
code path as the built-in ones and offered by `lit-medxchat data prepare`; a view predictor is any
object with `predict_files`, so data preparation loads no model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from prep_fixtures import cxr_pixels, read_shards

from datamodules.prepare import PrepareOptions, prepare_source
from datamodules.records import CXRRecord, SourceScan
from datamodules.sources.registry import DataSource, SourceOption, all_sources, get_source, register, unregister
from datamodules.view_fill import ViewPrediction
from lit_medxchat.cli import main as cli_main
from lit_medxchat.core.constants import CHEXPERT_LABELS, VIEW_SENTENCES
from lit_medxchat.inference.prepare_cli import build_parser

OPTIONS = PrepareOptions(image_size=32, samples_per_shard=4, workers=1, progress=False)
FILMS = {"film_a": "train", "film_b": "test"}


def scan_two_films(folder: str, view: str | None = None, progress: bool = True) -> SourceScan:
    """Two records, one per PNG the test wrote into `folder`; `view` is the source's own view, if any."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"--folder {root} is not a folder")
    scan = SourceScan(records=[], skipped={}, converted={}, info={"kind": "two-films", "films": len(FILMS)})
    labels = {name: None for name in CHEXPERT_LABELS} | {"No Finding": 1.0}
    for key, split in FILMS.items():
        scan.records.append(
            CXRRecord(
                dicom_id=key,
                study_id=f"study-{key}",
                subject_id=f"subject-{key}",
                split=split,
                view=view or "OTHER",
                view_position=view or "",
                image_path=str(root / f"{key}.png"),
                image_item=f"{key}.png",
                sections={"findings": "The lungs are clear.", "impression": "No acute process."},
                labels=labels,
                source="two-films",
                study_images=((key, view or "OTHER"),),
            )
        )
    return scan


TWO_FILMS = DataSource(
    name="two-films",
    help="two drawn films from one folder (a test source)",
    options=(
        SourceOption("--folder", "folder holding film_a.png and film_b.png", required=True),
        SourceOption("--view", "the view the source states for every film (optional)"),
    ),
    scan=scan_two_films,
    view_source_name="stated",
    compares_views=lambda arguments: arguments.get("view") is not None,
)


@pytest.fixture
def two_films(tmp_path):
    register(TWO_FILMS)
    folder = tmp_path / "films"
    folder.mkdir()
    for seed, key in enumerate(FILMS):
        Image.fromarray(cxr_pixels(seed, (40, 48))).save(folder / f"{key}.png")
    yield folder
    unregister(TWO_FILMS.name)


def _samples(out: Path) -> dict[str, dict[str, bytes]]:
    samples = {}
    for split in ("train", "validate", "test"):
        samples.update(read_shards(out / split))
    return samples


def test_a_registered_source_is_prepared_like_the_builtin_ones(two_films, tmp_path):
    assert list(all_sources())[-1] == "two-films" and {"mimic-cxr", "iu-xray"} <= set(all_sources())
    result = prepare_source("two-films", tmp_path / "out", {"folder": str(two_films)}, OPTIONS)
    assert {split: manifest["num_samples"] for split, manifest in result.manifests.items()} == {
        "train": 1,
        "validate": 0,
        "test": 1,
    }
    assert result.manifests["train"]["source"] == {"kind": "two-films", "films": 2}
    samples = _samples(tmp_path / "out")
    assert set(samples) == set(FILMS)
    for key, members in samples.items():
        assert set(members) == {"jpg", "txt", "json", "conv.json"}
        meta = json.loads(members["json"])
        assert (meta["dicom_id"], meta["split"], meta["source"]) == (key, FILMS[key], "two-films")
        assert members["txt"].decode().startswith(VIEW_SENTENCES["OTHER"] + " findings: The lungs are clear.")


def test_the_command_line_offers_a_registered_source(two_films, tmp_path, capsys):
    assert "two-films" in build_parser().format_help()
    out = tmp_path / "out"
    argv = ["data", "prepare", "two-films", "--folder", str(two_films), "--out", str(out)]
    assert cli_main([*argv, "--image-size", "32", "--workers", "1", "--no-progress"]) == 0
    assert "source two-films: films 2" in capsys.readouterr().out
    assert set(_samples(out)) == set(FILMS)
    # the source's own errors and required options reach the user as for the built-in sources
    assert cli_main(["data", "prepare", "two-films", "--folder", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "lit-medxchat data prepare two-films: --folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["data", "prepare", "two-films", "--out", str(out)])
    assert "--folder" in capsys.readouterr().err


class StatedViews:
    """A view predictor without a model: every file is a confident lateral."""

    threshold = 0.8
    identity = {"path": "/models/always-lateral", "sha256": "ab" * 32}

    def __init__(self) -> None:
        self.asked: list[str] = []

    def predict_files(self, paths, progress=True, total=None):
        probabilities = {"PA": 0.02, "AP": 0.02, "LATERAL": 0.95, "OTHER": 0.01}
        for path in paths:
            self.asked.append(Path(path).name)
            yield Path(path), ViewPrediction("LATERAL", "LATERAL", 0.95, probabilities)


def test_any_view_predictor_fills_views_and_a_stated_view_wins(two_films, tmp_path, capsys):
    predictor = StatedViews()
    prepare_source(TWO_FILMS, tmp_path / "filled", {"folder": str(two_films)}, OPTIONS, view_predictor=predictor)
    assert sorted(predictor.asked) == ["film_a.png", "film_b.png"]
    assert "view classifier (always-lateral, threshold 0.8): LATERAL 2" in capsys.readouterr().out
    for members in _samples(tmp_path / "filled").values():
        meta = json.loads(members["json"])
        assert (meta["view"], meta["view_source"], meta["view_classifier"]) == ("LATERAL", "classifier", "ab" * 8)
    # the source states a view and asks for a comparison: its view is kept, named by `view_source_name`
    stated = {"folder": str(two_films), "view": "PA"}
    result = prepare_source("two-films", tmp_path / "stated", stated, OPTIONS, view_predictor=StatedViews())
    assert result.manifests["test"]["source"]["view_classifier"]["agreement"] == 0.0
    for members in _samples(tmp_path / "stated").values():
        meta = json.loads(members["json"])
        assert (meta["view"], meta["view_source"], meta["classifier_view_predicted"]) == ("PA", "stated", "LATERAL")


def test_registry_errors_name_the_fix(two_films, tmp_path):
    with pytest.raises(ValueError, match="already registered"):
        register(DataSource("two-films", "another", (), scan_two_films))
    with pytest.raises(ValueError, match="already registered"):
        register(DataSource("mimic-cxr", "a second MIMIC", (), scan_two_films))
    with pytest.raises(ValueError, match="known sources: .*mimic-cxr"):
        get_source("no-such-source")
    with pytest.raises(ValueError, match=r"two-films: --folder is required"):
        prepare_source("two-films", tmp_path / "out", {}, OPTIONS)
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['root'\]"):
        prepare_source("two-films", tmp_path / "out", {"folder": str(two_films), "root": "x"}, OPTIONS)
    with pytest.raises(ValueError, match="long option"):
        SourceOption("-f", "short")


def test_preparing_data_imports_no_model_and_no_lightning():
    code = (
        "import sys\n"
        "from datamodules.prepare import prepare_source\n"
        "from datamodules.sources.registry import all_sources\n"
        "import datamodules.view_fill\n"
        "assert {'mimic-cxr', 'iu-xray'} <= set(all_sources())\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')\n"
        "             or m.startswith(('lit_medxchat.models', 'lit_medxchat.inference')))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
