"""Image-contrastive greedy decoding: amplify what the image adds over a blank image.

A small LLM trained briefly on reports learns the image's effect on its next-token distribution
(the real-vs-blank loss gap is positive), but greedy decoding still follows the text prior: when the
image moves "There is a moderate right pleural effusion" from 0.3 to 0.45 and "The lungs are clear"
stays at 0.5, greedy writes the normal report. Visual contrastive decoding (Leng et al., CVPR 2024)
scores tokens by `(1 + a) * log p(token | image) - a * log p(token | blank image)`, restricted to tokens
the image-conditioned model itself finds plausible (p >= `plausibility` * max p), so the evidence the
image contributes decides and nonsense tokens stay out. With `a = 0` this is plain greedy decoding.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def contrastive_greedy(
    llm: nn.Module,
    embeds: torch.Tensor,
    blank_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
    contrast: float,
    plausibility: float = 0.1,
    synced: bool = False,
) -> torch.Tensor:
    """New token ids (B, <= max_new_tokens) for left-padded prompts given as embeddings.

    Args:
        llm: a causal LM taking `inputs_embeds` / `input_ids` with `past_key_values`.
        embeds, blank_embeds: (B, P, C) prompt embeddings with the real images and with blank ones.
        attention_mask: (B, P), shared by both (same tokens, only the image vectors differ).
        contrast: the weight `a` of the blank-image logits (0 = greedy decoding).
        plausibility: tokens below this fraction of the most likely token's probability are never chosen.
        synced: keep running forwards until every rank's batch is finished (ZeRO-3: each forward all-gathers
            parameters, so a rank that stops early would leave the others waiting); a finished rank's extra
            steps add no token to its answer.
    """
    from lit_medxchat.core.distributed import all_ranks_true

    batch = embeds.shape[0]
    inputs = torch.cat([embeds, blank_embeds])
    mask = torch.cat([attention_mask, attention_mask])
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    out = llm(inputs_embeds=inputs, attention_mask=mask, position_ids=positions, use_cache=True)
    past = out.past_key_values
    logits = out.logits[:, -1]
    finished = torch.zeros(batch, dtype=torch.bool, device=embeds.device)
    tokens: list[torch.Tensor] = []
    pad = torch.full_like(finished, pad_token_id, dtype=torch.long)
    step = 0
    while True:
        if step < max_new_tokens:
            real, blank = logits[:batch].float().log_softmax(-1), logits[batch:].float().log_softmax(-1)
            scores = (1.0 + contrast) * real - contrast * blank
            implausible = real < real.max(-1, keepdim=True).values + torch.log(torch.tensor(plausibility))
            scores = scores.masked_fill(implausible, float("-inf"))
            next_token = torch.where(finished, pad, scores.argmax(-1))
            tokens.append(next_token)
            finished |= next_token == eos_token_id
        else:  # done here, still stepping for ranks that are not (synced)
            next_token = pad
        step += 1
        done = bool(finished.all()) or step >= max_new_tokens
        if all_ranks_true(done, embeds.device) if synced else done:
            break
        mask = torch.cat([mask, mask.new_ones(2 * batch, 1)], dim=1)
        positions = positions[:, -1:] + 1
        out = llm(
            input_ids=torch.cat([next_token, next_token]).unsqueeze(1),
            attention_mask=mask,
            position_ids=positions,
            past_key_values=past,
            use_cache=True,
        )
        past, logits = out.past_key_values, out.logits[:, -1]
    return torch.stack(tokens, dim=1) if tokens else embeds.new_zeros(batch, 0, dtype=torch.long)
