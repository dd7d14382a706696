"""The training loop: SGD with the field's warm-up + cosine schedule, one or many processes, a checkpoint after
every epoch (and on SIGTERM / SIGINT) that resumes bit-identically, progress bars.

The shape is Dassl's (build, before/after epoch, forward_backward) without the framework. Checkpoints and
random states are :mod:`metaprompt.checkpoint`'s; evaluation is :mod:`metaprompt.evaluation`'s.
"""
from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import distributed as dist
from .costs import FlopCount
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, rng_states, save_checkpoint, set_rng_states
from .config import TrainConfig
from .data.base import Datum
from .data.dataset import ImageDataset, collate, loader_workers
from .data.transforms import train_transform
from .errors import MetapromptError
from .feature_cache import ViewFeatureCache, feature_cache_applies
from .methods.base import Batch, PromptMethod
from .runlog import progress_bars
from .scalars import ScalarLog


READ_EVERY_STEPS = 20
"""On a GPU, steps whose loss and accuracy are read (a wait for the device, and a collective call) together."""


def lr_at_epoch(cfg: TrainConfig, epoch: int) -> float:
    """The LR of ``epoch`` (0-based), as Dassl's ConstantWarmupScheduler around CosineAnnealingLR(T_max =
    ``epochs``) with WARMUP_RECOUNT = True (its default) sets it: ``warmup_lr`` for the ``W`` warm-up
    epochs, then the cosine restarts from the full LR, so epoch ``e >= W`` runs at
    ``0.5 * lr * (1 + cos(pi * (e - W) / epochs))`` (epoch W at the full LR)."""
    if epoch < cfg.warmup_epochs:
        return cfg.warmup_lr
    after = epoch - cfg.warmup_epochs
    if cfg.lr_scheduler == "constant":
        return cfg.lr
    if cfg.lr_scheduler == "single_step":
        return cfg.lr * cfg.gamma ** (after // cfg.stepsize[0])
    if cfg.lr_scheduler == "multi_step":
        return cfg.lr * cfg.gamma ** sum(after >= milestone for milestone in cfg.stepsize)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * after / cfg.epochs))


