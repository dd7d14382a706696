"""The training and evaluation loop: SGD with the field's warm-up + cosine schedule, mixed precision,
one or many processes, checkpoints that resume bit-identically, progress bars.

The shape is Dassl's (build, before/after epoch, forward_backward, test) without the framework.
"""
from __future__ import annotations

import math
import os
import random
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import distributed as dist
from .data.base import Datum
from .data.dataset import ImageDataset, collate
from .data.transforms import TRAIN_CROP_SCALE_MIN, test_transform, train_transform
from .errors import MetapromptError
from .feature_cache import ViewFeatureCache, feature_cache_applies
from .methods.base import Batch, PromptMethod
from .scalars import ScalarLog

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class TrainConfig:
    """Optimisation and data settings (defaults: MetaPrompt's base-to-new configuration)."""

    epochs: int = 8
    batch_size: int = 16
    """Global batch: split evenly over processes when distributed."""
    test_batch_size: int = 100
    lr: float = 0.0015
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    warmup_lr: float = 1e-5
    """Constant LR during the warm-up epochs (the field's ConstantWarmupScheduler)."""
    shots: int = 16
    """Training images per class (per class per source domain in domain generalisation); 0 = all."""
    seed: int = 1
    precision: str = "fp32"
    """fp32, bf16 or fp16 (mixed: weights stay fp32, matrix products run in the lower precision), or fp16-pure
    (weights and prompts in fp16, as the released codebases' default; CUDA only, fp32 elsewhere)."""
    num_workers: int = 2
    augment_views: int = 0
    """Distinct augmented views per training image (0: a new view every epoch)."""
    crop_scale_min: float = TRAIN_CROP_SCALE_MIN
    """Smallest random-resized-crop area (fraction of the image); the field uses 0.08."""
    max_steps: int = 0
    """Stop after this many training steps (0: no limit); for smoke tests."""


def lr_at_epoch(cfg: TrainConfig, epoch: int) -> float:
    """The LR of ``epoch`` (0-based), as Dassl's ConstantWarmupScheduler around CosineAnnealingLR(T_max =
    ``epochs``) with WARMUP_RECOUNT = True (its default) sets it: ``warmup_lr`` for the ``W`` warm-up
    epochs, then the cosine restarts from the full LR, so epoch ``e >= W`` runs at
    ``0.5 * lr * (1 + cos(pi * (e - W) / epochs))`` (epoch W at the full LR)."""
    if epoch < cfg.warmup_epochs:
        return cfg.warmup_lr
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * (epoch - cfg.warmup_epochs) / cfg.epochs))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrainState:
    epoch: int = 0
    """Epochs finished."""
    batch: int = 0
    """Global batches finished in epoch ``epoch`` (non-zero only in a checkpoint written on a signal)."""
    step: int = 0
    history: list[dict] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    epoch_accs: list[float] = field(default_factory=list)


