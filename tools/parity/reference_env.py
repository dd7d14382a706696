"""Running the released code of one reference repository in this process, on a CPU, under current torch.

Nothing here changes what the reference computes; each shim replaces something that cannot run here:

- the repository's root, then Dassl's, go first on ``sys.path`` (each repository ships top-level packages
  named ``clip``, ``trainers`` and ``datasets``: one repository per process);
- ``.cuda()`` on tensors and modules returns them unchanged (the released code calls it unconditionally);
- Dassl's warm-up schedulers pass ``verbose`` positionally to ``LRScheduler.__init__``, which torch >= 2.7
  no longer takes: it is accepted and dropped;
- the CLIP weights come from the fixture file instead of OpenAI's download URL (``clip._download``), and the
  trainers' own ``load_clip_to_cpu`` then runs unmodified;
- a trainer is built without data: ``dm.dataset.classnames`` is all ``build_model`` reads of the data;
- MaPLe's prompt learner hard-codes ViT-B/16's widths (``torch.empty(n_ctx, 512)``, ``nn.Linear(ctx_dim,
  768)``): while it is built (:func:`maple_widths`), those two literals become the fixture's text and vision
  widths (a full-size ViT-B/16 needs no such mapping).

CoOp's ZeroshotCLIP runs OpenAI's weights in fp16 as loaded (it has no PREC option), and KgCoOp computes its
hand-crafted text features with a second CLIP left in fp16 even with PREC fp32, as PromptSRC builds its frozen
image encoder (with fp32 inputs that one cannot run at all): for the fp32 goldens these loaded CLIPs are cast to
fp32 (:func:`fp32_clip`), as every trainer does with PREC fp32. PromptSRC also rounds its frozen text features
with ``.half()`` for the frozen logits: :func:`no_half_rounding` (below) applies to it as to the
multimodal-prompt-learning trainers.

Two context managers reproduce circumstances of the published runs or neutralise an fp16 artefact, and are
used only where a golden says so: :func:`torch1_zero_grad` (``zero_grad()`` zeroes gradients, as torch 1.x
did, instead of setting them to None) and :func:`no_half_rounding` (the multimodal-prompt-learning blocks
round prompts with ``.half()`` even in fp32 mode; fp32 goldens compare the fp32 computation).
"""
from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import torch


def enter_repository(repo: Path, dassl: Path):
    """Put ``repo`` (then Dassl) first on sys.path, install the shims, import the repository's ``train.py``
    (which registers its datasets and trainers) and return it."""
    sys.path[:0] = [str(repo), str(dassl)]
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    _accept_positional_verbose()
    return importlib.import_module("train")


def _accept_positional_verbose() -> None:
    from torch.optim import lr_scheduler

    original = lr_scheduler.LRScheduler.__init__
    if getattr(original, "_parity_shim", False):
        return

    def init(self, optimizer, last_epoch=-1, verbose=None):
        original(self, optimizer, last_epoch)

    init._parity_shim = True
    lr_scheduler.LRScheduler.__init__ = init


WIDTHS: dict[str, int] = {}
"""The fixture's text and vision transformer widths (set by use_fixture_weights)."""


def use_fixture_weights(fixture: Path, backbone: str = "ViT-B/16") -> None:
    """The reference ``clip`` package's download returns the fixture file for ``backbone``."""
    import clip.clip as reference_clip

    reference_clip._MODELS[backbone] = f"file://{fixture}"
    reference_clip._download = lambda url, root=None: str(fixture)
    state = torch.load(fixture, map_location="cpu", weights_only=True)
    WIDTHS.update(text=state["ln_final.weight"].shape[0], vision=state["visual.conv1.weight"].shape[0])


class _Proxy:
    """A module whose attributes are another's, but for ``overrides``."""

    def __init__(self, target, **overrides):
        self._target, self._overrides = target, overrides

    def __getattr__(self, name):
        return self._overrides[name] if name in self._overrides else getattr(self._target, name)


