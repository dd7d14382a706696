"""Evaluation: the logits of a method over a list of images and its accuracy, in one process or sharded over
several (each evaluates its share and all receive the gathered logits)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import distributed as dist
from .data.base import Datum
from .data.dataset import ImageDataset, collate
from .data.transforms import test_transform
from .errors import MetapromptError
from .methods.base import PromptMethod, accuracy


@dataclass
class EvalResult:
    accuracy: float
    logits: torch.Tensor
    labels: torch.Tensor
    skipped_images: int = 0
    seconds: float = 0.0


def evaluate(method: PromptMethod, items: list[Datum], batch_size: int = 100, num_workers: int = 2,
             progress: bool = True, skip_bad_images: bool = False, desc: str = "evaluate") -> EvalResult:
    """Logits of every item over the method's current classes, and the accuracy (%), in this process."""
    if not items:
        raise MetapromptError("the evaluation split is empty")
    start = time.perf_counter()
    clip = method.clip
    dataset = ImageDataset(items, test_transform(clip.image_size, clip.mean, clip.std), skip_bad_images=skip_bad_images)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate)
    logits, labels, skipped = [], [], 0
    with method.evaluation():
        for raw in tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
            skipped += raw["skipped"]
            if "image" not in raw:
                continue
            logits.append(method.model_inference(raw["image"].to(method.device)).float().cpu())
            labels.append(raw["label"])
    if not logits:
        raise MetapromptError("no readable image in the evaluation split")
    all_logits, all_labels = torch.cat(logits), torch.cat(labels)
    return EvalResult(accuracy(all_logits, all_labels), all_logits, all_labels, skipped, time.perf_counter() - start)


def evaluate_sharded(method: PromptMethod, items: list[Datum], batch_size: int, num_workers: int,
                     progress: bool = True, skip_bad_images: bool = False, desc: str = "test") -> EvalResult:
    """:func:`evaluate` over all ``items``; with several processes each evaluates its share (when every
    process has one) and all receive the gathered logits. Progress bars show on the main process only."""
    sharded = dist.world_size() > 1 and len(items) >= dist.world_size()
    result = evaluate(method, dist.shard(items) if sharded else items, batch_size, num_workers,
                      progress=progress and dist.is_main(), skip_bad_images=skip_bad_images, desc=desc)
    if not sharded:
        return result
    logits, labels = dist.gather_rows(result.logits), dist.gather_rows(result.labels)
    skipped = int(dist.global_sum(torch.tensor(result.skipped_images)).item())
    return EvalResult(accuracy(logits, labels), logits, labels, skipped, result.seconds)
