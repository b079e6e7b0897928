"""Report-generation metrics callback: NLG (pycocoevalcap definitions) and clinical efficacy.

Reads the chat model's validation/test step outputs
``{"predictions": [...], "references": [...], "tasks": [...], "meta": [...]}`` and scores the items
whose task is ``report`` over the whole gathered set. Logged keys (``val/`` or ``test/``):
``bleu_1..4``, ``meteor`` (absent without Java), ``rouge_l``, ``cider``, ``ce_*`` / ``ce14_*``
(see `callbacks.scoring.clinical`) and ``report_n`` (the number of reports scored).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lightning.pytorch import LightningModule, Trainer

from callbacks.corpus_metric import CorpusMetricCallback


class ReportMetrics(CorpusMetricCallback):
    """Corpus NLG + clinical efficacy of generated reports.

    Args:
        meteor: compute METEOR (needs Java and pycocoevalcap; warns once and skips it otherwise).
        clinical: compute clinical efficacy with the labeler.
        labeler: text -> {CheXpert label: 1.0/0.0/-1.0/None}; default `lit_medxchat.labeler.label_report`.
        reference_labels: ``"labeler"`` labels reference texts with the same labeler (like for like);
            ``"meta"`` uses the dataset's labels from ``meta["labels"]``.
        uncertain_as: value given to uncertain (-1) labels, 0 (negative, default) or 1 (positive).
        log_samples: W&B table of examples (patient data: off by default); ``num_samples`` rows.
    """

    def __init__(
        self,
        meteor: bool = True,
        clinical: bool = True,
        labeler: Callable[[str], Mapping[str, float | None]] | None = None,
        reference_labels: str = "labeler",
        uncertain_as: float = 0.0,
        log_samples: bool = False,
        num_samples: int = 16,
        score_sanity_check: bool = False,
    ) -> None:
        super().__init__(score_sanity_check=score_sanity_check)
        if reference_labels not in ("labeler", "meta"):
            raise ValueError(f"reference_labels={reference_labels!r}; use 'labeler' or 'meta'")
        self.meteor, self.clinical, self.labeler = meteor, clinical, labeler
        self.reference_labels, self.uncertain_as = reference_labels, uncertain_as
        self.log_samples_enabled, self.num_samples = log_samples, num_samples
        self._meteor = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Start METEOR's JVM on rank 0 now: it loads its tables while the first validation generates."""
        if self.meteor and trainer.global_rank == 0 and self._meteor is None:
            from callbacks.scoring.meteor import MeteorScorer

            self._meteor = MeteorScorer()
            self._meteor.start()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._meteor is not None:
            self._meteor.close()
            self._meteor = None

    def collect(self, outputs: Any, batch: Any, pl_module: LightningModule) -> list[dict]:
        preds, refs = outputs["predictions"], outputs["references"]
        tasks = outputs.get("tasks") or ["report"] * len(preds)
        metas = outputs.get("meta") or [{}] * len(preds)
        if not len(preds) == len(refs) == len(tasks) == len(metas):
            raise ValueError(
                f"step outputs disagree in length: {len(preds)} predictions, {len(refs)} references, "
                f"{len(tasks)} tasks, {len(metas)} meta"
            )
        return [
            {"prediction": p, "reference": r, "labels": m.get("labels"), "key": m.get("key"),
             "study_id": m.get("study_id"), "view": m.get("view")}
            for p, r, t, m in zip(preds, refs, tasks, metas, strict=True)
            if t == "report"
        ]

    def score(self, items: list[dict]) -> dict[str, float | None]:
        from callbacks.scoring.nlg import report_nlg_scores

        if not items:
            return {"report_n": 0.0}
        preds = [it["prediction"] for it in items]
        refs = [it["reference"] for it in items]
        scores: dict[str, float | None] = dict(report_nlg_scores(preds, refs, meteor=self._meteor or self.meteor))
        if self.clinical:
            scores.update(self._clinical(preds, refs, items))
        scores["report_n"] = float(len(items))
        return scores

    def _clinical(self, preds: list[str], refs: list[str], items: list[dict]) -> dict[str, float]:
        from callbacks.scoring.clinical import clinical_efficacy, default_labeler

        labeler = self.labeler or default_labeler()
        predicted = [labeler(p) for p in preds]
        if self.reference_labels == "meta":
            missing = sum(it["labels"] is None for it in items)
            if missing:
                raise ValueError(
                    f"reference_labels='meta' but {missing} of {len(items)} reports have no meta['labels']; "
                    "use reference_labels='labeler'"
                )
            reference = [it["labels"] for it in items]
        else:
            reference = [labeler(r) for r in refs]
        return clinical_efficacy(predicted, reference, self.uncertain_as)

    def log_samples(self, trainer: Trainer, items: list[dict], stage: str) -> None:
        if not self.log_samples_enabled or not items:
            return
        from callbacks.sample_logging import log_text_table

        rows = [[it["key"], it["reference"], it["prediction"]] for it in items[: self.num_samples]]
        log_text_table(trainer, f"{stage}/report_samples", ["key", "reference", "generated"], rows)
