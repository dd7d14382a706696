"""MaPLe (multi-modal prompt learning): deep text prompts; each layer's visual prompt is a learned linear
function of that layer's text prompt."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import MetapromptError
from ..prompts import deep_prompts, deep_context_conflict, reconcile_deep_context
from ..validation import at_least, validate
from .ivlp import IVLP


@dataclass
class MaPLeConfig:
    n_ctx: int = 2
    """Prompt tokens per layer (text and, through the coupling, vision)."""
    depth: int = 9
    """Blocks that receive prompts on both sides."""
    ctx_init: str = "a photo of a"
    """Prompt words; the first n_ctx tokens are learned, initialised from their embeddings ('' = random; unused
    when n_ctx > 4, as released)."""

    reconcile = staticmethod(reconcile_deep_context)

    def __post_init__(self) -> None:
        validate(self, {"n_ctx": at_least(1), "depth": at_least(1)}, scope="method.")
        if deep_context_conflict(self.n_ctx, self.ctx_init):
            raise MetapromptError(deep_context_conflict(self.n_ctx, self.ctx_init))


class MaPLe(IVLP):
    name = "maple"
    config_class = MaPLeConfig

    def build(self) -> None:
        clip, cfg = self.clip, self.cfg
        clip.require_text_prompts(self.name)
        clip.require_visual_prompts(self.name)
        self.text_prompts = deep_prompts(clip, cfg.depth, cfg.n_ctx, clip.d_text,
                                         min(len(clip.model.transformer.resblocks),
                                             len(clip.model.visual.transformer.resblocks)), self.ctx_init)
        self.couplings = couplings(clip.d_text, clip.d_vis, cfg.depth)

    @property
    def visual_prompts(self) -> torch.Tensor:
        """[depth, n_ctx, d_vis]: the coupling of each layer's text prompt."""
        return torch.stack([f(p) for f, p in zip(self.couplings, self.text_prompts)])


def couplings(d_text: int, d_vis: int, depth: int) -> nn.ModuleList:
    """One ``Linear(d_text, d_vis)`` per prompted layer, as the released code makes them: one for the first
    layer, and ONE more deep-copied for each deeper layer, so that the deep couplings start identical."""
    first = nn.Linear(d_text, d_vis)
    deep = nn.Linear(d_text, d_vis)
    return nn.ModuleList([first, *(copy.deepcopy(deep) for _ in range(depth - 1))])
