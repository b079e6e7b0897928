"""Text-to-CXR request callback: does the `<Xray>` prompt name the requested view and findings?

Scores the chat model's items whose task is ``t2i`` with `callbacks.scoring.text_to_cxr.xray_request_rate`
(its docstring states the rule). Keys: ``xray_request_rate``, ``xray_view_rate``, ``xray_finding_rate``, ``xray_n``
(the diffusion model's `ImageMetrics` owns the ``t2i_`` keys).
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule

from callbacks.corpus_metric import CorpusMetricCallback


class TextToCXRMetrics(CorpusMetricCallback):
    """The `<Xray>` request rule over the gathered text-to-CXR answers; `labeler` defaults to the project's."""

    def __init__(self, labeler: Any = None, score_sanity_check: bool = False) -> None:
        super().__init__(score_sanity_check=score_sanity_check)
        self.labeler = labeler

    def collect(self, outputs: Any, batch: Any, pl_module: LightningModule) -> list[dict]:
        preds, refs, tasks = (outputs[k] for k in ("predictions", "references", "tasks"))
        if not len(preds) == len(refs) == len(tasks):
            raise ValueError(f"step outputs disagree in length: {len(preds)}, {len(refs)}, {len(tasks)}")
        return [{"prediction": p, "reference": r} for p, r, t in zip(preds, refs, tasks, strict=True) if t == "t2i"]

    def score(self, items: list[dict]) -> dict[str, float | None]:
        from callbacks.scoring.clinical import default_labeler
        from callbacks.scoring.text_to_cxr import xray_request_rate

        if not items:
            return {"xray_n": 0.0}
        rates = xray_request_rate(items, self.labeler or default_labeler())
        return {f"xray_{name}": value for name, value in rates.items()}
