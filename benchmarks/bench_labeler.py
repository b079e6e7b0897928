"""Labeler throughput: reports per second per core, ours vs a plain-alternation baseline.

Both labelers use the same lexicon and rules; they differ only in how phrase lists become
regexes (ours: a character trie; baseline: one `a|b|c` alternation, longest phrase first).
The script first checks that both give identical labels on the whole corpus, then times them
side by side in one process with one thread, counting CPU time (so other load on the machine
does not count). The corpus is generated from report sentences in MIMIC-CXR and IU X-ray style
(coordinated negations, `XXXX` de-identification marks, numbered impressions; seeded).

    python benchmarks/bench_labeler.py [--reports 2000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import random
import re
import time
from collections.abc import Callable, Iterable

import torch

from lit_medxchat.labeler import RuleLabeler, split_sentences

FINDINGS = (
    "There is a {size} {side} pleural effusion.",
    "{Size} {side} pleural effusion with adjacent atelectasis.",
    "{Side} {lobe} lobe consolidation concerning for pneumonia.",
    "Patchy opacity in the {side} {lobe} lobe may reflect atelectasis or pneumonia.",
    "{Size} {side} apical pneumothorax.",
    "Moderate pulmonary edema with vascular congestion.",
    "Mild interstitial edema has improved since the prior study.",
    "The heart is moderately enlarged.",
    "Heart size is at the upper limits of normal.",
    "A 1.{n} cm nodule projects over the {side} {lobe} lobe.",
    "Endotracheal tube terminates {n} cm above the carina.",
    "Right internal jugular central venous catheter tip in the mid SVC.",
    "Nasogastric tube courses below the diaphragm and out of view.",
    "Left chest wall pacemaker with leads in the right atrium and ventricle.",
    "Healed {side} rib fractures are again seen.",
    "Bibasilar atelectasis, likely.",
    "Pneumonia cannot be excluded.",
    "Calcified granuloma in the {side} upper lobe.",
    "{Side} pleural thickening is unchanged.",
    "XXXX opacities in the {side} {lobe} lobe, atelectasis or scarring.",
    "Mild pulmonary vascular congestion without frank edema.",
    "Findings consistent with CHF.",
)
NORMALS = (
    "The lungs are clear.",
    "No pleural effusion or pneumothorax.",
    "No focal consolidation, pleural effusion, pneumothorax, or pulmonary edema.",
    "Heart size is normal.",
    "The cardiomediastinal silhouette is within normal limits.",
    "The mediastinal and hilar contours are unremarkable.",
    "No acute osseous abnormality.",
    "There is no evidence of pneumonia.",
    "Previously seen left effusion has resolved.",
    "No change in the appearance of the chest.",
    "No focal consolidation, suspicious pulmonary opacity, large pleural effusion, or pneumothorax.",
    "No XXXX of pneumothorax.",
    "There are no XXXX XXXX or effusions.",
    "No typical findings of pulmonary edema.",
    "Heart size and mediastinal contours are within normal limits.",
)
IMPRESSIONS = (
    "No acute cardiopulmonary process.",
    "{Size} {side} pleural effusion.",
    "{Side} {lobe} lobe pneumonia.",
    "Mild pulmonary edema.",
    "Atelectasis versus consolidation at the {side} base.",
    "Support devices in standard position.",
    "1. No acute cardiopulmonary abnormality. 2. Stable XXXX sternotomy.",
    "1. Cardiomegaly without edema.\n2. Small {side} effusion cannot be excluded.",
)


def make_reports(count: int, seed: int = 0) -> list[str]:
    """Reports with a findings and an impression section, 5-10 sentences (~350-700 characters)."""
    rng = random.Random(seed)
    reports = []
    for _ in range(count):
        sentences = ["PA and lateral views of the chest were obtained."]
        sentences += rng.sample(FINDINGS, rng.randint(0, 4)) + rng.sample(NORMALS, rng.randint(2, 5))
        rng.shuffle(sentences)
        impression = rng.sample(IMPRESSIONS, rng.randint(1, 2))
        text = "FINDINGS:\n" + " ".join(sentences) + "\n\nIMPRESSION:\n" + " ".join(impression)
        words = {
            "size": rng.choice(("small", "moderate", "large", "trace")),
            "side": rng.choice(("right", "left")),
            "lobe": rng.choice(("upper", "lower")),
            "n": rng.randint(2, 9),
        }
        words |= {key.capitalize(): str(value).capitalize() for key, value in words.items() if isinstance(value, str)}
        reports.append(text.format(**words))
    return reports


def plain_alternation(phrases: Iterable[str]) -> re.Pattern[str]:
    """The baseline: one alternation of every phrase, longest first, same word boundaries."""
    ordered = sorted(set(phrases), key=len, reverse=True)
    return re.compile(r"(?<![\w-])(?:" + "|".join(map(re.escape, ordered)) + r")(?![\w-])")


def reports_per_second(labelers: dict[str, Callable[[str], object]], reports: list[str], repeats: int) -> dict:
    """Best of `repeats` passes each, in reports per CPU-second of this process (one thread = one
    core); the labelers take turns within each repeat so that load changes hit all of them alike."""
    best = dict.fromkeys(labelers, float("inf"))
    for _ in range(repeats):
        for name, label in labelers.items():
            start = time.process_time()
            for text in reports:
                label(text)
            best[name] = min(best[name], time.process_time() - start)
    return {name: len(reports) / seconds for name, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)

    reports = make_reports(args.reports)
    ours, baseline = RuleLabeler(), RuleLabeler(compile_phrases=plain_alternation)
    mismatches = sum(ours.label(text) != baseline.label(text) for text in reports)
    if mismatches:
        raise SystemExit(f"ours and the baseline disagree on {mismatches} of {len(reports)} reports")
    mean_chars = sum(map(len, reports)) / len(reports)
    positives = sum(v == 1.0 for text in reports for k, v in ours.label(text).items() if k != "No Finding")

    rates = reports_per_second(
        {"floor": split_sentences, "ours": ours.label, "baseline": baseline.label}, reports, args.repeats
    )
    floor, ours_rate, baseline_rate = rates["floor"], rates["ours"], rates["baseline"]
    print(f"corpus: {len(reports)} reports, {mean_chars:.0f} characters on average, {positives} positive labels")
    print("labels identical to the baseline on every report: yes")
    print(f"sentence split only (floor):    {floor:10.0f} reports/s per core")
    print(f"ours (trie regexes):            {ours_rate:10.0f} reports/s per core")
    print(f"baseline (plain alternation):   {baseline_rate:10.0f} reports/s per core")
    print(f"ratio ours / baseline:          {ours_rate / baseline_rate:10.2f}x")
    print(f"ours vs target 2,000 reports/s: {ours_rate / 2000:10.2f}x")


if __name__ == "__main__":
    main()
