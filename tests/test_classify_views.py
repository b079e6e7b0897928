"""`lit-medxchat classify-views`: views of a folder of films in real-world file variants, the
probability threshold, unreadable files and bad input."""

from __future__ import annotations

import csv
import io

import pytest
import torch

from datamodules.sources.iu_xray import iu_view, read_views_csv, view_for
from datamodules.view_fill import CSV_COLUMNS
from lit_medxchat.cli import main as cli_main
from lit_medxchat.inference.classify_views import main
from lit_medxchat.models.classifiers import FindingsClassifier, tiny_findings_kwargs
from tests.prepare.view_fixtures import (
    random_view_classifier,
    render_film,
    save_variant,
    trained_view_classifier,
    write_film_tree,
)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.set_num_threads(1)
    return trained_view_classifier(tmp_path_factory)


def _rows(path):
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        return {row["filename"]: row for row in reader}


def test_known_views_in_every_file_variant(tmp_path, model, capsys):
    images = tmp_path / "images"
    truth = write_film_tree(images)
    # Decoded by content: a JPEG without a suffix, a broken PNG, a report that is left out.
    save_variant(render_film("LATERAL", 42, size=(300, 360)), images / "no-suffix", "jpeg")
    truth["no-suffix"] = "LATERAL"
    (images / "broken.png").write_bytes((images / "frontal" / "grey-0.png").read_bytes()[:300])
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "views.csv"
    assert cli_main(["classify-views", "--images", str(images), "--model", str(model), "--out", str(out),
                     "--no-progress"]) == 0
    printed = capsys.readouterr().out
    rows = _rows(out)
    assert set(rows) == {*truth, "broken.png"}
    for name, view in truth.items():
        assert (rows[name]["view"], rows[name]["error"]) == (view, ""), (name, rows[name])
        assert float(rows[name]["probability"]) >= 0.8
        assert abs(sum(float(rows[name][f"p_{v}"]) for v in ("PA", "AP", "LATERAL", "OTHER")) - 1) < 1e-3
    assert rows["broken.png"]["view"] == "" and rows["broken.png"]["error"] in ("truncated-image", "corrupt-image")
    assert f"classified {len(truth)} images" in printed and "PA 5" in printed and "LATERAL 6" in printed
    assert "skipped 1 unreadable files" in printed and "broken.png" in printed
    assert "left out 1 files" in printed
    # The CSV is a views CSV for `data prepare iu-xray --views-csv`.
    views = read_views_csv(out)
    assert iu_view(view_for(views, "rgba-7")) == "LATERAL"  # looked up by file name, as IU images are


def test_low_confidence_stays_unknown_and_is_counted(tmp_path):
    images = tmp_path / "images"
    truth = write_film_tree(images, count=4)
    out = tmp_path / "views.csv"
    stream = io.StringIO()
    model = random_view_classifier(tmp_path / "random")
    assert main(["--images", str(images), "--model", str(model), "--out", str(out), "--no-progress"], stream) == 0
    rows = _rows(out)
    assert {rows[name]["view"] for name in truth} == {"unknown"}
    assert all(float(rows[name]["probability"]) < 0.8 and rows[name]["predicted"] for name in truth)
    assert "unknown: 4 below probability 0.8" in stream.getvalue()
    # A view CSV reader takes "unknown" as no view (OTHER, the generic sentence).
    assert iu_view(view_for(read_views_csv(out), "grey-0")) == "OTHER"


def test_bad_input_names_the_problem(tmp_path, model, capsys):
    images = tmp_path / "images"
    write_film_tree(images, count=2)
    findings = tmp_path / "findings"
    FindingsClassifier(**tiny_findings_kwargs(32)).export_pretrained(findings)
    base = ["--out", str(tmp_path / "v.csv"), "--no-progress"]
    assert main(["--images", str(tmp_path / "missing"), "--model", str(model), *base]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["--images", str(images), "--model", str(findings), *base]) == 2
    assert "not a view classifier" in capsys.readouterr().err
    assert main(["--images", str(images), "--model", str(model), "--threshold", "0", *base]) == 2
    assert "(0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "v.csv").exists()
