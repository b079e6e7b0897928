"""Tables as Markdown, CSV and JSON, and the report CSVs other leaderboards read (ReXrank's layout)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lit_medxchat.evaluation.chat_tables import Table


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}" if not value.is_integer() or abs(value) < 1 else f"{value:.0f}"
    return str(value)


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    return columns


def table_markdown(table: Table) -> str:
    """The table under its title, then one line per note (n, labeler, policy, ...)."""
    columns = _columns(table.rows)
    lines = [f"## {table.title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(column)) for column in columns) + " |" for row in table.rows]
    lines += [""] + [f"- {name}: {_cell(value)}" for name, value in table.notes.items()] + [""]
    return "\n".join(lines)


def write_tables(tables: Sequence[Table], out_dir: Path) -> list[Path]:
    """`tables.md` (all tables), one CSV per table and `tables.json` (rows and notes); returns the files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "tables.md", out_dir / "tables.json"]
    written[0].write_text("\n".join(table_markdown(table) for table in tables))
    written[1].write_text(json.dumps({t.name: {"title": t.title, "rows": t.rows, "notes": t.notes} for t in tables},
                                     indent=2, default=str, allow_nan=True))
    for table in tables:
        path = out_dir / f"{table.name}.csv"
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=_columns(table.rows))
            writer.writeheader()
            writer.writerows(table.rows)
        written.append(path)
    return written


def write_report_csvs(rows: Sequence[dict[str, str]], out_dir: Path) -> list[Path]:
    """Generated reports for external scorers: `reports.csv` (study_id, report, reference) and, in ReXrank's
    evaluation layout (CXR-Report-Metric's input), `rexrank/predicted_reports.csv` and `rexrank/gt_reports.csv`
    with columns study_id, report."""
    rexrank = out_dir / "rexrank"
    rexrank.mkdir(parents=True, exist_ok=True)
    # file -> (header, the row fields written under it)
    files = {out_dir / "reports.csv": (("study_id", "report", "reference"), ("study_id", "report", "reference")),
             rexrank / "predicted_reports.csv": (("study_id", "report"), ("study_id", "report")),
             rexrank / "gt_reports.csv": (("study_id", "report"), ("study_id", "reference"))}
    for path, (header, fields) in files.items():
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows([[row[field] for field in fields] for row in rows])
    return list(files)
