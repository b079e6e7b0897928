"""Small source trees written by the tests: MIMIC-CXR-JPG layout and Open-i XML, with bad items on demand."""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from lit_medxchat.core.constants import CHEXPERT_LABELS

METADATA_COLUMNS = (
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)

REPORTS = (
    (
        "There is a small left pleural effusion. The right lung is clear. No pneumothorax.",
        "Small left pleural effusion.",
    ),
    ("The lungs are clear. Heart size is normal. No pleural effusion or pneumothorax.", "No acute process."),
    ("Right lower lobe opacity may reflect pneumonia. Mild pulmonary edema.", "Pneumonia cannot be excluded."),
)


def mimic_report(findings: str | None, impression: str | None) -> str:
    """A report in the MIMIC layout: one leading space per line, headed sections, wrapped lines."""
    lines = [" FINAL REPORT", " EXAMINATION:  CHEST (PA AND LAT)", " ", " INDICATION:  ___ with cough.", " "]
    if findings is not None:
        lines += [" FINDINGS:", " ", *(" " + part for part in _wrap(findings)), " "]
    if impression is not None:
        lines += [" IMPRESSION:", " ", *(" " + part for part in _wrap(impression))]
    return "\n".join(lines) + "\n"


def _wrap(text: str, width: int = 70) -> list[str]:
    lines, current = [], ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    return [*lines, current]


def write_gz_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns))
    writer.writeheader()
    for row in rows:
        writer.writerow({name: row.get(name, "") for name in columns})
    # mtime=0: the tree is byte-identical whenever it is rebuilt
    with gzip.GzipFile(path, "wb", mtime=0) as handle:
        handle.write(buffer.getvalue().encode())


def cxr_pixels(seed: int, size: tuple[int, int]) -> np.ndarray:
    """A grey (height, width) uint8 image with some structure (JPEG sizes vary like real images)."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    base = 120 + 60 * np.sin(x / (7 + seed % 5)) * np.cos(y / 11)
    return np.clip(base + rng.normal(0, 12, (height, width)), 0, 255).astype(np.uint8)


def dicom_id(subject: int, study: int, index: int) -> str:
    return f"{subject:08x}-{study:08x}-{index:08x}-0000abcd-1234ef00"


@dataclass
class MimicTree:
    root: Path
    images: dict[str, str] = field(default_factory=dict)  # dicom_id -> path relative to root
    metadata: list[dict] = field(default_factory=list)
    splits: list[dict] = field(default_factory=list)
    labels: list[dict] = field(default_factory=list)

    def write_tables(self) -> None:
        write_gz_csv(self.root / "mimic-cxr-2.0.0-metadata.csv.gz", METADATA_COLUMNS, self.metadata)
        write_gz_csv(
            self.root / "mimic-cxr-2.0.0-split.csv.gz", ("dicom_id", "study_id", "subject_id", "split"), self.splits
        )
        write_gz_csv(
            self.root / "mimic-cxr-2.0.0-chexpert.csv.gz", ("subject_id", "study_id", *CHEXPERT_LABELS), self.labels
        )

    def study_dir(self, subject: int, study: int) -> Path:
        return self.root / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}"


def make_mimic_tree(
    root: Path, num_subjects: int = 3, studies_per_subject: int = 2, size: tuple[int, int] = (120, 150)
) -> MimicTree:
    """A clean MIMIC-CXR-JPG tree: each study has a PA and a LATERAL image and a report."""
    tree = MimicTree(root)
    splits = ("train", "validate", "test")
    for s in range(num_subjects):
        subject = 10000000 + 17 * s
        split = splits[s % 3] if num_subjects >= 3 else "train"
        for t in range(studies_per_subject):
            study = 50000000 + 100 * s + t
            findings, impression = REPORTS[(s + t) % len(REPORTS)]
            directory = tree.study_dir(subject, study)
            directory.mkdir(parents=True, exist_ok=True)
            (directory.parent / f"s{study}.txt").write_text(mimic_report(findings, impression))
            for index, view in enumerate(("PA", "LATERAL")):
                key = dicom_id(subject, study, index)
                Image.fromarray(cxr_pixels(s * 10 + t * 2 + index, size)).save(directory / f"{key}.jpg", quality=95)
                tree.images[key] = (directory / f"{key}.jpg").relative_to(root).as_posix()
                tree.metadata.append(
                    dict(
                        dicom_id=key,
                        subject_id=subject,
                        study_id=study,
                        ViewPosition=view,
                        Rows=size[1],
                        Columns=size[0],
                    )
                )
                tree.splits.append(dict(dicom_id=key, study_id=study, subject_id=subject, split=split))
            labels = {name: "" for name in CHEXPERT_LABELS}
            labels["Pleural Effusion"] = "1.0" if (s + t) % 3 == 0 else "0.0"
            tree.labels.append(dict(subject_id=subject, study_id=study, **labels))
    tree.write_tables()
    return tree


OPEN_I_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="{uid}"/>
   <pmcId id="{number}"/>
   <docSource>CXR</docSource>
   <IUXRId id="{number}"/>
   <licenseType>open-access</licenseType>
   <articleDate>2013-08-01</articleDate>
   <articleType>XR</articleType>
   <publisher>Indiana University</publisher>
   <title>Indiana University Chest X-ray Collection</title>
   <specialty>pulmonary diseases</specialty>
   <subset>CXR</subset>
   <MedlineCitation Owner="Indiana University" Status="supplied">
      <Article PubModel="Electronic">
         <Journal><JournalIssue><PubDate><Year>2013</Year><Month>08</Month><Day>01</Day></PubDate></JournalIssue></Journal>
         <ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle>
         <Abstract>
            <AbstractText Label="COMPARISON">{comparison}</AbstractText>
            <AbstractText Label="INDICATION">XXXX-year-old with cough.</AbstractText>
            {findings}
            {impression}
         </Abstract>
         <Affiliation>Indiana University</Affiliation>
         <Language>eng</Language>
         <PublicationTypeList><PublicationType>Radiology Report</PublicationType></PublicationTypeList>
      </Article>
   </MedlineCitation>
   <MeSH>
{mesh}
   </MeSH>
{images}
</eCitation>
"""

