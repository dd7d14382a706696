"""Frozen image features of the training set, encoded once per augmented view.

A method with a frozen image encoder and no visual prompts (CoOp, CoCoOp) sees a training image only
through CLIP's own image features. The training dataset draws every augmentation from (seed, view, index)
(see :mod:`metaprompt.data.dataset`), so with ``augment_views = V`` a run has exactly V distinct inputs per
image. The first epoch that uses a view encodes the whole training set at that view once (in index order,
without gradients); that epoch and every later one with the same view then train from the stored features,
in the sampler's order, and neither load an image nor run the image encoder. The numbers are those of the
uncached run: the same inputs go through the same encoder.

With ``augment_views = 0`` (a new view every epoch) no input repeats, so there is nothing to cache and the
cache stays off.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import BatchSampler, DataLoader

from .data.dataset import ImageDataset, collate
from .methods.base import PromptMethod


def feature_cache_applies(method: PromptMethod, augment_views: int) -> bool:
    """The cache is exact and useful: CLIP's own image features, and views that repeat."""
    return method.frozen_image_encoder and method.options.cache_image_features and augment_views > 0


class ViewFeatureCache:
    """Normalised frozen image features of every item of ``dataset``, one table per view, filled on first use.

    Items whose image could not be read (``skip_bad_images``) have no features; cached epochs skip and
    count them as the image loader does.
    """

    def __init__(self, method: PromptMethod, dataset: ImageDataset, batch_size: int, num_workers: int):
        self.method, self.dataset = method, dataset
        self.batch_size, self.num_workers = batch_size, num_workers
        self.labels = torch.tensor([item.label for item in dataset.items], dtype=torch.long)
        self.domains = torch.tensor([dataset.domain_index.get(item.domain, 0) for item in dataset.items],
                                    dtype=torch.long)
        self.views: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        """view -> (features [N, D] on the method's device, readable [N] bool)."""
        self.encoded_images = 0

    def epoch(self, view: int, batches: BatchSampler) -> "CachedEpoch":
        """The batches of one epoch at ``view``, encoding the view first if it is not stored yet."""
        if view not in self.views:
            self.views[view] = self._encode(view)
        features, readable = self.views[view]
        return CachedEpoch(self, features, readable, batches)

    @torch.no_grad()
    def _encode(self, view: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.dataset.set_view(view)
        # The dataset seeds every augmentation itself; a generator of the loader's own keeps its worker seed
        # draw off the global RNG, which a resumed run must find as it was.
        loader = DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False,
                            num_workers=self.num_workers, collate_fn=collate, generator=torch.Generator())
        n, device = len(self.dataset), self.method.device
        features = torch.zeros(n, self.method.clip.embed_dim, device=device)
        readable = torch.zeros(n, dtype=torch.bool)
        for raw in loader:
            if "image" not in raw:
                continue
            features[raw["index"].to(device)] = self.method.frozen_image_features(raw["image"].to(device))
            readable[raw["index"]] = True
            self.encoded_images += len(raw["index"])
        return features, readable


class CachedEpoch:
    """One epoch's batches in the order of ``batches`` (the training loader's batch sampler), as ``collate``
    returns them, with the stored ``features`` in place of ``image``."""

    def __init__(self, cache: ViewFeatureCache, features: torch.Tensor, readable: torch.Tensor,
                 batches: BatchSampler):
        self.cache, self.features, self.readable, self.batches = cache, features, readable, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[dict]:
        for indices in self.batches:  # (index, view) pairs from the training sampler: the view is this epoch's
            index = torch.as_tensor([k[0] if isinstance(k, tuple) else k for k in indices], dtype=torch.long)
            kept = index[self.readable[index]]
            raw = {"skipped": len(index) - len(kept)}
            if len(kept):
                raw.update(features=self.features[kept.to(self.features.device)], label=self.cache.labels[kept],
                           domain=self.cache.domains[kept], index=kept)
            yield raw
