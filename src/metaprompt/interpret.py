"""What learned context vectors are close to: the nearest vocabulary words of each learned text context token,
as CoOp's ``interpret_prompt.py`` finds them (Euclidean distance to every row of CLIP's token embedding)."""
from __future__ import annotations

import torch

from .errors import MetapromptError
from .methods import PromptMethod


def nearest_words(method: PromptMethod, top_k: int = 5) -> list[list[tuple[str, float]]]:
    """Per learned context token (layer 0 of ``text_prompts``, where the words of a prompt sit), the ``top_k``
    nearest vocabulary tokens and their distances, nearest first."""
    tensors = method.trained_tensors()
    if "text_prompts" not in tensors:
        raise MetapromptError(f"{method.name} has no learned text context to interpret (expected a method with "
                              "text_prompts: CoOp, CoCoOp, KgCoOp, IVLP, MaPLe, PromptSRC, MetaPrompt)")
    decoder = getattr(method.clip.tokenizer, "decoder", None)
    if not isinstance(decoder, dict):
        raise MetapromptError(f"the tokenizer of {method.clip.source.name} cannot name its tokens (it has no decoder)")
    context = tensors["text_prompts"][0].float()
    vocabulary = method.clip.model.token_embedding.weight.detach().float().cpu()
    if not 1 <= top_k <= len(vocabulary):
        raise MetapromptError(f"--top-k {top_k}: expected 1 to {len(vocabulary)}")
    distances = torch.cdist(context, vocabulary, compute_mode="donot_use_mm_for_euclid_dist")  # exact near 0
    nearest = distances.topk(top_k, dim=1, largest=False)
    return [[(decoder.get(int(i), f"<{int(i)}>"), float(d)) for d, i in zip(row_d, row_i)]
            for row_d, row_i in zip(nearest.values, nearest.indices)]