@contextlib.contextmanager
def maple_widths(spec: dict) -> Iterator[None]:
    """While MaPLe's learner is built, its literals 512 (text width) and 768 (vision width) are the fixture's."""
    if spec["trainer"] != "MaPLe":
        yield
        return
    module = importlib.import_module("trainers.maple")
    text, vision = WIDTHS["text"], WIDTHS["vision"]
    saved = module.torch, module.nn
    module.torch = _Proxy(torch, empty=lambda *shape, **kw: torch.empty(*(text if s == 512 else s for s in shape), **kw))
    module.nn = _Proxy(torch.nn, Linear=lambda i, o, *a, **kw: torch.nn.Linear(i, vision if o == 768 else o, *a, **kw))
    try:
        yield
    finally:
        module.torch, module.nn = saved


def config(train_module, trainer_yaml: Path, **overrides):
    """Dassl's default config + the repository's extend_cfg + the released trainer YAML + ``overrides``
    (dotted keys with ``__`` for ``.``: ``TRAINER__COOP__PREC="fp32"``)."""
    from dassl.config import get_cfg_default

    cfg = get_cfg_default()
    train_module.extend_cfg(cfg)
    cfg.merge_from_file(str(trainer_yaml))
    pairs = []
    for key, value in overrides.items():
        pairs += [key.replace("__", "."), value]
    cfg.merge_from_list(pairs)
    cfg.freeze()
    return cfg


def trainer(trainer_class, cfg, classnames: list[str]):
    """A reference trainer built as Dassl's SimpleTrainer.__init__ builds it, without a data loader."""
    from dassl.engine.trainer import TrainerBase

    t = object.__new__(trainer_class)
    TrainerBase.__init__(t)
    t.cfg, t.device = cfg, torch.device("cpu")
    t.start_epoch = t.epoch = 0
    t.max_epoch, t.output_dir = cfg.OPTIM.MAX_EPOCH, ""
    t.dm = SimpleNamespace(dataset=SimpleNamespace(classnames=list(classnames)))
    t.num_batches, t.batch_idx = 10**9, 0  # no end-of-epoch LR step during a golden's few batches
    t.build_model()
    return t


def set_lr(t, lr: float) -> None:
    """Every optimizer of the trainer at ``lr`` (its warm-up scheduler started it at WARMUP_CONS_LR)."""
    for optim in t._optims.values():
        if optim is not None:
            for group in optim.param_groups:
                group["lr"] = lr


@contextlib.contextmanager
def torch1_zero_grad() -> Iterator[None]:
    """``Optimizer.zero_grad()`` zeroes existing gradients (torch 1.x) instead of setting them to None."""
    original = torch.optim.Optimizer.zero_grad

    def zero_grad(self, set_to_none: bool = False):
        return original(self, set_to_none=set_to_none)

    torch.optim.Optimizer.zero_grad = zero_grad
    try:
        yield
    finally:
        torch.optim.Optimizer.zero_grad = original


@contextlib.contextmanager
def no_half_rounding() -> Iterator[None]:
    """``Tensor.half()`` of an fp32 tensor returns it unchanged (see the module docstring)."""
    original = torch.Tensor.half

    def half(self, *args, **kwargs):
        return self if self.dtype == torch.float32 else original(self, *args, **kwargs)

    torch.Tensor.half = half
    try:
        yield
    finally:
        torch.Tensor.half = original


@contextlib.contextmanager
def half_rounding_in_fp32() -> Iterator[None]:
    """``Tensor.half()`` of an fp32 tensor rounds its values to fp16 and keeps fp32: the released rounding's effect
    on the values, where the released dtype mix cannot run (PromptSRC's fp32 frozen logits: fp32 @ fp16)."""
    original = torch.Tensor.half

    def half(self, *args, **kwargs):
        return original(self, *args, **kwargs).float() if self.dtype == torch.float32 else original(self, *args, **kwargs)

    torch.Tensor.half = half
    try:
        yield
    finally:
        torch.Tensor.half = original


def fp32_clip(trainer_module: str) -> None:
    """The trainer module's ``load_clip_to_cpu`` returns CLIP in fp32 (see the module docstring): CoOp's
    ZeroshotCLIP, and KgCoOp's second CLIP for its hand-crafted features, keep OpenAI's fp16 as loaded."""
    module = importlib.import_module(trainer_module)
    original = module.load_clip_to_cpu
    if not getattr(original, "_parity_shim", False):
        def load_fp32(cfg, *args, **kwargs):
            return original(cfg, *args, **kwargs).float()

        load_fp32._parity_shim = True
        module.load_clip_to_cpu = load_fp32
