"""IVLP (independent vision-language prompting): deep text prompts and deep visual prompts, uncoupled."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import MetapromptError
from ..prompts import ClassPrompts, deep_ctx_init, deep_prompts, deep_context_conflict, reconcile_deep_context
from ..validation import at_least, validate
from .base import PromptMethod


@dataclass
class IVLPConfig:
    n_ctx: int = 2
    """Text prompt tokens per layer."""
    n_vis: int = 2
    """Visual prompt tokens per layer."""
    text_depth: int = 12
    """Text blocks that receive prompts (1 = input only)."""
    vision_depth: int = 12
    """Image blocks that receive prompts (1 = input only)."""
    ctx_init: str = "a photo of a"
    """Prompt words; the first n_ctx tokens are learned, initialised from their embeddings ('' = random; unused
    when n_ctx > 4, as released)."""

    reconcile = staticmethod(reconcile_deep_context)

    def __post_init__(self) -> None:
        validate(self, {name: at_least(1) for name in ("n_ctx", "n_vis", "text_depth", "vision_depth")},
                 scope="method.")
        if deep_context_conflict(self.n_ctx, self.ctx_init):
            raise MetapromptError(deep_context_conflict(self.n_ctx, self.ctx_init))


class IVLP(PromptMethod):
    name = "ivlp"
    config_class = IVLPConfig

    def build(self) -> None:
        clip, cfg = self.clip, self.cfg
        clip.require_text_prompts(self.name)
        clip.require_visual_prompts(self.name)
        self.text_prompts = deep_prompts(clip, cfg.text_depth, cfg.n_ctx, clip.d_text,
                                         len(clip.model.transformer.resblocks), self.ctx_init, option="text_depth")
        self.visual_prompts = deep_prompts(clip, cfg.vision_depth, cfg.n_vis, clip.d_vis,
                                           len(clip.model.visual.transformer.resblocks), option="vision_depth")

    def on_classes_changed(self) -> None:
        self.class_prompts = ClassPrompts(self.clip, self.classnames, self.cfg.n_ctx, self.ctx_init)

    @property
    def ctx_init(self) -> str:
        """The context words actually used (none beyond 4 tokens, as released)."""
        return deep_ctx_init(self.cfg.n_ctx, self.cfg.ctx_init)

    def encode_classes(self, classes: torch.Tensor | None = None) -> torch.Tensor:
        ids = torch.arange(self.num_classes, device=self.device) if classes is None else classes
        prompts = self.text_prompts
        return self.encode_in_chunks(
            lambda part: self.class_prompts.features(self.clip, prompts[0], prompts, ids[part]), len(ids))

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.clip.image_features(images, self.visual_prompts)
