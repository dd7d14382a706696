"""Evaluation: the logits of a method over a list of images and its accuracy, in one process or sharded over
several (each evaluates its share and all receive the gathered logits)."""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import distributed as dist
from .data.base import Datum
from .data.dataset import ImageDataset, collate, loader_workers
from .data.transforms import decode_transform, normalize_batch
from .errors import MetapromptError
from .feature_store import FeatureStore
from .methods.base import PromptMethod, accuracy
from .runlog import progress_bars


@dataclass
class EvalResult:
    accuracy: float
    logits: torch.Tensor
    labels: torch.Tensor
    skipped_images: int = 0
    seconds: float = 0.0
    from_store: int = 0
    """Images whose frozen features came from the feature store instead of the image encoder."""


def class_details(result: EvalResult, classnames: list[str]) -> dict:
    """What Dassl's TEST.PER_CLASS_RESULT and TEST.COMPUTE_CMAT give, for ``result``'s logits over
    ``classnames``: per-class accuracy (%) (None for a class with no test image), macro-F1 (%) over the classes
    with test images, and the confusion matrix (rows: true class, columns: predicted)."""
    n = len(classnames)
    predicted = result.logits.argmax(-1) if len(result.labels) else result.labels
    confusion = torch.bincount(result.labels * n + predicted, minlength=n * n).reshape(n, n)
    support, hits, predicted_count = confusion.sum(1), confusion.diag(), confusion.sum(0)
    per_class = {name: (100.0 * float(hits[i]) / float(support[i]) if support[i] else None)
                 for i, name in enumerate(classnames)}
    f1 = [2.0 * float(hits[i]) / float(support[i] + predicted_count[i]) for i in range(n) if support[i]]
    return {"per_class_accuracy": per_class, "macro_f1": 100.0 * sum(f1) / len(f1) if f1 else None,
            "confusion": confusion.tolist()}


DECODED_BUDGET_BYTES = 4 * 2**30
"""Memory for decoded test images kept for the next evaluation on them (see :class:`DecodedImages`)."""


class DecodedImages:
    """Test images decoded, resized and centre-cropped once per process (uint8, ``size`` px), for the next
    evaluation on the same images: a sweep's other seeds and class subsets test on them again, and on a GPU
    decoding them is most of an evaluation's time. Kept until ``budget`` bytes are held; the values are
    those the evaluation would decode again (see :func:`~metaprompt.data.transforms.normalize_batch`)."""

    def __init__(self, budget: int = DECODED_BUDGET_BYTES):
        self.budget, self.held = budget, 0
        self.images: dict[tuple, torch.Tensor] = {}
        """(path, file size, mtime, size) -> image (an unreadable image is never kept: it is read, and skipped,
        again; a file changed since is decoded again)."""

    @staticmethod
    def _key(item: Datum, size: int) -> tuple | None:
        try:
            stat = os.stat(item.impath)
        except OSError:
            return None
        return item.impath, stat.st_size, stat.st_mtime_ns, size

    def lookup(self, items: list[Datum], size: int) -> list[torch.Tensor] | None:
        """Every item's stored image, or None unless all are stored."""
        found = [self.images.get(self._key(item, size)) for item in items]
        return None if any(image is None for image in found) else found

    def keep(self, item: Datum, size: int, image: torch.Tensor) -> None:
        key = self._key(item, size)
        if key is None:
            return
        if key not in self.images and self.held + image.numel() <= self.budget:
            self.images[key] = image
            self.held += image.numel()


DECODED = DecodedImages()


def evaluate(method: PromptMethod, items: list[Datum], batch_size: int = 100, num_workers: int | None = None,
             progress: bool = True, skip_bad_images: bool = False, desc: str = "evaluate",
             decoded: DecodedImages | None = DECODED, store: FeatureStore | None = None) -> EvalResult:
    """Logits of every item over the method's current classes, and the accuracy (%), in this process
    (``num_workers`` None: see :func:`metaprompt.data.dataset.loader_workers`). Images are decoded as uint8,
    normalised on the device, and kept in ``decoded`` for the next evaluation on them (None: not kept). With a
    ``store``, the frozen image features of a method that uses CLIP's own come from it, or are computed once
    and put there (see :mod:`metaprompt.feature_store`)."""
    if not items:
        raise MetapromptError("the evaluation split is empty")
    start = time.perf_counter()
    key = store.image_key(method.clip, items, batch_size) if store is not None and method.frozen_image_encoder \
        else None
    with method.evaluation():
        stored = store.load(key, len(items)) if key is not None else None
        if stored is not None:
            store.counts.images_served += len(items)
            logits = [method.model_inference(None, f.to(method.device)).float().cpu() for f in stored.split(batch_size)]
            labels = torch.tensor([item.label for item in items], dtype=torch.long)
            all_logits = torch.cat(logits)
            return EvalResult(accuracy(all_logits, labels), all_logits, labels, 0, time.perf_counter() - start,
                              from_store=len(items))
        logits, labels, features, skipped = [], [], [], 0
        for inputs, batch_labels, batch_skipped in _model_inputs(method, items, batch_size, num_workers,
                                                                 skip_bad_images, decoded, progress, desc):
            skipped += batch_skipped
            if inputs is None:
                continue
            if key is None:
                logits.append(method.model_inference(inputs).float().cpu())
            else:  # the same computation, with the features kept for the store
                batch_features = method.frozen_image_features(inputs)
                features.append(batch_features.cpu())
                logits.append(method.model_inference(None, batch_features).float().cpu())
            labels.append(batch_labels)
    if not logits:
        raise MetapromptError("no readable image in the evaluation split")
    if key is not None and not skipped:
        store.save(key, torch.cat(features))
        store.counts.images_computed += len(items)
    all_logits, all_labels = torch.cat(logits), torch.cat(labels)
    return EvalResult(accuracy(all_logits, all_labels), all_logits, all_labels, skipped, time.perf_counter() - start)


