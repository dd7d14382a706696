"""PromptSRC (self-regulating prompts, muzairkhattak/PromptSRC trainers/promptsrc.py): IVLP's deep independent
text and visual prompts, trained with self-regularising constraints towards frozen CLIP:

    loss = CE + text_loss_weight * L1(prompted text features, frozen text features)
              + image_loss_weight * L1(prompted image features, frozen image features)
              + KL(softmax(frozen logits) || softmax(prompted logits)) summed, over batch x classes

(features normalised; the frozen text features are the mean of the raw features over PromptSRC's 60 ImageNet
templates, then normalised; the frozen logits are the frozen image features against them), and Gaussian
prompt aggregation (GPA): after each epoch e the prompts are weighted by N(e; gpa_mean, gpa_std) (weights
normalised over the epochs) and summed; after the last epoch the prompts are that sum.

As released, GPA sums the whole state dict (the frozen weights too, which the weights' sum of 1 leaves
unchanged but for rounding); here it sums the prompts only (docs/parity.md)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..distributed import global_count, world_size
from ..templates import ENSEMBLE_NAMES, ensemble, prompt_classnames
from ..validation import at_least, one_of, positive, validate
from .base import Batch, step_stats
from .ivlp import IVLP, IVLPConfig


@dataclass
class PromptSRCConfig(IVLPConfig):
    n_ctx: int = 4
    n_vis: int = 4
    text_depth: int = 9
    vision_depth: int = 9
    text_loss_weight: float = 25.0
    image_loss_weight: float = 10.0
    gpa_mean: float = 15.0
    """Epoch (1-based) at the centre of the Gaussian prompt aggregation."""
    gpa_std: float = 1.0
    templates: str = "promptsrc60"
    """The frozen text features' template ensemble."""

    def __post_init__(self) -> None:
        super().__post_init__()
        validate(self, {"text_loss_weight": at_least(0), "image_loss_weight": at_least(0), "gpa_std": positive,
                        "templates": one_of(ENSEMBLE_NAMES)}, scope="method.")


def gpa_weights(epochs: int, mean: float, std: float) -> list[float]:
    """The Gaussian weight of each epoch 1..epochs, normalised to sum 1."""
    density = [math.exp(-0.5 * ((e - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi)) for e in range(1, epochs + 1)]
    total = sum(density)
    return [d / total for d in density]


class PromptSRC(IVLP):
    name = "promptsrc"
    config_class = PromptSRCConfig

    def build(self) -> None:
        super().build()
        self._aggregate: dict[str, torch.Tensor] | None = None

    def on_classes_changed(self) -> None:
        super().on_classes_changed()
        frozen = self.clip.mean_template_features(prompt_classnames(self.classnames), ensemble(self.cfg.templates))
        self.register_buffer("frozen_text", frozen, persistent=False)

    def forward_backward(self, batch: Batch, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        cfg, scale = self.cfg, self.clip.logit_scale
        text = self.text_features()
        image = self.encode_images(batch.images)
        logits = scale * image @ text.t()
        with torch.no_grad():
            frozen_image = self.frozen_image_features(batch.images)
            frozen_logits = scale * frozen_image @ self.frozen_text.to(frozen_image.dtype).t()
        n = global_count(batch.labels.numel())
        ce = self.cross_entropy(logits, batch.labels, count=n)
        # the text terms are the same on every process: each adds 1/N; the image terms are means over the batch
        text_l1 = F.l1_loss(text, self.frozen_text.to(text.dtype)) * cfg.text_loss_weight / world_size()
        denominator = torch.tensor(max(n, 1.0))
        image_l1 = F.l1_loss(image, frozen_image, reduction="sum") / (denominator * image.shape[-1]) \
            * cfg.image_loss_weight
        kl = F.kl_div(F.log_softmax(logits, dim=1), F.log_softmax(frozen_logits, dim=1), reduction="sum",
                      log_target=True) / (denominator * logits.shape[-1])
        loss = ce + text_l1 + image_l1 + kl
        self.step(loss, optimizer)
        return step_stats(loss, logits, batch.labels)

    # ------------------------------------------------------------ Gaussian prompt aggregation
    def on_epoch_end(self, epoch: int, epochs: int) -> None:
        """Add this epoch's weighted prompts to the aggregate; after the last epoch, the prompts become it."""
        weight = gpa_weights(epochs, self.cfg.gpa_mean, self.cfg.gpa_std)[epoch]
        current = self.trained_tensors()
        if self._aggregate is None:
            self._aggregate = {k: v * weight for k, v in current.items()}
        else:
            self._aggregate = {k: self._aggregate[k] + v * weight for k, v in current.items()}
        if epoch == epochs - 1:
            self.load_trained_tensors(self._aggregate, source="the Gaussian prompt aggregate")

    def training_state(self) -> dict:
        return {} if self._aggregate is None else {"gpa": dict(self._aggregate)}

    def set_training_state(self, state: dict) -> None:
        self._aggregate = dict(state["gpa"]) if state.get("gpa") is not None else None
