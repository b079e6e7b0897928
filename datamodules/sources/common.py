"""Helpers every source adapter shares: CSV tables read by column name, labels from the labeler."""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from pathlib import Path

from lit_medxchat.core.constants import CHEXPERT_LABELS

VALID_LABEL_VALUES = (1.0, 0.0, -1.0)


def read_table(path: str | Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield `(row number, row)` of a `.csv` or `.csv.gz` file, rows keyed by column name.

    Row numbers count data rows from 1 (the header is row 0), as shown in skipped lists.
    Raises ValueError naming the file and the missing columns when `required` ones are absent.
    """
    path = Path(path)
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
    with raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
        reader = csv.DictReader(text)
        columns = [name.strip() for name in (reader.fieldnames or [])]
        missing = [name for name in required if name not in columns]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; found {columns}. Is this the right file?")
        reader.fieldnames = columns
        for number, row in enumerate(reader, start=1):
            yield number, {key: (value or "").strip() for key, value in row.items() if key is not None}


def normalise_id(value: str) -> str:
    """`"10000032.0"` (a CSV written through a float column) -> `"10000032"`; other ids unchanged."""
    value = value.strip()
    if value.endswith(".0") and value[:-2].isdigit():
        return value[:-2]
    return value


def parse_label(value: str) -> float | None:
    """A CheXpert CSV cell: `1.0`/`0.0`/`-1.0` -> float, blank -> None; raises ValueError otherwise."""
    if value == "":
        return None
    number = float(value)
    if number not in VALID_LABEL_VALUES:
        raise ValueError(f"label value {value!r} is not one of 1.0, 0.0, -1.0 or blank")
    return number


def labels_from_report(text: str) -> dict[str, float | None]:
    """The 14 CheXpert labels of a report from our rule labeler (for sources without label files)."""
    from lit_medxchat.labeler import label_report

    labels = label_report(text)
    missing = [name for name in CHEXPERT_LABELS if name not in labels]
    if missing:
        raise ValueError(f"lit_medxchat.labeler.label_report returned no value for {missing}")
    return {name: labels[name] for name in CHEXPERT_LABELS}
