"""The run report: `report.md` and a self-contained `report.html` (images inlined, opens offline).

The evidence table is the point: every figure stands beside its baseline, with the rule it must
satisfy, so a reader sees at once whether each model learned from the images.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from pathlib import Path

from lit_medxchat.demo.results import ChatTurn


@dataclass(frozen=True)
class Evidence:
    """One row: `value` against `baseline`, computed on the same items (higher is better unless `lower_is_better`).

    `beats_baseline` is the plain comparison; `meets_goal` also asks for the row's `margin` over the
    baseline and its absolute `threshold` (when set), the figures the product promises.
    """

    model: str
    metric: str
    value: float
    baseline: float
    baseline_name: str
    margin: float = 0.0
    threshold: float | None = None
    lower_is_better: bool = False
    needs_baseline: bool = True  # False: the baseline is shown for context, only `threshold` is the goal

    @property
    def beats_baseline(self) -> bool:
        if math.isnan(self.value) or math.isnan(self.baseline):
            return False
        return self.value < self.baseline if self.lower_is_better else self.value > self.baseline

    @property
    def meets_goal(self) -> bool:
        if not self.needs_baseline:
            if math.isnan(self.value) or self.threshold is None:
                return False
            return self.value <= self.threshold if self.lower_is_better else self.value >= self.threshold
        if not self.beats_baseline:
            return False
        if self.lower_is_better:
            by_margin = self.value <= self.baseline - self.margin
            return by_margin and (self.threshold is None or self.value <= self.threshold)
        by_margin = self.value >= self.baseline + self.margin
        return by_margin and (self.threshold is None or self.value >= self.threshold)

    @property
    def goal(self) -> str:
        better = "<" if self.lower_is_better else ">"
        parts = []
        if self.needs_baseline:
            sign = "-" if self.lower_is_better else "+"
            parts.append(f"{better} baseline" + (f" {sign} {self.margin:g}" if self.margin else ""))
        if self.threshold is not None:
            parts.append(f"{'<=' if self.lower_is_better else '>='} {self.threshold:g}")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, object]:
        """The row for `evidence.json` (NaN written as null)."""
        def number(value: float) -> float | None:
            return None if math.isnan(value) else float(value)

        return {
            "model": self.model,
            "metric": self.metric,
            "ours": number(self.value),
            "baseline": number(self.baseline),
            "baseline_kind": self.baseline_name,
            "goal": self.goal,
            "margin": self.margin,
            "threshold": self.threshold,
            "lower_is_better": self.lower_is_better,
            "beats": self.beats_baseline,
            "meets_goal": self.meets_goal,
        }


def write_evidence_json(rows: list[Evidence], path: Path, extra: dict[str, object] | None = None) -> Path:
    """Every row of the evidence table as JSON, so the figures can be read by a program."""
    import json

    payload = {**(extra or {}), "rows": [row.as_dict() for row in rows]}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


@dataclass(frozen=True)
class Figure:
    title: str
    path: Path
    caption: str = ""


def _fmt(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "undefined"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


def evidence_markdown(rows: list[Evidence]) -> str:
    lines = [
        "| model | metric | ours | baseline | baseline is | goal | beats baseline | meets goal |",
        "|---|---|---:|---:|---|---|---|---|",
    ]
    for row in rows:
        verdict = "yes" if row.beats_baseline else "**no**"
        goal = "yes" if row.meets_goal else "**no**"
        lines.append(
            f"| {row.model} | {row.metric} | {_fmt(row.value)} | {_fmt(row.baseline)} | {row.baseline_name} | "
            f"{row.goal} | {verdict} | {goal} |"
        )
    return "\n".join(lines)


def evidence_text(rows: list[Evidence]) -> str:
    """A plain-text table for the terminal."""
    header = ("model", "metric", "ours", "baseline", "baseline is", "goal", "beats", "goal met")
    body = [
        (r.model, r.metric, _fmt(r.value), _fmt(r.baseline), r.baseline_name, r.goal,
         "yes" if r.beats_baseline else "NO", "yes" if r.meets_goal else "NO")
        for r in rows
    ]
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) for line in [header, *body]]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def write_report(
    out_dir: Path,
    *,
    title: str,
    summary: list[str],
    evidence: list[Evidence],
    figures: list[Figure],
    transcript: list[ChatTurn],
    timings: dict[str, float],
) -> tuple[Path, Path]:
    """Write `report.md` (figures linked) and `report.html` (figures inlined as base64 PNG)."""
    md = [f"# {title}", "", *summary, "", "## Evidence (held-out test split)", "", evidence_markdown(evidence), ""]
    md += ["## Figures", ""]
    for figure in figures:
        md += [
            f"### {figure.title}",
            "",
            f"![{figure.title}]({figure.path.relative_to(out_dir)})",
            "",
            figure.caption,
            "",
        ]
    md += ["## Chat examples", ""]
    for turn in transcript:
        md.append(f"**{turn.role}:** {turn.content}")
        if turn.image:
            md.append(f"\n![generated]({turn.image})")
        if turn.reference:
            md.append(f"\n*ground truth:* {turn.reference}")
        md.append("")
    md += ["## Stage timings", "", "| stage | seconds |", "|---|---:|"]
    md += [f"| {name} | {seconds:.0f} |" for name, seconds in timings.items()]
    md_path = out_dir / "report.md"
    md_path.write_text("\n".join(md) + "\n")

    def inline(path: Path) -> str:
        mime = "image/jpeg" if path.suffix.lower() in (".jpg", ".jpeg") else "image/png"
        return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()

    rows = "".join(
        f"<tr class='{'ok' if r.meets_goal else 'bad'}'>"
        f"<td>{html.escape(r.model)}</td><td>{html.escape(r.metric)}</td>"
        f"<td>{_fmt(r.value)}</td><td>{_fmt(r.baseline)}</td><td>{html.escape(r.baseline_name)}</td>"
        f"<td>{html.escape(r.goal)}</td><td>{'yes' if r.beats_baseline else 'no'}</td>"
        f"<td>{'yes' if r.meets_goal else 'no'}</td></tr>"
        for r in evidence
    )
    figs = "".join(
        f"<h3>{html.escape(f.title)}</h3><img src='{inline(f.path)}' alt='{html.escape(f.title)}'>"
        f"<p>{html.escape(f.caption)}</p>"
        for f in figures
        if f.path.exists()
    )
    chat = ""
    for turn in transcript:
        chat += f"<p><b>{html.escape(turn.role)}:</b> {html.escape(turn.content)}</p>"
        if turn.image and (out_dir / turn.image).exists():
            chat += f"<img class='cxr' src='{inline(out_dir / turn.image)}' alt='generated CXR'>"
        if turn.reference:
            chat += f"<p class='ref'><i>ground truth:</i> {html.escape(turn.reference)}</p>"
    timing_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.0f}</td></tr>" for k, v in timings.items())
    page = f"""<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>
body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px}} tr.ok td:last-child{{color:#070}}
tr.bad td:last-child{{color:#b00;font-weight:bold}}
img{{max-width:100%}} img.cxr{{width:256px}} .ref{{color:#555}}</style></head><body>
<h1>{html.escape(title)}</h1>{"".join(f"<p>{html.escape(s)}</p>" for s in summary)}
<h2>Evidence (held-out test split)</h2><table><tr><th>model</th><th>metric</th><th>ours</th><th>baseline</th>
<th>baseline is</th><th>goal</th><th>beats baseline</th><th>meets goal</th></tr>{rows}</table>
<h2>Figures</h2>{figs}<h2>Chat examples</h2>{chat}
<h2>Stage timings</h2><table><tr><th>stage</th><th>seconds</th></tr>{timing_rows}</table></body></html>"""
    html_path = out_dir / "report.html"
    html_path.write_text(page)
    return md_path, html_path
