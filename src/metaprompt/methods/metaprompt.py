"""MetaPrompt: IVLP's deep text and visual prompts, asymmetric contrastive logits against the frozen
encoders, and an alternate episodic domain-split (meta) update after every in-domain update.

Logits (method doc section 2)::

    logits_i = s * f_img  @ w_txt0.T     # prompted image vs frozen text
    logits_t = s * f_img0 @ w_txt.T      # frozen image vs prompted text
    logits   = (logits_i + logits_t) / 2

The domain-split update lives in :mod:`metaprompt.episodic`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .. import episodic
from ..distributed import world_size
from ..errors import MetapromptError
from ..templates import prompt_classnames, templates_for
from .base import Batch, accuracy
from .ivlp import IVLP, IVLPConfig

COMPAT_MODES = ("clean", "released")
DEFAULT_SEED = 1
"""The split's seed until the trainer sets the run's (``reset_random_state``)."""
META_SPLITS = ("class", "domain")


@dataclass
class MetaPromptConfig(IVLPConfig):
    n_ctx: int = 2
    """Text prompt tokens per layer (2 base-to-new, 4 domain generalisation)."""
    n_vis: int = 2
    """Visual prompt tokens per layer (2 base-to-new, 4 domain generalisation)."""
    text_depth: int = 12
    vision_depth: int = 12
    ctx_init: str = ""
    """MetaPrompt initialises every prompt layer randomly (N(0, 0.02^2))."""
    meta_split: str = "class"
    """``class``: cross-class split on the text prompts (base-to-new); ``domain``: cross-domain split on the
    visual prompts (domain generalisation)."""
    n_class_splits: int = 2
    """Number of class groups the training classes are cut into for the cross-class split."""
    meta_step: float = 0.2
    """Meta update: prompts -= meta_step * lr * sum of the meta-test gradients."""
    compat: str = "clean"
    """``clean``: the algorithm as the paper describes it. ``released``: the released code's computation with
    its quirks: the storage-sharing restore (the inner steps of the second split on are not undone),
    torch 1.x ``zero_grad`` (zeros, not None: momentum and weight decay still move the prompt a split does not
    train) and its domain episodes (N = the number of distinct domains in the batch, meta-test domains
    0..N-1). See docs/metaprompt.md."""
    raw_template_names: bool = False
    """Format the frozen templates with raw class names (underscores kept), as the released code does."""
    templates: str = "metaprompt"
    """Templates of the frozen classifier w_txt0 (see metaprompt.templates)."""


class MetaPrompt(IVLP):
    name = "metaprompt"
    config_class = MetaPromptConfig

    def build(self) -> None:
        cfg = self.cfg
        if cfg.compat not in COMPAT_MODES:
            raise MetapromptError(f"compat={cfg.compat!r}; expected one of {', '.join(COMPAT_MODES)}")
        if cfg.meta_split not in META_SPLITS:
            raise MetapromptError(f"meta_split={cfg.meta_split!r}; expected one of {', '.join(META_SPLITS)}")
        super().build()
        self.zero_grad_to_none = cfg.compat == "clean"
        self.reset_random_state(DEFAULT_SEED)

    # ------------------------------------------------------------------ randomness
    def reset_random_state(self, seed: int) -> None:
        """The class shuffles of the cross-class split come from Python's random seeded with the run's seed,
        as the released code's ``random.shuffle`` after ``random.seed(cfg.SEED)`` (identical on every
        process)."""
        self.split_random = random.Random(seed)

    def random_state(self) -> dict:
        return {"split": self.split_random.getstate()}

    def set_random_state(self, state: dict) -> None:
        self.split_random.setstate(state["split"])

    def on_classes_changed(self) -> None:
        super().on_classes_changed()
        names = self.classnames if self.cfg.raw_template_names else prompt_classnames(self.classnames)
        self.frozen_text = self.clip.zero_shot_classifier(names, templates_for(self.dataset, self.cfg.templates))

    # ------------------------------------------------------------------ logits
    def image_logits(self, images: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        """logits_i: prompted image features against the frozen text classifier."""
        w0 = self.frozen_text if classes is None else self.frozen_text[classes]
        return self.clip.logit_scale * self.encode_images(images) @ w0.t()

    def text_logits(self, frozen_features: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        """logits_t: frozen image features against the prompted text features."""
        text = self.text_features() if classes is None else self.encode_classes(classes)
        return self.clip.logit_scale * frozen_features @ text.t()

    def pair_logits(self, images: torch.Tensor, frozen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image_logits(images), self.text_logits(frozen)

    def model_inference(self, images: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        logits_i, logits_t = self.pair_logits(images, self.frozen_image_features(images))
        return (logits_i + logits_t) / 2

    # ------------------------------------------------------------------ training
    def forward_backward(self, batch: Batch, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        """(a) the in-domain update of both prompts, then (b) the domain-split update."""
        lr = optimizer.param_groups[0]["lr"]
        frozen, loss, logits = self.in_domain_update(batch, optimizer)
        self.meta_update(batch, frozen, optimizer, lr)
        return {"loss": float(loss.detach()) * world_size(), "acc": accuracy(logits.detach(), batch.labels)}

    def in_domain_update(self, batch: Batch, optimizer: torch.optim.Optimizer):
        """(a): one step of ``CE(logits) + CE(logits_i) + CE(logits_t)`` on both prompts; returns the batch's
        frozen image features, the loss and the logits."""
        frozen = self.frozen_image_features(batch.images)
        logits_i, logits_t = self.pair_logits(batch.images, frozen)
        logits = (logits_i + logits_t) / 2
        loss = sum(self.cross_entropy(x, batch.labels) for x in (logits, logits_i, logits_t))
        self.step(loss, optimizer)
        return frozen, loss, logits

    def meta_update(self, batch: Batch, frozen: torch.Tensor, optimizer: torch.optim.Optimizer,
                    lr: float) -> list[torch.Tensor]:
        """(b): the domain-split update at ``lr``; returns each episode's meta-test gradient."""
        if self.cfg.meta_split == "class":
            return episodic.cross_class_update(self, batch, frozen, optimizer, lr)
        return episodic.cross_domain_update(self, batch, optimizer, lr)

    def reference_pass(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The released code's pass (shortcuts off): frozen image, prompted image and prompted text over
        all classes, recomputed; returns the full (logits_i, logits_t)."""
        frozen = self.frozen_image_features(images)
        return self.image_logits(images), self.clip.logit_scale * frozen @ self.encode_classes().t()

