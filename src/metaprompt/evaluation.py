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
from .data.dataset import ImageDataset, collate, loader_workers
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


def evaluate(method: PromptMethod, items: list[Datum], batch_size: int = 100, num_workers: int | None = None,
             progress: bool = True, skip_bad_images: bool = False, desc: str = "evaluate") -> EvalResult:
    """Logits of every item over the method's current classes, and the accuracy (%), in this process
    (``num_workers`` None: see :func:`metaprompt.data.dataset.loader_workers`)."""
    if not items:
        raise MetapromptError("the evaluation split is empty")
    start = time.perf_counter()
    clip = method.clip
    dataset = ImageDataset(items, test_transform(clip.image_size, clip.mean, clip.std), skip_bad_images=skip_bad_images)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate,
                        num_workers=loader_workers(num_workers, method.device),
                        pin_memory=method.device.type == "cuda")
    logits, labels, skipped = [], [], 0
    with method.evaluation():
        for raw in tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
            skipped += raw["skipped"]
            if "image" not in raw:
                continue
            logits.append(method.model_inference(raw["image"].to(method.device, non_blocking=True)).float().cpu())
            labels.append(raw["label"])
    if not logits:
        raise MetapromptError("no readable image in the evaluation split")
    all_logits, all_labels = torch.cat(logits), torch.cat(labels)
    return EvalResult(accuracy(all_logits, all_labels), all_logits, all_labels, skipped, time.perf_counter() - start)


def evaluate_sharded(method: PromptMethod, items: list[Datum], batch_size: int, num_workers: int | None,
                     progress: bool = True, skip_bad_images: bool = False, desc: str = "test") -> EvalResult:
    """:func:`evaluate` over all ``items``; with several processes each evaluates its share (when every
    process has one) and all receive the gathered logits. Progress bars show on the main process only. An
    error on one process's share (an unreadable image) stops every process, none left waiting."""
    sharded = dist.world_size() > 1 and len(items) >= dist.world_size()
    result, error = None, None
    try:
        result = evaluate(method, dist.shard(items) if sharded else items, batch_size, num_workers,
                          progress=progress and dist.is_main(), skip_bad_images=skip_bad_images, desc=desc)
    except MetapromptError as err:
        error = err
    dist.fail_together(error)
    if not sharded:
        return result
    logits, labels = dist.gather_rows(result.logits), dist.gather_rows(result.labels)
    skipped = int(dist.global_sum(torch.tensor(result.skipped_images)).item())
    return EvalResult(accuracy(logits, labels), logits, labels, skipped, result.seconds)
