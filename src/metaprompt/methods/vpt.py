"""VPT (deep visual prompts only); the text side is a frozen hand-crafted prompt."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..prompts import deep_prompts
from ..templates import prompt_classnames
from .base import PromptMethod


@dataclass
class VPTConfig:
    n_vis: int = 8
    """Visual prompt tokens per layer."""
    depth: int = 12
    """Image-encoder blocks that receive prompts (1 = input only)."""
    template: str = "a photo of a {}."
    """The frozen text prompt."""


class VPT(PromptMethod):
    name = "vpt"
    config_class = VPTConfig

    def build(self) -> None:
        self.clip.require_visual_prompts(self.name)
        v = self.clip.model.visual.transformer
        self.visual_prompts = deep_prompts(self.clip, self.cfg.depth, self.cfg.n_vis, self.clip.d_vis, len(v.resblocks))

    def on_classes_changed(self) -> None:
        self.classifier = self.clip.zero_shot_classifier(prompt_classnames(self.classnames), (self.cfg.template,))

    def encode_classes(self, classes: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier if classes is None else self.classifier[classes]

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.clip.image_features(images, self.visual_prompts)
