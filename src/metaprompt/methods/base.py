"""What every prompt-learning method shares: class features, logits, one training step, saved tensors.

Vocabulary follows CoOp: a method is the ``CustomCLIP`` of its paper; ``forward_backward`` is one
training step; ``model_inference`` is the logits of a batch of images.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ClassVar, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..clip import PromptCLIP
from ..distributed import global_count, sum_gradients, world_size
from ..errors import MetapromptError
from ..templates import prompt_classnames


@dataclass
class ComputeOptions:
    """Exact shortcuts (each one changes no number, only the work done) and memory options.

    Turning a shortcut off runs the reference codebases' computation, for comparisons and benchmarks.
    """

    truncate_context: bool = True
    """Run the text transformer only up to the largest EOT position of the batch (exact: it is causal)."""
    cache_text_features: bool = True
    """Compute image-independent class text features once per evaluation, not once per test batch."""
    reuse_frozen_features: bool = True
    """MetaPrompt: frozen image features once per batch; each split pass runs only the encoders it needs."""
    cache_image_features: bool = True
    """Frozen-image-encoder methods: encode each augmented view of the few-shot set once."""
    class_chunk: int = 0
    """Encode at most this many class prompts per text-encoder call (0: all at once)."""
    text_checkpointing: bool = False
    """Activation checkpointing in the text encoder (less memory, one more text forward in backward)."""

    @classmethod
    def reference(cls, **memory) -> "ComputeOptions":
        """Every exact shortcut off (the reference codebases' computation); memory options as given."""
        return cls(truncate_context=False, cache_text_features=False, reuse_frozen_features=False,
                   cache_image_features=False, **memory)


@dataclass
class Batch:
    images: torch.Tensor | None
    """None when the engine's feature cache supplies ``features`` and no image was loaded."""
    labels: torch.Tensor
    domains: torch.Tensor | None = None
    features: torch.Tensor | None = None
    """Precomputed frozen image features (normalised), when the engine's feature cache supplies them."""


TRAINING_LOOP_OPTIONS = frozenset({"train.epochs", "train.batch_size", "train.lr", "train.momentum",
                                   "train.weight_decay", "train.warmup_epochs", "train.warmup_lr",
                                   "train.augment_views", "train.crop_scale_min", "train.max_steps",
                                   "train.optimizer", "train.lr_scheduler", "train.stepsize", "train.gamma",
                                   "train.final_model", "train.checkpoint_freq", "train.keep_checkpoints"})
"""The options of gradient training, which a method trained by none (zero-shot CLIP, the linear probe) never reads."""

class PromptMethod(nn.Module):
    """Base class. Subclasses set ``name`` and ``config_class``, create their parameters in ``build``,
    and define ``encode_classes`` (normalised class text features) and, when prompted, ``encode_images``."""

    name: ClassVar[str]
    config_class: ClassVar[type]
    image_independent_text: ClassVar[bool] = True
    """Class text features depend on no image (every method but CoCoOp): they can be cached per evaluation."""
    frozen_image_encoder: ClassVar[bool] = False
    """No visual prompts: image features are CLIP's own and can be cached."""
    closed_form: ClassVar[bool] = False
    """Fitted in one go on the training images' features (``fit``), not trained by gradient steps."""
    unused_train_options: ClassVar[frozenset[str]] = frozenset()
    """Training options (``train.<name>``) the method never reads: a value of theirs departs from nothing."""
    zero_grad_to_none: bool = True
    """``optimizer.zero_grad`` sets gradients to None (torch >= 2.0); False zeroes them (torch 1.x), so that
    momentum and weight decay still move a parameter that a step's loss does not reach."""

    def __init__(self, cfg, clip: PromptCLIP, classnames: list[str], dataset: str = "default",
                 options: ComputeOptions | None = None):
        super().__init__()
        self.cfg = cfg
        self.clip = clip
        self.dataset = dataset
        self.set_options(options or ComputeOptions())
        self._cached_text: torch.Tensor | None = None
        self.classnames = list(classnames)
        self.build()
        self.set_classes(classnames)

    # ------------------------------------------------------------ subclass hooks
    def build(self) -> None:
        """Create the trainable parameters (``self.classnames`` holds the training classes)."""

    def on_classes_changed(self) -> None:
        """Rebuild whatever depends on the class list (tokenised prompts, frozen classifiers)."""

    def encode_classes(self, classes: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised class text features [C, D] for all classes (or the ids in ``classes``)."""
        raise NotImplementedError

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised image features [B, D]; the frozen encoder unless the method has visual prompts."""
        return self.frozen_image_features(images)

    def reset_random_state(self, seed: int) -> None:
        """Seed the method's own randomness, if it has any (the trainer calls this with the run's seed)."""

    def random_state(self) -> dict:
        """The method's own random state, for checkpoints ({} when it has none)."""
        return {}

    def set_random_state(self, state: dict) -> None:
        """Restore what :meth:`random_state` returned."""

    def on_epoch_end(self, epoch: int, epochs: int) -> None:
        """After epoch ``epoch`` (0-based) of ``epochs`` (PromptSRC aggregates its prompts here)."""

    def training_state(self) -> dict:
        """What the method keeps across epochs besides its trained tensors, for checkpoints ({} when none)."""
        return {}

    def set_training_state(self, state: dict) -> None:
        """Restore what :meth:`training_state` returned."""

    # ------------------------------------------------------------ shared behaviour
    def set_options(self, options: ComputeOptions) -> None:
        """Use ``options``: the method's shortcuts, and the text encoder's (context truncation, checkpointing)."""
        self.options = options
        self.clip.truncate_context = options.truncate_context
        self.clip.text_checkpointing = options.text_checkpointing

    def set_classes(self, classnames: list[str]) -> None:
        if not classnames:
            raise MetapromptError("the class list is empty")
        self.classnames = list(classnames)
        self._cached_text = None
        self.on_classes_changed()

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    @property
    def device(self) -> torch.device:
        return self.clip.device

    def train(self, mode: bool = True) -> "PromptMethod":
        super().train(mode)
        self.clip.train(False)
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def trained_tensors(self) -> dict[str, torch.Tensor]:
        """What training changed, by name: the content of a prompt artifact."""
        return {n: p.detach().float().cpu().contiguous() for n, p in self.named_parameters() if p.requires_grad}

    def load_trained_tensors(self, tensors: dict[str, torch.Tensor], source: str = "artifact") -> None:
        """Load trained tensors, checking names and shapes against this method and model."""
        own = dict((n, p) for n, p in self.named_parameters() if p.requires_grad)
        missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
        if missing or unexpected:
            raise MetapromptError(f"{source}: tensors do not match method {self.name!r}: missing "
                                  f"{missing or 'none'}, unexpected {unexpected or 'none'}")
        for n, p in own.items():
            if tuple(tensors[n].shape) != tuple(p.shape):
                raise MetapromptError(
                    f"{source}: tensor {n!r} has shape {list(tensors[n].shape)}, but method {self.name!r} on model "
                    f"{self.clip.source.name!r} expects {list(p.shape)} (was the artifact trained on another model?)")
            with torch.no_grad():
                p.copy_(tensors[n].to(p.device, p.dtype))
        self._cached_text = None

    @torch.no_grad()
    def frozen_image_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.clip.image_features(images)

    def text_features(self) -> torch.Tensor:
        """Class text features, from the per-evaluation cache when one is active."""
        if self._cached_text is not None:
            return self._cached_text
        return self.encode_classes()

    def encode_in_chunks(self, encode, n: int) -> torch.Tensor:
        """Concatenate ``encode(slice)`` over chunks of ``options.class_chunk`` items (all at once if 0)."""
        chunk = self.options.class_chunk or n
        return torch.cat([encode(slice(i, i + chunk)) for i in range(0, n, chunk)])

    @contextlib.contextmanager
    def evaluation(self) -> Iterator[None]:
        """Evaluation mode; image-independent class text features are computed once for the whole run."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                if self.image_independent_text and self.options.cache_text_features:
                    self._cached_text = self.encode_classes()
                yield
        finally:
            self._cached_text = None
            self.train(was_training)

    def model_inference(self, images: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, C] of images over the current classes."""
        f = features if features is not None and self.frozen_image_encoder else self.encode_images(images)
        return self.clip.logit_scale * f @ self.text_features().t()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model_inference(images)

    def forward_backward(self, batch: Batch, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """One training step: cross-entropy of the logits, backward, optimiser step. Returns
        :func:`step_stats` (on the device: reading them waits for it, so the trainer reads them in bulk)."""
        logits = self.model_inference(batch.images, batch.features)
        loss = self.cross_entropy(logits, batch.labels)
        self.step(loss, optimizer)
        return step_stats(loss, logits, batch.labels)

    # ------------------------------------------------------------ distributed-exact primitives
    def cross_entropy(self, logits: torch.Tensor, labels: torch.Tensor, count: float | None = None) -> torch.Tensor:
        """Cross-entropy summed here and divided by the count over ALL processes (``count``, when the caller
        has it), so that gradients summed over processes equal the single-process mean over the global batch.
        The count divides as a CPU scalar: nothing is copied to the device, nothing waits for it."""
        if count is None:
            count = global_count(labels.numel())
        total = F.cross_entropy(logits.to(self.clip.feature_dtype), labels, reduction="sum")
        return total / torch.tensor(max(float(count), 1.0))

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=self.zero_grad_to_none)
        loss.backward()
        sum_gradients([p.grad for p in self.trainable_parameters()])
        optimizer.step()

    def gradient(self, loss: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
        """d loss / d tensor (first order), summed over processes."""
        (grad,) = torch.autograd.grad(loss, tensor)
        sum_gradients([grad])
        return grad


class HandCraftedText(PromptMethod):
    """A method whose class text features are a frozen classifier of hand-written prompts (zero-shot CLIP,
    VPT): the class names, with underscores as spaces, in :meth:`templates`, averaged over them."""

    def templates(self) -> tuple[str, ...]:
        raise NotImplementedError

    def on_classes_changed(self) -> None:
        classifier = self.clip.zero_shot_classifier(prompt_classnames(self.classnames), self.templates())
        self.register_buffer("classifier", classifier, persistent=False)

    def encode_classes(self, classes: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier if classes is None else self.classifier[classes]


def step_stats(loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[loss x processes, accuracy %] of a step (float64, on the device): their mean over processes is the loss
    and accuracy over the global batch (``loss`` is this process's share, see :meth:`PromptMethod.cross_entropy`)."""
    correct = (logits.detach().argmax(-1) == labels).float().mean() if labels.numel() else logits.new_zeros(())
    return torch.stack([loss.detach().double() * world_size(), correct.double() * 100])


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(-1) == labels).float().mean()) * 100 if labels.numel() else 0.0
