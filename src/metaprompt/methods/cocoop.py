"""CoCoOp (conditional context): CoOp's context plus a per-image bias from a small meta-net, so every
image gets its own prompts and the text encoder runs once per image over all classes."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MetapromptError
from ..prompts import (ClassPrompts, context_from_text, coop_context_conflict, coop_n_ctx, random_prompts,
                       reconcile_coop_context)
from ..validation import at_least, validate
from .base import PromptMethod


@dataclass
class CoCoOpConfig:
    n_ctx: int = 4
    """Number of context vectors; with ``ctx_init``, the number of its words (as released)."""
    ctx_init: str = "a photo of a"
    """Initialise the context from these words' embeddings ('' = random)."""
    image_chunk: int = 8
    """Images whose class prompts go through the text encoder together (memory vs. speed)."""

    reconcile = staticmethod(reconcile_coop_context)

    def __post_init__(self) -> None:
        validate(self, {"n_ctx": at_least(1), "image_chunk": at_least(1)}, scope="method.")
        if coop_context_conflict(self.n_ctx, self.ctx_init):
            raise MetapromptError(coop_context_conflict(self.n_ctx, self.ctx_init))


class CoCoOp(PromptMethod):
    name = "cocoop"
    config_class = CoCoOpConfig
    image_independent_text = False
    frozen_image_encoder = True

    @property
    def n_ctx(self) -> int:
        return coop_n_ctx(self.cfg.n_ctx, self.cfg.ctx_init)

    def build(self) -> None:
        clip, cfg = self.clip, self.cfg
        clip.require_text_prompts(self.name)
        self.text_prompts = random_prompts(1, self.n_ctx, clip.d_text)
        if cfg.ctx_init:
            with torch.no_grad():
                self.text_prompts[0] = context_from_text(clip, cfg.ctx_init, self.n_ctx)
        hidden = clip.embed_dim // 16
        self.meta_net = nn.Sequential(nn.Linear(clip.embed_dim, hidden), nn.ReLU(inplace=True),
                                      nn.Linear(hidden, clip.d_text))

    def on_classes_changed(self) -> None:
        self.class_prompts = ClassPrompts(self.clip, self.classnames, self.n_ctx, self.cfg.ctx_init)

    def encode_classes(self, classes: torch.Tensor | None = None) -> torch.Tensor:
        """Class features with the unconditioned context (no image): for inspection only."""
        return self.class_prompts.features(self.clip, self.text_prompts[0], classes=classes)

    def model_inference(self, images: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        f = features if features is not None else self.frozen_image_features(images)
        contexts = self.text_prompts[0] + self.meta_net(f)[:, None, :]  # [B, n_ctx, d_text]
        step = self.cfg.image_chunk
        return torch.cat([self.conditioned_logits(f[i:i + step], contexts[i:i + step])
                          for i in range(0, f.shape[0], step)])

    def conditioned_logits(self, features: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        """Logits [b, C] of b images, each over the class prompts built from its own context [b, n_ctx, d]."""
        base, n = self.class_prompts.embeddings, self.n_ctx
        b, (c, length, d) = features.shape[0], base.shape
        x = torch.cat([base[None, :, :1].expand(b, c, 1, d),
                       contexts[:, None].to(base.dtype).expand(b, c, n, d),
                       base[None, :, 1 + n:].expand(b, c, length - 1 - n, d)], dim=2).reshape(b * c, length, d)
        with self.clip.autocast():
            text = self.clip.encode_text_embeddings(x, self.class_prompts.eot.repeat(b),
                                                    length=self.class_prompts.max_length).to(self.clip.feature_dtype)
        text = F.normalize(text, dim=-1).view(b, c, -1)
        return self.clip.logit_scale * torch.einsum("bd,bcd->bc", features, text)