class Trainer:
    """Trains a method's prompts on labelled items; checkpoints into ``work_dir`` when given.

    ``before_first_save`` runs (on rank 0) just before the first checkpoint is written: a run folder need
    not exist until training has something to keep.
    """

    def __init__(self, method: PromptMethod, items: list[Datum], cfg: TrainConfig, *, domains: list[str] | None = None,
                 work_dir: str | Path | None = None, progress: bool = True, skip_bad_images: bool = False,
                 before_first_save: Callable[[], None] | None = None):
        if not method.trainable_parameters():
            raise MetapromptError(f"method {method.name!r} has nothing to train")
        if not items:
            raise MetapromptError("the training split is empty")
        self.method, self.cfg = method, cfg
        self.work_dir = Path(work_dir) if work_dir else None
        self.progress = progress and dist.is_main()
        self.optimizer = torch.optim.SGD(method.trainable_parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        clip = method.clip
        self.dataset = ImageDataset(items, train_transform(clip.image_size, clip.mean, clip.std, cfg.crop_scale_min),
                                    domains,
                                    seed=cfg.seed, skip_bad_images=skip_bad_images)
        self.loader = self._loader()
        self.feature_cache = (ViewFeatureCache(method, self.dataset, cfg.test_batch_size, cfg.num_workers)
                              if feature_cache_applies(method, cfg.augment_views) else None)
        self.state = TrainState()
        self.scalars = ScalarLog()
        self.skipped_images = 0
        self._stop_signal: int | None = None
        self._before_first_save = before_first_save

    def _loader(self) -> DataLoader:
        """Each process loads its share of every global batch. The loader draws its workers' seeds from a
        generator of its own, so that starting an epoch leaves the global RNG as a resumed run finds it."""
        self.batches = dist.GlobalBatchSampler(len(self.dataset), self.cfg.batch_size, self.cfg.seed)
        return DataLoader(self.dataset, batch_sampler=self.batches, num_workers=self.cfg.num_workers,
                          collate_fn=collate, generator=torch.Generator().manual_seed(self.cfg.seed))

    # ----------------------------------------------------------------- checkpoints
    @property
    def checkpoint_path(self) -> Path | None:
        return self.work_dir / CHECKPOINT_NAME if self.work_dir else None

    def save_checkpoint(self) -> None:
        """Trained tensors, optimiser, epoch / step and every RNG state, written atomically (rank 0)."""
        if self.checkpoint_path is None or not dist.is_main():
            return
        if self._before_first_save is not None:
            self._before_first_save()
            self._before_first_save = None
        self.scalars.flush(self.work_dir)
        payload = {
            "tensors": self.method.trained_tensors(),
            "optimizer": self.optimizer.state_dict(),
            "state": asdict(self.state),
            "rng": rng_states(self.method),
            "skipped_images": self.skipped_images,
        }
        self.work_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint_path.with_suffix(".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, self.checkpoint_path)

    def try_resume(self) -> bool:
        """Load the checkpoint in ``work_dir`` if there is one; True when resumed."""
        path = self.checkpoint_path
        if path is None or not path.exists():
            return False
        try:
            payload = torch.load(path, map_location="cpu", weights_only=False)
            self.method.load_trained_tensors(payload["tensors"], source=str(path))
            self.optimizer.load_state_dict(payload["optimizer"])
        except MetapromptError:
            raise
        except Exception as err:  # noqa: BLE001 - a damaged file can fail in many ways
            raise MetapromptError(f"checkpoint {path} is unreadable ({err}); delete it to start over") from None
        self.state = TrainState(**payload["state"])
        self.skipped_images = payload.get("skipped_images", 0)
        set_rng_states(self.method, payload["rng"])
        return True

    # ----------------------------------------------------------------- training
    def fit(self, resume: bool = True) -> TrainState:
        """Train from the start, or (``resume``) from the checkpoint in ``work_dir``, to the last epoch.
        Every process starts from rank 0's prompts, as DistributedDataParallel does."""
        seed_everything(self.cfg.seed)
        self.method.reset_random_state(self.cfg.seed)
        if resume:
            self.try_resume()
        dist.broadcast_from_main(self.method.trainable_parameters())
        with self._stop_on_signals():
            for epoch in range(self.state.epoch, self.cfg.epochs):
                if self._budget_spent():
                    break
                self.run_epoch(epoch)
                self.state.epoch, self.state.batch = epoch + 1, 0
                self.save_checkpoint()
            if dist.global_sum(torch.tensor(float(self._stop_signal is not None))).item():
                self._interrupt()
        self.scalars.close()
        return self.state

    def _budget_spent(self) -> bool:
        return bool(self.cfg.max_steps) and self.state.step >= self.cfg.max_steps

    def run_epoch(self, epoch: int) -> None:
        """Train on the epoch's global batches from ``state.batch`` on (non-zero when resuming from a
        checkpoint written on a signal)."""
        lr = lr_at_epoch(self.cfg, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.batches.set_epoch(epoch, start=self.state.batch)
        view = epoch % self.cfg.augment_views if self.cfg.augment_views else epoch
        self.dataset.set_view(view)
        batches = self.feature_cache.epoch(view, self.loader.batch_sampler) if self.feature_cache else self.loader
        self.method.train()
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{self.cfg.epochs}", disable=not self.progress,
                   initial=self.state.batch, total=self.batches.num_batches, leave=False, dynamic_ncols=True)
        losses, accs = self.state.epoch_losses, self.state.epoch_accs
        for raw in bar:
            if self._batch_usable(raw):
                self._train_step(raw, epoch)
                bar.set_postfix(loss=f"{np.mean(losses):.4f}", acc=f"{np.mean(accs):.1f}", lr=f"{lr:.2e}")
            self.state.batch += 1
            if self._budget_spent():
                break
        self.state.history.append({"epoch": epoch + 1, "lr": lr, "loss": float(np.mean(losses)) if losses else None,
                                   "acc": float(np.mean(accs)) if accs else None})
        self.state.epoch_losses, self.state.epoch_accs = [], []

    def _batch_usable(self, raw: dict) -> bool:
        """Whether every process has readable images (or their cached features) in this batch; if one has
        none, all skip the batch together. All processes stop here together once any of them got SIGTERM /
        SIGINT; skipped images are counted over all processes."""
        has_data, stop, skipped = dist.global_sum(torch.tensor(
            [float("label" in raw), float(self._stop_signal is not None), float(raw["skipped"])])).tolist()
        if stop:
            self._interrupt()
        self.skipped_images += int(skipped)
        return has_data == dist.world_size()

    def _train_step(self, raw: dict, epoch: int) -> None:
        """One optimisation step; loss and accuracy are averaged over processes, and a NaN or infinite loss
        on any process stops all of them before anything more is saved."""
        stats = self.method.forward_backward(to_batch(raw, self.method.device), self.optimizer)
        self.state.step += 1
        mean = dist.global_sum(torch.tensor([stats["loss"], stats["acc"]], dtype=torch.float64)) / dist.world_size()
        loss, acc = mean.tolist()
        if not math.isfinite(loss):
            kept = (f"the last good checkpoint {self.checkpoint_path} is kept"
                    if self.checkpoint_path and self.checkpoint_path.is_file() else "no checkpoint was written")
            raise MetapromptError(f"loss became {loss} at step {self.state.step} (epoch {epoch + 1}); training "
                                  f"stopped and {kept}; try a lower lr or --set precision=fp32")
        self.state.epoch_losses.append(loss)
        self.state.epoch_accs.append(acc)
        if dist.is_main():  # Dassl's tags, at Dassl's step numbers
            n_iter = epoch * self.batches.num_batches + self.state.batch
            for tag, value in (("train/loss", loss), ("train/acc", acc), ("train/lr", self.optimizer.param_groups[0]["lr"])):
                self.scalars.add(tag, value, n_iter)

    def _interrupt(self) -> None:
        """Checkpoint at the current batch (the resumed run continues with the next one) and stop."""
        self.save_checkpoint()
        state = self.state
        when = f"in epoch {state.epoch + 1} after batch {state.batch}" if state.batch else f"after epoch {state.epoch}"
        where = f" saved in {self.checkpoint_path}" if self.checkpoint_path else ""
        raise KeyboardInterrupt(f"stopped by a signal {when}; progress{where}: re-run the same command to resume")

    def _stop_on_signals(self):
        """On SIGTERM / SIGINT: finish the current step, checkpoint, stop (all processes at the same batch).
        A second signal stops at once, keeping the last checkpoint."""
        trainer = self

        class _Guard:
            def __enter__(self):
                self.previous = {}
                if not _in_main_thread():
                    return self
                for sig in (signal.SIGTERM, signal.SIGINT):
                    self.previous[sig] = signal.signal(sig, self.handle)
                return self

            def handle(self, signum, frame):
                if trainer._stop_signal is not None:
                    raise KeyboardInterrupt("stopped by a second signal; the last checkpoint is kept")
                trainer._stop_signal = signum

            def __exit__(self, *exc):
                for sig, handler in self.previous.items():
                    signal.signal(sig, handler)
                return False

        return _Guard()


def _in_main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def to_batch(raw: dict, device: torch.device) -> Batch:
    """A loader batch on ``device``: images, or the feature cache's ``features`` in their place."""
    images, features = raw.get("image"), raw.get("features")
    return Batch(images=images.to(device, non_blocking=True) if images is not None else None,
                 labels=raw["label"].to(device), domains=raw["domain"].to(device),
                 features=features.to(device) if features is not None else None)


def rng_states(method: PromptMethod) -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    states["method"] = method.random_state()
    return states


def set_rng_states(method: PromptMethod, states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    method.set_random_state(states.get("method", {}))


# --------------------------------------------------------------------- evaluation
@dataclass
class EvalResult:
    accuracy: float
    logits: torch.Tensor
    labels: torch.Tensor
    skipped_images: int = 0
    seconds: float = 0.0


def iterate_test(method: PromptMethod, items: list[Datum], batch_size: int, num_workers: int,
                 skip_bad_images: bool = False) -> Iterator[dict]:
    clip = method.clip
    dataset = ImageDataset(items, test_transform(clip.image_size, clip.mean, clip.std),
                           skip_bad_images=skip_bad_images)
    yield from DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate)


def evaluate(method: PromptMethod, items: list[Datum], batch_size: int = 100, num_workers: int = 2,
             progress: bool = True, skip_bad_images: bool = False, desc: str = "evaluate") -> EvalResult:
    """Logits of every item over the method's current classes, and the accuracy (%)."""
    if not items:
        raise MetapromptError("the evaluation split is empty")
    start = time.perf_counter()
    logits, labels, skipped = [], [], 0
    with method.evaluation():
        loader = iterate_test(method, items, batch_size, num_workers, skip_bad_images)
        for raw in tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
            skipped += raw["skipped"]
            if "image" not in raw:
                continue
            logits.append(method.model_inference(raw["image"].to(method.device)).float().cpu())
            labels.append(raw["label"])
    if not logits:
        raise MetapromptError("no readable image in the evaluation split")
    all_logits, all_labels = torch.cat(logits), torch.cat(labels)
    acc = float((all_logits.argmax(-1) == all_labels).float().mean()) * 100
    return EvalResult(acc, all_logits, all_labels, skipped, time.perf_counter() - start)
