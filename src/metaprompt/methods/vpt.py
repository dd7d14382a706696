"""VPT (deep visual prompts only); the text side is a frozen hand-crafted prompt."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..prompts import deep_prompts
from ..validation import Rule, at_least, validate
from .base import HandCraftedText


@dataclass
class VPTConfig:
    n_vis: int = 8
    """Visual prompt tokens per layer."""
    depth: int = 12
    """Image-encoder blocks that receive prompts (1 = input only)."""
    template: str = "a photo of a {}."
    """The frozen text prompt."""

    def __post_init__(self) -> None:
        validate(self, {"n_vis": at_least(1), "depth": at_least(1),
                        "template": Rule(lambda t: t.count("{}") == 1, "a text with one {} for the class name")},
                 scope="method.")


class VPT(HandCraftedText):
    name = "vpt"
    config_class = VPTConfig

    def build(self) -> None:
        self.clip.require_visual_prompts(self.name)
        v = self.clip.model.visual.transformer
        self.visual_prompts = deep_prompts(self.clip, self.cfg.depth, self.cfg.n_vis, self.clip.d_vis, len(v.resblocks))

    def templates(self) -> tuple[str, ...]:
        return (self.cfg.template,)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.clip.image_features(images, self.visual_prompts)