PARENT_IMAGE = """   <parentImage id="{image_id}">
      <figureId>F{figure}</figureId>
      <caption>Xray Chest PA and Lateral</caption>
      <panel type="single">
         <url>/hadoop/storage/radiology/extract/{image_id}.jpg</url>
         <imgModality>7</imgModality>
      </panel>
   </parentImage>"""


def open_i_xml(number: int, findings: str | None, impression: str | None, image_ids: list[str], mesh: list[str]) -> str:
    """One Open-i report in the collection's XML format (our own report text)."""

    def abstract(label: str, text: str | None) -> str:
        return (
            f'<AbstractText Label="{label}"/>'
            if text is None
            else f'<AbstractText Label="{label}">{text}</AbstractText>'
        )

    return OPEN_I_XML.format(
        uid=f"CXR{number}",
        number=number,
        comparison="None.",
        findings=abstract("FINDINGS", findings),
        impression=abstract("IMPRESSION", impression),
        mesh="\n".join(
            f"      <{'major' if i == 0 else 'minor'}>{term}</{'major' if i == 0 else 'minor'}>"
            for i, term in enumerate(mesh)
        ),
        images="\n".join(PARENT_IMAGE.format(image_id=image_id, figure=i + 1) for i, image_id in enumerate(image_ids)),
    )


def make_iu_tree(root: Path, num_reports: int = 6, size: tuple[int, int] = (110, 130)) -> tuple[Path, Path, list[str]]:
    """`root/ecgen-radiology/N.xml` and `root/png/*.png`; returns (reports dir, images dir, image ids)."""
    reports, images = root / "ecgen-radiology", root / "png"
    reports.mkdir(parents=True)
    images.mkdir(parents=True)
    ids = []
    for number in range(1, num_reports + 1):
        findings, impression = REPORTS[number % len(REPORTS)]
        image_ids = [f"CXR{number}_1_IM-{number:04d}-1001", f"CXR{number}_1_IM-{number:04d}-2001"]
        (reports / f"{number}.xml").write_text(open_i_xml(number, findings, impression, image_ids, ["normal"]))
        for index, image_id in enumerate(image_ids):
            Image.fromarray(cxr_pixels(number * 3 + index, size)).save(images / f"{image_id}.png")
            ids.append(image_id)
    return reports, images, ids