def build_optimizer(parameters: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser ``cfg.optimizer`` names, as Dassl's build_optimizer makes it."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=cfg.lr, betas=ADAM_BETAS, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=cfg.lr, betas=ADAM_BETAS, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(parameters, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


ADAM_BETAS = (0.9, 0.999)
"""Dassl's OPTIM.ADAM_BETA1 and ADAM_BETA2 defaults."""


def epoch_line(entry: dict, epochs: int, seconds: float) -> str:
    """One plain line for a finished epoch (loss, accuracy, LR, time), for logs and non-terminal output."""
    loss = f"{entry['loss']:.4f}" if entry["loss"] is not None else "-"
    acc = f"{entry['acc']:.2f}%" if entry["acc"] is not None else "-"
    left = (epochs - entry["epoch"]) * seconds
    return (f"epoch {entry['epoch']}/{epochs}: loss {loss}, train accuracy {acc}, lr {entry['lr']:.3g}, "
            f"{seconds:.1f} s, about {left:.0f} s left")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_batch_split(cfg: TrainConfig, images: int, processes: int) -> None:
    """Every process trains on its share of every global batch: refuse a batch (or a training set) smaller
    than the number of processes, saying what to do."""
    if cfg.batch_size < processes:
        k = math.ceil(processes / cfg.batch_size)
        raise MetapromptError(
            f"train.batch_size={cfg.batch_size} cannot be split over {processes} processes: each trains on its share "
            f"of every global batch. Run at most {cfg.batch_size} processes, or raise the batch and scale the LR "
            f"with it, as MaPLe's authors advise for larger batches: --set batch_size={cfg.batch_size * k} "
            f"--set lr={cfg.lr * k:g} (a departure from the published config)")
    if images < processes:
        raise MetapromptError(f"the training set has {images} images, fewer than the {processes} processes that "
                              "would share it; run fewer processes")


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
    """Trains a method's prompts on labelled items; checkpoints into ``work_dir`` when given."""

    def __init__(self, method: PromptMethod, items: list[Datum], cfg: TrainConfig, *, domains: list[str] | None = None,
                 work_dir: str | Path | None = None, progress: bool | None = True, skip_bad_images: bool = False,
                 after_epoch: Callable[[int], None] | None = None):
        if not method.trainable_parameters():
            raise MetapromptError(f"method {method.name!r} has nothing to train")
        if not items:
            raise MetapromptError("the training split is empty")
        check_batch_split(cfg, len(items), dist.world_size())
        if cfg.precision == "fp16":
            raise MetapromptError(
                "train.precision=fp16 (mixed) would train without loss scaling, and small prompt gradients "
                "underflow to zero in fp16; train in bf16 (--set precision=bf16: as fast on GPUs since Ampere, "
                "no scaling needed) or fp32, or in fp16-pure to reproduce the released code's unscaled fp16. "
                "fp16 is for evaluation (metaprompt eval --precision fp16)")
        self.method, self.cfg = method, cfg
        self.after_epoch = after_epoch
        """Called with each whole epoch's number (1-based) on every process, before its checkpoint is written."""
        self.workers = loader_workers(cfg.num_workers, method.device)
        self.work_dir = Path(work_dir) if work_dir else None
        self.progress = progress_bars(progress) and dist.is_main()
        """Progress bars: on a terminal only. Without them a line per epoch (see epoch_line), unless ``progress`` is
        None (quiet)."""
        self.lines = progress is not None and dist.is_main() and not self.progress
        self.optimizer = build_optimizer(method.trainable_parameters(), cfg)
        clip = method.clip
        self.dataset = ImageDataset(items, train_transform(clip.image_size, clip.mean, clip.std, cfg.crop_scale_min),
                                    domains,
                                    seed=cfg.seed, skip_bad_images=skip_bad_images)
        self.loader = self._loader()
        self.feature_cache = (ViewFeatureCache(method, self.dataset, cfg.test_batch_size, self.workers)
                              if feature_cache_applies(method, cfg.augment_views) else None)
        self.pending: list[tuple[int, int, torch.Tensor]] = []
        """(step, TensorBoard step, step stats on the device) of the steps not read yet."""
        self.read_every = 1 if method.device.type == "cpu" else READ_EVERY_STEPS
        self.state = TrainState()
        self.scalars = ScalarLog()
        self.skipped_images = 0
        self.images_trained = 0
        """Images this process trained on (in this invocation: a resumed run counts from its resumption)."""
        self.step_flops: int | None = None
        """FLOPs of this process's first training step, counted (None before it)."""
        self.stop = StopRequest()

    def _loader(self) -> DataLoader:
        """Each process loads its share of every global batch. The sampler hands every index its epoch's
        augmentation view, so the workers persist across epochs; pinned memory on a GPU. The loader draws its
        workers' seeds from a generator of its own, so that starting an epoch leaves the global RNG as a
        resumed run finds it."""
        self.batches = dist.GlobalBatchSampler(len(self.dataset), self.cfg.batch_size, self.cfg.seed)
        return DataLoader(self.dataset, batch_sampler=self.batches, num_workers=self.workers,
                          collate_fn=collate, generator=torch.Generator().manual_seed(self.cfg.seed),
                          pin_memory=self.method.device.type == "cuda", persistent_workers=self.workers > 0)

    # ----------------------------------------------------------------- checkpoints
    @property
    def checkpoint_path(self) -> Path | None:
        return self.work_dir / CHECKPOINT_NAME if self.work_dir else None

    def save_checkpoint(self) -> None:
        """Trained tensors, optimiser, epoch / step and every RNG state, written atomically (rank 0)."""
        if self.checkpoint_path is None:
            return
        error = None
        if dist.is_main():
            try:
                self.scalars.flush(self.work_dir)
                save_checkpoint(self.checkpoint_path, {
                    "tensors": self.method.trained_tensors(),
                    "optimizer": self.optimizer.state_dict(),
                    "state": asdict(self.state),
                    "rng": rng_states(self.method.random_state(), self.method.device),
                    "method_state": self.method.training_state(),
                    "skipped_images": self.skipped_images,
                })
            except OSError as err:
                error = MetapromptError(f"could not write the checkpoint {self.checkpoint_path} ({err})")
        dist.fail_together(error)

    def try_resume(self) -> bool:
        """Load the checkpoint in ``work_dir`` if there is one; True when resumed."""
        path = self.checkpoint_path
        if path is None or not path.exists():
            return False
        payload = load_checkpoint(path)
        try:
            self.method.load_trained_tensors(payload["tensors"], source=str(path))
            self.optimizer.load_state_dict(payload["optimizer"])
            state = TrainState(**payload["state"])
            self.method.set_random_state(set_rng_states(payload["rng"], self.method.device))
            self.method.set_training_state(payload.get("method_state", {}))
        except MetapromptError:
            raise
        except Exception as err:  # noqa: BLE001 - a damaged file can fail in many ways
            detail = f"no {err}" if isinstance(err, KeyError) else str(err)
            raise MetapromptError(f"checkpoint {path} does not hold this run's training state ({detail}); delete it "
                                  "to start over") from None
        self.state = state
        self.skipped_images = payload.get("skipped_images", 0)
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
        with stop_on_signals(self.stop):
            for epoch in range(self.state.epoch, self.cfg.epochs):
                if self._budget_spent():
                    break
                self.run_epoch(epoch)
                whole = self.state.batch >= self.batches.num_batches  # not cut short by max_steps
                if whole:
                    self.method.on_epoch_end(epoch, self.cfg.epochs)
                self.state.epoch, self.state.batch = epoch + 1, 0
                if whole and self.after_epoch is not None:
                    self.after_epoch(epoch + 1)
                self.save_checkpoint()
            if dist.global_sum(torch.tensor(float(self.stop.requested))).item():
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
        view = epoch % self.cfg.augment_views if self.cfg.augment_views else epoch
        self.batches.set_epoch(epoch, start=self.state.batch, view=view)
        batches = self.feature_cache.epoch(view, self.loader.batch_sampler) if self.feature_cache else self.loader
        self.method.train()
        started = time.perf_counter()
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{self.cfg.epochs}", disable=not self.progress,
                   initial=self.state.batch, total=self.batches.num_batches, leave=False, dynamic_ncols=True)
        for raw, error in fetched(bar):
            if self._batch_usable(raw, error):
                self._train_step(raw, epoch)
            self.state.batch += 1
            if len(self.pending) >= self.read_every:
                self._read_stats(epoch, bar, lr)
            if self._budget_spent():
                break
        self._read_stats(epoch, bar, lr)
        losses, accs = self.state.epoch_losses, self.state.epoch_accs
        self.state.history.append({"epoch": epoch + 1, "lr": lr, "loss": float(np.mean(losses)) if losses else None,
                                   "acc": float(np.mean(accs)) if accs else None})
        self.state.epoch_losses, self.state.epoch_accs = [], []
        if self.lines:
            print(epoch_line(self.state.history[-1], self.cfg.epochs, time.perf_counter() - started), flush=True)

    def _batch_usable(self, raw: dict | None, error: MetapromptError | None) -> bool:
        """Whether every process has readable images (or their cached features) in this batch; if one has
        none, all skip the batch together. In the same collective call, all processes stop together once any
        of them met an error loading its share (each raises: that one its error) or got SIGTERM / SIGINT;
        skipped images are counted over all processes."""
        has_data, stop, skipped, failed = dist.global_sum(torch.tensor([
            float(raw is not None and "label" in raw), float(self.stop.requested),
            float(raw["skipped"] if raw is not None else 0), float(error is not None)])).tolist()
        if failed:
            raise error or dist.PeerError("another process stopped with an error while loading its images "
                                          "(that process printed it)")
        if stop:
            self._interrupt()
        self.skipped_images += int(skipped)
        return has_data == dist.world_size()

    def _train_step(self, raw: dict, epoch: int) -> None:
        """One optimisation step. Its loss and accuracy stay on the device until :meth:`_read_stats`. The
        FLOPs of this process's first step are counted (the ops run as they would)."""
        batch = to_batch(raw, self.method.device)
        if self.step_flops is None:
            with FlopCount() as counter:
                stats = self.method.forward_backward(batch, self.optimizer)
            self.step_flops = counter.flops
        else:
            stats = self.method.forward_backward(batch, self.optimizer)
        self.images_trained += int(batch.labels.shape[0])
        self.state.step += 1
        self.pending.append((self.state.step, epoch * self.batches.num_batches + self.state.batch, stats))

    def _read_stats(self, epoch: int, bar: tqdm | None, lr: float) -> None:
        """Read the pending steps' loss and accuracy in one transfer (and one collective call: their means
        over processes); a NaN or infinite loss on any process stops all of them before anything more is
        saved. Logs Dassl's TensorBoard tags at Dassl's step numbers."""
        if not self.pending:
            return
        means = (dist.global_sum(torch.stack([stats for _, _, stats in self.pending])) / dist.world_size()).tolist()
        for (step, n_iter, _), (loss, acc) in zip(self.pending, means):
            if not math.isfinite(loss):
                kept = (f"the last good checkpoint {self.checkpoint_path} is kept"
                        if self.checkpoint_path and self.checkpoint_path.is_file() else "no checkpoint was written")
                raise MetapromptError(f"loss became {loss} at step {step} (epoch {epoch + 1}); training "
                                      f"stopped and {kept}; try a lower lr or --set precision=fp32")
            self.state.epoch_losses.append(loss)
            self.state.epoch_accs.append(acc)
            if dist.is_main():
                for tag, value in (("train/loss", loss), ("train/acc", acc), ("train/lr", lr)):
                    self.scalars.add(tag, value, n_iter)
        self.pending = []
        if bar is not None:
            losses, accs = self.state.epoch_losses, self.state.epoch_accs
            bar.set_postfix(loss=f"{np.mean(losses):.4f}", acc=f"{np.mean(accs):.1f}", lr=f"{lr:.2e}")

    def _interrupt(self) -> None:
        """Checkpoint at the current batch (the resumed run continues with the next one) and stop."""
        self._read_stats(self.state.epoch, None, self.optimizer.param_groups[0]["lr"])
        self.save_checkpoint()
        state = self.state
        when = f"in epoch {state.epoch + 1} after batch {state.batch}" if state.batch else f"after epoch {state.epoch}"
        where = f" saved in {self.checkpoint_path}" if self.checkpoint_path else ""
        raise KeyboardInterrupt(f"stopped by a signal {when}; progress{where}: re-run the same command to resume")


