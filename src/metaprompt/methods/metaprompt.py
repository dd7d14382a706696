"""MetaPrompt: IVLP's deep text and visual prompts, asymmetric contrastive logits against the frozen
encoders, and an alternate episodic domain-split (meta) update after every in-domain update.

Logits (method doc section 2)::

    logits_i = s * f_img  @ w_txt0.T     # prompted image vs frozen text
    logits_t = s * f_img0 @ w_txt.T      # frozen image vs prompted text
    logits   = (logits_i + logits_t) / 2

The domain-split update's steps are in :mod:`metaprompt.methods.domain_split`; this module builds its
episodes' losses from the method's logits.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ..templates import TEMPLATE_STYLES, prompt_classnames, templates_for
from ..validation import at_least, one_of, validate
from ..distributed import global_count
from . import domain_split
from .base import Batch, step_stats
from .domain_split import Episode, MetaRule
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

    def __post_init__(self) -> None:
        super().__post_init__()
        validate(self, {"meta_split": one_of(META_SPLITS), "n_class_splits": at_least(2), "meta_step": at_least(0),
                        "compat": one_of(COMPAT_MODES), "templates": one_of(TEMPLATE_STYLES)}, scope="method.")


class MetaPrompt(IVLP):
    name = "metaprompt"
    config_class = MetaPromptConfig

    def build(self) -> None:
        super().build()
        self.zero_grad_to_none = self.cfg.compat == "clean"
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
        frozen = self.clip.zero_shot_classifier(names, templates_for(self.dataset, self.cfg.templates))
        self.register_buffer("frozen_text", frozen, persistent=False)

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
    def forward_backward(self, batch: Batch, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """(a) the in-domain update of both prompts, then (b) the domain-split update; the in-domain step's
        :func:`~metaprompt.methods.base.step_stats`."""
        lr = optimizer.param_groups[0]["lr"]
        frozen, loss, logits = self.in_domain_update(batch, optimizer)
        stats = step_stats(loss, logits, batch.labels)
        self.meta_update(batch, frozen, optimizer, lr)
        return stats

    def in_domain_update(self, batch: Batch, optimizer: torch.optim.Optimizer):
        """(a): one step of ``CE(logits) + CE(logits_i) + CE(logits_t)`` on both prompts; returns the batch's
        frozen image features, the loss and the logits."""
        frozen = self.frozen_image_features(batch.images)
        logits_i, logits_t = self.pair_logits(batch.images, frozen)
        logits = (logits_i + logits_t) / 2
        count = global_count(batch.labels.numel())
        loss = sum(self.cross_entropy(x, batch.labels, count) for x in (logits, logits_i, logits_t))
        self.step(loss, optimizer)
        return frozen, loss, logits

    def meta_update(self, batch: Batch, frozen: torch.Tensor, optimizer: torch.optim.Optimizer,
                    lr: float) -> list[torch.Tensor]:
        """(b): the domain-split update at ``lr``: of the text prompts over class groups (cross-class), or of
        the visual prompts over source domains (cross-domain); returns each episode's meta-test gradient."""
        if self.cfg.meta_split == "class":
            prompts, episodes = self.text_prompts, self.class_episodes(batch, frozen)
        else:
            prompts, episodes = self.visual_prompts, self.domain_episodes(batch)
        rule = MetaRule(self.cfg.meta_step, released_restore=self.cfg.compat == "released",
                        zero_grad_to_none=self.zero_grad_to_none)
        return domain_split.meta_step(prompts, episodes, optimizer, lr, rule, self.step, self.gradient)

    def class_groups(self) -> list[torch.Tensor]:
        """The next cross-class split of the training classes (drawn from the split generator)."""
        return domain_split.class_groups(self.num_classes, self.cfg.n_class_splits, self.split_random)

    def class_episodes(self, batch: Batch, frozen: torch.Tensor) -> list[Episode]:
        """Cross-class episodes: CE of logits_t (only the prompted text is needed) over each side's classes."""
        groups = [g.to(batch.labels.device) for g in self.class_groups()]
        return [Episode(self.class_loss(batch, frozen, train), self.class_loss(batch, frozen, test))
                for train, test in domain_split.class_episodes(batch.labels, groups)]

    def domain_episodes(self, batch: Batch) -> list[Episode]:
        """Cross-domain episodes: CE of logits_i (only the prompted image is needed) over all classes."""
        sides = domain_split.domain_episodes(batch.domains, released=self.cfg.compat == "released")
        return [Episode(self.domain_loss(batch, train), self.domain_loss(batch, test)) for train, test in sides]

    def class_loss(self, batch: Batch, frozen: torch.Tensor, side: domain_split.Side):
        """CE of logits_t on the side's images over its classes (relabelled), computed when called."""
        def loss() -> torch.Tensor:
            rows, classes = side.rows, side.classes
            if self.options.reuse_frozen_features:
                logits = self.text_logits(frozen[rows], classes)
            else:
                logits = self.reference_pass(batch.images)[1][rows][:, classes]
            labels = domain_split.relabel(batch.labels[rows], classes, self.num_classes)
            return self.cross_entropy(logits, labels, side.global_count)
        return loss

    def domain_loss(self, batch: Batch, side: domain_split.Side):
        """CE of logits_i on the side's images over all classes, computed when called."""
        def loss() -> torch.Tensor:
            rows = side.rows
            if not side.count:  # none of this process's images: a zero share that stays on the prompts' graph
                logits = (self.visual_prompts * 0).sum() + batch.images.new_zeros(0, self.num_classes)
            elif self.options.reuse_frozen_features:
                logits = self.image_logits(batch.images[rows])
            else:
                logits = self.reference_pass(batch.images)[0][rows]
            return self.cross_entropy(logits, batch.labels[rows], side.global_count)
        return loss

    def reference_pass(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The released code's pass (shortcuts off): frozen image, prompted image and prompted text over
        all classes, recomputed; returns the full (logits_i, logits_t)."""
        frozen = self.frozen_image_features(images)
        return self.image_logits(images), self.clip.logit_scale * frozen @ self.encode_classes().t()