def read_shards(split_dir: Path) -> dict[str, dict[str, bytes]]:
    """Every sample of every shard listed in the split's manifest: key -> {extension: bytes}."""
    import json
    import tarfile

    manifest = json.loads((split_dir / "manifest.json").read_text())
    samples: dict[str, dict[str, bytes]] = {}
    for shard in manifest["shards"]:
        with tarfile.open(split_dir / shard["name"]) as archive:
            for member in archive.getmembers():
                key, extension = member.name.split(".", 1)
                samples.setdefault(key, {})[extension] = archive.extractfile(member).read()
    return samples


def add_bad_items(tree: MimicTree) -> dict[str, str]:
    """Damage a clean tree in every way the issue lists; returns {item or dicom_id: expected outcome}."""
    root = tree.root
    keys = sorted(tree.images)
    expected: dict[str, str] = {}

    def path_of(key: str) -> Path:
        return root / tree.images[key]

    path_of(keys[0]).write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    expected[tree.images[keys[0]]] = "corrupt-image"
    data = path_of(keys[1]).read_bytes()
    path_of(keys[1]).write_bytes(data[: len(data) // 2])
    expected[tree.images[keys[1]]] = "truncated-image"
    path_of(keys[2]).write_bytes(b"")
    expected[tree.images[keys[2]]] = "corrupt-image"
    Image.fromarray(cxr_pixels(7, (90, 120))).save(path_of(keys[3]), format="PNG")
    expected[keys[3]] = "png-under-jpg-name"
    Image.new("RGBA", (90, 120), (50, 60, 70, 200)).save(path_of(keys[4]), format="PNG")
    expected[keys[4]] = "alpha-dropped"
    deep = (np.arange(90 * 120).reshape(120, 90) * 7 % 60000).astype(np.uint16)
    Image.fromarray(deep).save(path_of(keys[5]), format="PNG")
    expected[keys[5]] = "16-bit-to-8-bit"
    # ViewPosition empty and unknown -> OTHER, kept
    tree.metadata[6]["ViewPosition"] = ""
    expected[tree.metadata[6]["dicom_id"]] = "view-empty"
    tree.metadata[7]["ViewPosition"] = "RAO"
    expected[tree.metadata[7]["dicom_id"]] = "view-other"
    # a duplicated metadata row and a row whose image is missing
    tree.metadata.append(dict(tree.metadata[8]))
    expected[f"mimic-cxr-2.0.0-metadata.csv.gz:row {len(tree.metadata)}"] = "duplicate-id"
    ghost = dict(tree.metadata[9], dicom_id="ffffffff-00000000-00000000-00000000-00000000")
    tree.metadata.append(ghost)
    tree.splits.append(dict(tree.splits[9], dicom_id=ghost["dicom_id"]))
    ghost_item = tree.images[tree.metadata[9]["dicom_id"]].rsplit("/", 1)[0] + f"/{ghost['dicom_id']}.jpg"
    expected[ghost_item] = "missing-image"
    # an image on disk that no table lists
    stray = path_of(keys[9]).parent / "eeeeeeee-00000000-00000000-00000000-00000000.jpg"
    Image.fromarray(cxr_pixels(8, (60, 60))).save(stray)
    expected[stray.relative_to(root).as_posix()] = "not-in-metadata"
    # a study without a report, a study whose report has no usable section, a study without a label row
    extra_subject = 19000000
    for study, report in (
        (59000001, None),
        (59000002, " FINAL REPORT\n INDICATION:  ___ cough.\n"),
        (59000003, "label"),
    ):
        directory = tree.study_dir(extra_subject, study)
        directory.mkdir(parents=True)
        key = f"{study:08x}-00000000-00000000-00000000-00000000"
        Image.fromarray(cxr_pixels(study % 97, (100, 100))).save(directory / f"{key}.jpg")
        tree.images[key] = (directory / f"{key}.jpg").relative_to(root).as_posix()
        tree.metadata.append(dict(dicom_id=key, subject_id=extra_subject, study_id=study, ViewPosition="AP"))
        tree.splits.append(dict(dicom_id=key, study_id=study, subject_id=extra_subject, split="train"))
        if report == "label":
            text = mimic_report("Moderate cardiomegaly. No pleural effusion.", "Cardiomegaly.")
            (directory.parent / f"s{study}.txt").write_text(text)
            expected[key] = "labels-from-labeler"
        elif report is None:
            expected[tree.images[key]] = "no-report"
        else:
            (directory.parent / f"s{study}.txt").write_text(report)
            expected[tree.images[key]] = "no-usable-section"
    tree.write_tables()
    return expected