@dataclass
class StopRequest:
    """Set by :func:`stop_on_signals` when SIGTERM or SIGINT arrives."""

    signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def stop_on_signals(request: StopRequest) -> Iterator[StopRequest]:
    """While inside: SIGTERM / SIGINT set ``request`` (the loop finishes its step, checkpoints and stops, all
    processes at the same batch); a second signal stops at once, keeping the last checkpoint. Outside the
    main thread, where no handler can be installed, signals keep their usual effect."""
    def handle(signum, frame):
        if request.requested:
            raise KeyboardInterrupt("stopped by a second signal; the last checkpoint is kept")
        request.signum = signum

    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def fetched(batches) -> Iterator[tuple[dict | None, MetapromptError | None]]:
    """``(batch, None)`` for each batch, then, if loading one fails (an unreadable image), ``(None, error)``
    and no more: the caller tells the other processes before it raises (see ``Trainer._batch_usable``)."""
    iterator = iter(batches)
    while True:
        try:
            raw = next(iterator)
        except StopIteration:
            return
        except MetapromptError as err:
            yield None, err
            return
        yield raw, None


def to_batch(raw: dict, device: torch.device) -> Batch:
    """A loader batch on ``device``: images, or the feature cache's ``features`` in their place."""
    images, features = raw.get("image"), raw.get("features")
    return Batch(images=images.to(device, non_blocking=True) if images is not None else None,
                 labels=raw["label"].to(device), domains=raw["domain"].to(device),
                 features=features.to(device) if features is not None else None)
