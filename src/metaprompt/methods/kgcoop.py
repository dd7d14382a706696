"""KgCoOp (knowledge-guided context optimisation, htyao89/KgCoOp): CoOp, plus a loss that keeps the learned
class text features close to the hand-crafted ones (the dataset's CoOp template, frozen CLIP):

    loss = cross-entropy + w * (1 - mean over classes of cos(learned_c, hand_crafted_c))

over all the task's classes at every step, ``w`` = 8.0 as released for base-to-new (scripts/base2new_train.sh).
The released prompt learner also builds a bias vector, a meta-net and an adapter that nothing uses and nothing
trains; they are left out. Its hand-crafted features come from an fp16 copy of CLIP even in its fp32 mode; here
they are computed in the run's precision (docs/parity.md)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..distributed import world_size
from ..templates import prompt_classnames, templates_for
from ..validation import at_least, validate
from .base import Batch, step_stats
from .coop import CoOp, CoOpConfig


@dataclass
class KgCoOpConfig(CoOpConfig):
    w: float = 8.0
    """Weight of the distance to the hand-crafted text features (TRAINER.COOP.W)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        validate(self, {"w": at_least(0)}, scope="method.")


class KgCoOp(CoOp):
    name = "kgcoop"
    config_class = KgCoOpConfig

    def on_classes_changed(self) -> None:
        super().on_classes_changed()
        hand_crafted = self.clip.zero_shot_classifier(prompt_classnames(self.classnames),
                                                      templates_for(self.dataset, "zero_shot"))
        self.register_buffer("hand_crafted", hand_crafted, persistent=False)

    def knowledge_distance(self, text: torch.Tensor) -> torch.Tensor:
        """1 - the mean cosine similarity of the learned and the hand-crafted class features."""
        return 1.0 - F.cosine_similarity(text, self.hand_crafted.to(text.dtype), dim=1, eps=1e-7).mean()

    def forward_backward(self, batch: Batch, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        text = self.text_features()
        f = batch.features if batch.features is not None else self.encode_images(batch.images)
        logits = self.clip.logit_scale * f @ text.t()
        # each process adds 1/N of the distance: the gradients summed over processes hold it once
        loss = self.cross_entropy(logits, batch.labels) + self.cfg.w * self.knowledge_distance(text) / world_size()
        self.step(loss, optimizer)
        return step_stats(loss, logits, batch.labels)
