"""Zero-shot CLIP: a hand-crafted text classifier (per-dataset template or a template ensemble)."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import MetapromptError
from ..templates import TEMPLATE_STYLES, templates_for
from ..validation import one_of, validate
from .base import TRAINING_LOOP_OPTIONS, Batch, HandCraftedText


@dataclass
class ZeroShotConfig:
    templates: str = "zero_shot"
    """``zero_shot`` (the dataset's CoOp template), ``metaprompt``, ``imagenet80`` (CLIP's 80 ImageNet
    templates) or ``imagenet_select`` (the 7 selected ones)."""

    def __post_init__(self) -> None:
        validate(self, {"templates": one_of(TEMPLATE_STYLES)}, scope="method.")


class ZeroShotCLIP(HandCraftedText):
    name = "zeroshot"
    config_class = ZeroShotConfig
    frozen_image_encoder = True
    unused_train_options = TRAINING_LOOP_OPTIONS | {"train.shots"}  # it trains on nothing

    def templates(self) -> tuple[str, ...]:
        return templates_for(self.dataset, self.cfg.templates)

    def forward_backward(self, batch: Batch, optimizer) -> dict[str, float]:
        raise MetapromptError("zero-shot CLIP has nothing to train")
