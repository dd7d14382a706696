"""Contrastive pretraining of the world's tiny CLIP on rendered images and imperfect captions.

Images come from a pool rendered once (its own random stream, disjoint from any benchmark world's
images); every step draws a batch from the pool, shifts and flips it, and writes fresh captions for
it. Everything random follows the seed, and the run is a fixed number of steps, so the same seed
gives the same checkpoint on the same machine with the same number of threads (floating-point sums
are split differently across threads).
"""
from __future__ import annotations

import math
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch
from open_clip.loss import ClipLoss
from open_clip.model import CLIP
from tqdm import tqdm

from .captions import CaptionStyle, caption, caption_vocabulary
from .domains import DOMAINS
from .model import build_model, model_config, save_world_clip
from .recipe import BATCH_SIZE, DEFAULT_STEPS, LEARNING_RATE, MAX_SHIFT, POOL_PER_CLASS, WARMUP_STEPS, WEIGHT_DECAY
from .render import CLASS_FOLDERS, IMAGE_SIZE, colour_and_shape, image_rng, render_image
from .tokenizer import WorldTokenizer

NUM_CLASSES = len(CLASS_FOLDERS)


def render_pool(seed: int, per_class: int, progress: bool = True) -> torch.Tensor:
    """``per_class`` pretraining images of every class in every domain: uint8 ``[D, C, per_class, 3, S, S]``."""
    keys = [(d, label, i) for d in DOMAINS for label in range(NUM_CLASSES) for i in range(per_class)]
    images = [render_image(d, label, image_rng(seed, "pretrain", d, label, i))
              for d, label, i in tqdm(keys, desc="rendering pretraining images", unit="img", disable=not progress)]
    stacked = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    return stacked.reshape(len(DOMAINS), NUM_CLASSES, per_class, *stacked.shape[1:]).contiguous()


def sample_batch(pool: torch.Tensor, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, list[int], list[int]]:
    """A batch of pool images of ``batch_size`` DISTINCT classes, each in a random domain: with only 60
    classes, two images of one class in a batch would be false negatives of the contrastive loss.
    Returns the images and their labels and domain indices."""
    domains, classes, per_class = pool.shape[:3]
    if not 1 <= batch_size <= classes:
        raise ValueError(f"batch size must be between 1 and the number of classes ({classes}), got {batch_size}")
    labels = torch.randperm(classes, generator=generator)[:batch_size]
    domain = torch.randint(0, domains, (batch_size,), generator=generator)
    index = torch.randint(0, per_class, (batch_size,), generator=generator)
    return pool[domain, labels, index], labels.tolist(), domain.tolist()


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images scaled to 0..1, rounded to 4 decimals."""
    x = images.float().div(255).transpose(0, 1).reshape(3, -1)
    return tuple(round(v, 4) for v in x.mean(1).tolist()), tuple(round(v, 4) for v in x.std(1).tolist())


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shifts of up to ``MAX_SHIFT`` pixels (reflect padding) and horizontal flips."""
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (MAX_SHIFT,) * 4, mode="reflect")
    dx, dy = torch.randint(0, 2 * MAX_SHIFT + 1, (2, n), generator=generator).tolist()
    shifted = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    flip = torch.rand(n, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], shifted.flip(-1), shifted)


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up to ``peak``, then cosine decay to 0."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _optimizer(model: CLIP, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; like open_clip's training, no weight decay on gains, biases and the logit scale."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "logit_scale" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "logit_scale" in n]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


def pretrain(out_file: str | Path, seed: int = 0, steps: int = DEFAULT_STEPS, *, batch_size: int = BATCH_SIZE,
             lr: float = LEARNING_RATE, pool_per_class: int = POOL_PER_CLASS,
             captions: CaptionStyle = CaptionStyle(), progress: bool = True) -> Path:
    """Pretrain the world CLIP from scratch for ``steps`` steps and write it to ``out_file``."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    caption_rng = np.random.default_rng([seed, 1])
    pool = render_pool(seed, pool_per_class, progress)
    mean, std = channel_stats(pool.flatten(0, 2))
    tokenizer = WorldTokenizer.from_texts(caption_vocabulary())
    config = model_config(tokenizer.vocab_size, IMAGE_SIZE, tokenizer.context_length)
    model = build_model(config).train()
    optimizer = _optimizer(model, lr, WEIGHT_DECAY)
    loss_fn = ClipLoss()
    mean_t, std_t = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    domain_names = list(DOMAINS)
    bar = tqdm(range(steps), desc="pretraining world CLIP", unit="step", disable=not progress)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, lr, WARMUP_STEPS)
        images, labels, domains = sample_batch(pool, batch_size, generator)
        images = (augment(images, generator).float() / 255 - mean_t) / std_t
        texts = [caption(*colour_and_shape(c), domain_names[d], caption_rng, captions) for c, d in zip(labels, domains)]
        image_features, text_features, logit_scale = model(images, tokenizer(texts))
        loss = loss_fn(image_features, text_features, logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    extra = {"seed": seed, "steps": steps, "batch_size": batch_size, "lr": lr, "pool_per_class": pool_per_class,
             "captions": asdict(captions), "version": _version()}
    save_world_clip(out_file, model.eval(), config, tokenizer, mean, std, extra)
    return Path(out_file)


def _version() -> str:
    try:
        return version("metaprompt-vl")
    except PackageNotFoundError:
        return "unknown"