def image_features(method: PromptMethod, items: list[Datum], batch_size: int, num_workers: int | None,
                   progress: bool = True, skip_bad_images: bool = False, desc: str = "features"
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(``method.encode_images`` of every readable item under the test transform, their labels), in this
    process: the inputs of a method fitted in closed form."""
    if not items:
        raise MetapromptError(f"no images to take {desc} of")
    features, labels = [], []
    with torch.no_grad():
        for inputs, batch_labels, _ in _model_inputs(method, items, batch_size, num_workers, skip_bad_images,
                                                     DECODED, progress, desc):
            if inputs is None:
                continue
            features.append(method.encode_images(inputs).float().cpu())
            labels.append(batch_labels)
    if not features:
        raise MetapromptError(f"no readable image to take {desc} of")
    return torch.cat(features), torch.cat(labels)


def _model_inputs(method: PromptMethod, items: list[Datum], batch_size: int, num_workers: int | None,
                  skip_bad_images: bool, decoded: DecodedImages | None, progress: bool, desc: str):
    """(the batch normalised on the method's device, or None when none of it was readable; labels; skipped
    count) per batch of ``items``, with a progress bar."""
    clip = method.clip
    for images, labels, skipped in tqdm(
            _decoded_batches(items, clip.image_size, batch_size, num_workers, method.device, skip_bad_images, decoded),
            total=math.ceil(len(items) / batch_size), desc=desc, disable=not progress_bars(progress),
            leave=False,
            dynamic_ncols=True):
        inputs = None if images is None else normalize_batch(images.to(method.device, non_blocking=True),
                                                             clip.mean, clip.std)
        yield inputs, labels, skipped


def _decoded_batches(items: list[Datum], size: int, batch_size: int, num_workers: int | None, device: torch.device,
                     skip_bad_images: bool, decoded: DecodedImages | None):
    """(uint8 images or None, labels, skipped count) per batch of ``items``, from ``decoded`` when it holds
    them all, else loaded (and kept there)."""
    stored = decoded.lookup(items, size) if decoded is not None else None
    if stored is not None:
        for i in range(0, len(items), batch_size):
            yield (torch.stack(stored[i:i + batch_size]),
                   torch.tensor([item.label for item in items[i:i + batch_size]], dtype=torch.long), 0)
        return
    dataset = ImageDataset(items, decode_transform(size), skip_bad_images=skip_bad_images)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate,
                        num_workers=loader_workers(num_workers, device), pin_memory=device.type == "cuda")
    for raw in loader:
        if decoded is not None and "image" in raw:
            kept = raw["image"].clone()  # ordinary memory (not the loader's pinned or shared buffers), one per batch
            for index, image in zip(raw["index"].tolist(), kept):
                decoded.keep(items[index], size, image)
        yield raw.get("image"), raw.get("label"), raw["skipped"]


def evaluate_sharded(method: PromptMethod, items: list[Datum], batch_size: int, num_workers: int | None,
                     progress: bool = True, skip_bad_images: bool = False, desc: str = "test",
                     store: FeatureStore | None = None) -> EvalResult:
    """:func:`evaluate` over all ``items``; with several processes each evaluates its share (when every
    process has one) and all receive the gathered logits. Progress bars show on the main process only. An
    error on one process's share (an unreadable image) stops every process, none left waiting. The feature
    ``store`` serves one process only (several evaluate without it)."""
    sharded = dist.world_size() > 1 and len(items) >= dist.world_size()
    result, error = None, None
    try:
        result = evaluate(method, dist.shard(items) if sharded else items, batch_size, num_workers,
                          progress=progress and dist.is_main(), skip_bad_images=skip_bad_images, desc=desc,
                          store=store if dist.world_size() == 1 else None)
    except MetapromptError as err:
        error = err
    dist.fail_together(error)
    if not sharded:
        return result
    logits, labels = dist.gather_rows(result.logits), dist.gather_rows(result.labels)
    skipped = int(dist.global_sum(torch.tensor(result.skipped_images)).item())
    return EvalResult(accuracy(logits, labels), logits, labels, skipped, result.seconds)
