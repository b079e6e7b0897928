"""VQA accuracy callback: by topic and by diagnosis over the gathered validation set.

Scores the chat model's items whose task is ``vqa`` with `callbacks.scoring.vqa.vqa_accuracy` (its
docstring states the answer-matching rule). Keys: ``vqa_acc``, ``vqa_acc/<topic>``,
``vqa_acc/diagnosis/<category>`` and the counts ``vqa_n...``.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer

from callbacks.corpus_metric import CorpusMetricCallback


class VQAMetrics(CorpusMetricCallback):
    """Accuracy of generated VQA answers. ``log_samples`` (off by default) logs a W&B table."""

    def __init__(self, log_samples: bool = False, num_samples: int = 32, score_sanity_check: bool = False) -> None:
        super().__init__(score_sanity_check=score_sanity_check)
        self.log_samples_enabled, self.num_samples = log_samples, num_samples

    def collect(self, outputs: Any, batch: Any, pl_module: LightningModule) -> list[dict]:
        preds, refs, tasks, metas = (outputs[k] for k in ("predictions", "references", "tasks", "meta"))
        if not len(preds) == len(refs) == len(tasks) == len(metas):
            raise ValueError(f"step outputs disagree in length: {len(preds)}, {len(refs)}, {len(tasks)}, {len(metas)}")
        keep = ("topic", "diagnosis", "answer", "key")
        return [
            {"prediction": p, "reference": r, "meta": {k: m.get(k) for k in keep}}
            for p, r, t, m in zip(preds, refs, tasks, metas, strict=True)
            if t == "vqa"
        ]

    def score(self, items: list[dict]) -> dict[str, float | None]:
        from callbacks.scoring.vqa import vqa_accuracy

        if not items:
            return {"vqa_n": 0.0}
        return dict(
            vqa_accuracy([i["prediction"] for i in items], [i["reference"] for i in items], [i["meta"] for i in items])
        )

    def log_samples(self, trainer: Trainer, items: list[dict], stage: str) -> None:
        if not self.log_samples_enabled or not items:
            return
        from callbacks.sample_logging import log_text_table
        from callbacks.scoring.vqa import answer_matches

        rows = [
            [
                i["meta"]["key"],
                i["meta"]["topic"],
                i["meta"]["diagnosis"],
                i["reference"],
                i["prediction"],
                answer_matches(i["prediction"], i["meta"]["answer"], i["reference"]),
            ]
            for i in items[: self.num_samples]
        ]
        log_text_table(
            trainer, f"{stage}/vqa_samples", ["key", "topic", "diagnosis", "reference", "generated", "correct"], rows
        )
