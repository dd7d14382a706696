"""Zero-shot CLIP: a hand-crafted text classifier (per-dataset template or a template ensemble)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import MetapromptError
from ..templates import prompt_classnames, templates_for
from .base import Batch, PromptMethod


@dataclass
class ZeroShotConfig:
    templates: str = "zero_shot"
    """``zero_shot`` (the dataset's CoOp template), ``metaprompt``, ``imagenet80`` (CLIP's 80 ImageNet
    templates) or ``imagenet_select`` (the 7 selected ones)."""


class ZeroShotCLIP(PromptMethod):
    name = "zeroshot"
    config_class = ZeroShotConfig
    frozen_image_encoder = True

    def on_classes_changed(self) -> None:
        self.classifier = self.clip.zero_shot_classifier(prompt_classnames(self.classnames),
                                                         templates_for(self.dataset, self.cfg.templates))

    def encode_classes(self, classes: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier if classes is None else self.classifier[classes]

    def forward_backward(self, batch: Batch, optimizer) -> dict[str, float]:
        raise MetapromptError("zero-shot CLIP has nothing to train")
