"""The torch dataset over :class:`Datum` items, with reproducible augmentation.

Each training image's random crop and flip are drawn from a generator seeded by (seed, view, index), so
the same sample gets the same augmented view in one process or many, after a resume, and with or without
the image-feature cache. ``view`` is the epoch, or ``epoch % augment_views`` when a fixed number of views
per image is asked for.
"""
from __future__ import annotations

import os
from typing import Callable

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..errors import MetapromptError
from .base import Datum

SEED_STRIDE = 1_000_003


class ImageError(MetapromptError):
    """An unreadable image. Raised in a DataLoader worker, torch re-raises it in the main process as
    ``ImageError(message + worker traceback)``; the constructor keeps the original one-line message."""

    def __init__(self, message: str):
        wrapped = message.startswith(f"Caught {type(self).__name__} ")
        super().__init__(message.rpartition(f"{type(self).__qualname__}: ")[2].strip() if wrapped else message)


class ImageDataset(Dataset):
    """Items -> dicts with ``image``, ``label``, ``domain`` (index into ``domains``) and ``index``."""

    def __init__(self, items: list[Datum], transform: Callable, domains: list[str] | None = None,
                 seed: int | None = None, skip_bad_images: bool = False):
        self.items = items
        self.transform = transform
        self.domain_index = {d: i for i, d in enumerate(domains or [])}
        self.seed = seed
        self.view = 0
        self.skip_bad_images = skip_bad_images

    def __len__(self) -> int:
        return len(self.items)

    def set_view(self, view: int) -> None:
        self.view = view

    def __getitem__(self, key: int | tuple[int, int]) -> dict | None:
        """Item ``key``, or ``(index, view)``: the item at that augmentation view (as the training sampler
        hands them, so that persistent workers follow the epoch); a plain index uses :attr:`view`."""
        index, view = key if isinstance(key, tuple) else (key, self.view)
        item = self.items[index]
        image = load_image(item.impath, self.skip_bad_images)
        if image is None:
            return None
        if self.seed is None:
            tensor = self.transform(image)
        else:
            with torch.random.fork_rng(devices=[]):
                # The CPU generator alone draws the crop and flip: torch.manual_seed would also queue a
                # CUDA seeding call (with a stack trace) on every image of a CUDA build of torch.
                torch.default_generator.manual_seed((self.seed * SEED_STRIDE + view) * SEED_STRIDE + index)
                tensor = self.transform(image)
        return {"image": tensor, "label": item.label, "domain": self.domain_index.get(item.domain, 0), "index": index}


def load_image(path: str, skip_bad: bool = False) -> Image.Image | None:
    """The RGB image at ``path``; a missing, truncated or non-image file is a clear error (or None when
    ``skip_bad``)."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        if skip_bad:
            return None
        raise ImageError(f"image file {path} is missing (named by the dataset's split)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        if skip_bad:
            return None
        raise ImageError(f"image file {path} is truncated or not an image ({err}); "
                         "pass --skip-bad-images to skip such files and count them") from None


MAX_GPU_WORKERS = 8


def loader_workers(requested: int | None, device: torch.device) -> int:
    """Data-loading worker processes: ``requested``, or by default 2 on the CPU (which the training itself
    needs) and, on a GPU, this node's CPU cores shared by its processes (at most 8)."""
    if requested is not None:
        return requested
    if torch.device(device).type != "cuda":
        return 2
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return max(1, min(MAX_GPU_WORKERS, cores // per_node - 1))


def collate(samples: list[dict | None]) -> dict:
    """Stack samples, dropping skipped (bad) images and counting them under ``skipped``."""
    good = [s for s in samples if s is not None]
    out = {"skipped": len(samples) - len(good)}
    if not good:
        return out
    out["image"] = torch.stack([s["image"] for s in good])
    for key in ("label", "domain", "index"):
        out[key] = torch.tensor([s[key] for s in good], dtype=torch.long)
    return out
