"""How much a chat model's visual tokens depend on the image: the signal that an adapter collapsed.

A visual adapter trained from scratch can learn an image-independent soft prompt: the training loss
still falls (the prompt helps the text), but every image yields the same tokens and the LLM writes
the same report for every CXR. Two numbers show it early, long before generated reports do:

- `adapter_sensitivity`: the between-image spread of the adapter's outputs relative to their overall
  spread; 0 for a constant output, about 1 when the outputs of different images are unrelated.
- the loss gap: teacher-forced loss of the reference answers with blank images minus with the real
  ones (`image_loss_gap`); positive when the image helps predict the answer.
"""

from __future__ import annotations

import torch


def adapter_sensitivity(outputs: torch.Tensor) -> float:
    """Mean over (token, channel) of the std across images, over the std of all outputs.

    Args:
        outputs: (N, T, C) adapter outputs of N >= 2 different images.
    Returns:
        A value in [0, ~1]: 0 when every image gives the same tokens (collapse).
    """
    if outputs.ndim != 3 or outputs.shape[0] < 2:
        raise ValueError(f"outputs must be (N >= 2, T, C) adapter outputs; got shape {tuple(outputs.shape)}")
    outputs = outputs.detach().double()
    overall = outputs.std()
    if overall == 0:
        return 0.0
    between = outputs.std(dim=0).mean()
    return float(between / overall)
