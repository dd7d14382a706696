"""CoOp (context optimisation): learned context vectors before the class name, a frozen CLIP."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import MetapromptError
from ..prompts import (CLASS_TOKEN_POSITIONS, ClassPrompts, context_from_text, coop_context_conflict, coop_n_ctx,
                       random_prompts, reconcile_coop_context)
from ..validation import at_least, one_of, validate
from .base import PromptMethod


@dataclass
class CoOpConfig:
    n_ctx: int = 4
    """Number of context vectors; with ``ctx_init``, the number of its words (as released)."""
    ctx_init: str = "a photo of a"
    """Initialise the context from these words' embeddings; empty: random N(0, 0.02^2)."""
    class_specific: bool = False
    """One context per class (then the prompts cannot serve unseen classes)."""
    class_token_position: str = "end"
    """Where the class name goes: ``end``, ``middle`` or ``front``."""

    reconcile = staticmethod(reconcile_coop_context)

    def __post_init__(self) -> None:
        validate(self, {"n_ctx": at_least(1), "class_token_position": one_of(CLASS_TOKEN_POSITIONS)}, scope="method.")
        if self.class_specific and self.ctx_init:
            raise MetapromptError("class_specific contexts start from random vectors: CoOp's released code ignores "
                                  "class_specific when ctx_init is set (one generic context); set ctx_init '' "
                                  "(--set ctx_init=) for class-specific contexts")
        if coop_context_conflict(self.n_ctx, self.ctx_init):
            raise MetapromptError(coop_context_conflict(self.n_ctx, self.ctx_init))


class CoOp(PromptMethod):
    name = "coop"
    config_class = CoOpConfig
    frozen_image_encoder = True

    @property
    def n_ctx(self) -> int:
        return coop_n_ctx(self.cfg.n_ctx, self.cfg.ctx_init)

    def build(self) -> None:
        self.clip.require_text_prompts(self.name)
        cfg = self.cfg
        shape = (self.num_classes, self.n_ctx) if cfg.class_specific else (1, self.n_ctx)
        ctx = random_prompts(*shape, self.clip.d_text)
        if cfg.ctx_init:
            with torch.no_grad():
                ctx[:] = context_from_text(self.clip, cfg.ctx_init, self.n_ctx)
        if cfg.class_specific:
            self.class_text_prompts = ctx
        else:
            self.text_prompts = ctx

    def on_classes_changed(self) -> None:
        if self.cfg.class_specific and self.num_classes != self.class_text_prompts.shape[0]:
            raise MetapromptError(f"class-specific CoOp prompts were trained for {self.class_text_prompts.shape[0]} "
                                  f"classes and cannot serve {self.num_classes}")
        self.class_prompts = ClassPrompts(self.clip, self.classnames, self.n_ctx, self.cfg.ctx_init,
                                          self.cfg.class_token_position)

    def encode_classes(self, classes: torch.Tensor | None = None) -> torch.Tensor:
        ids = torch.arange(self.num_classes, device=self.device) if classes is None else classes

        def encode(part: slice) -> torch.Tensor:
            sel = ids[part]
            ctx = self.class_text_prompts[sel] if self.cfg.class_specific else self.text_prompts[0]
            return self.class_prompts.features(self.clip, ctx, classes=sel)

        return self.encode_in_chunks(encode, len(ids))
