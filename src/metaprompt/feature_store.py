"""The frozen-feature store of a sweep: what frozen encoders compute is the same for every run that asks, so
it is computed once and shared by all runs and workers of the sweep, under ``OUT/.sweep/features/``.

- **Test image features** of a split under the test transform, for every evaluation whose logits use
  CLIP's own image features (zero-shot, CoOp, CoCoOp: ``PromptMethod.frozen_image_encoder``). A sweep's
  other seeds, and its other methods, test on the same images.
- **Hand-crafted text classifiers** (the template ensembles of zero-shot CLIP, VPT and MetaPrompt's frozen
  text branch), per class list and template set.

An entry is keyed by everything that determines it: the model name and its weights (the pretrained tag, or
the SHA-256 of a weights file), the precision, the device type and torch version, the transform and the
batch size it was computed at (so that the store gives the very bits a recomputation would), and each image's
path, size and modification time (or the class names and templates). Random weights are never stored. Entries
are safetensors files written atomically, with the SHA-256 of their tensor in their metadata: an entry that
does not match, or does not read, is recomputed and rewritten, never trusted. With the store on, results are
those with it off, bit for bit (tests/test_feature_store.py).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import MetapromptError
from .files import atomic_write

if TYPE_CHECKING:
    from .clip import PromptCLIP
    from .data.base import Datum

FORMAT = "metaprompt-feature-store-1"
TEST_TRANSFORM = "resize the shorter side to size (bicubic), centre crop, normalise by mean and std"


@dataclass
class StoreCounts:
    """What the store served and computed in this process (for the cost records)."""

    images_served: int = 0
    images_computed: int = 0
    classifiers_served: int = 0
    classifiers_computed: int = 0
    rejected: int = 0
    """Entries found but not trusted (unreadable, or not matching their key or checksum), recomputed."""


class FeatureStore:
    """Entries under ``folder`` (see the module docstring)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.counts = StoreCounts()

    # ------------------------------------------------------------ image features
    def image_key(self, clip: "PromptCLIP", items: list["Datum"], batch_size: int) -> str | None:
        """The entry name for ``items``' test features, or None when they cannot be stored (random weights, an
        image that cannot be read)."""
        model = model_identity(clip)
        if model is None:
            return None
        images = []
        for item in items:
            try:
                stat = os.stat(item.impath)
            except OSError:
                return None
            images.append([item.impath, stat.st_size, stat.st_mtime_ns])
        return _digest({"kind": "test image features", **model, "transform": TEST_TRANSFORM,
                        "image_size": clip.image_size, "mean": list(clip.mean), "std": list(clip.std),
                        "batch_size": batch_size, "images": images})

    def load(self, key: str, rows: int) -> torch.Tensor | None:
        """The entry's tensor when it is there, reads, and matches its key, row count and checksum."""
        path = self.folder / f"{key}.safetensors"
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                tensor = f.get_tensor("features")
        except Exception:  # a torn or overwritten file: any error in reading it means recompute
            self.counts.rejected += 1
            return None
        if (metadata.get("format") != FORMAT or metadata.get("key") != key or tensor.shape[0] != rows
                or metadata.get("sha256") != _tensor_digest(tensor)):
            self.counts.rejected += 1
            return None
        return tensor

    def save(self, key: str, tensor: torch.Tensor) -> None:
        """Write an entry atomically (a worker that loses a race rewrites the same bytes)."""
        tensor = tensor.detach().cpu().contiguous()
        metadata = {"format": FORMAT, "key": key, "sha256": _tensor_digest(tensor)}
        path = self.folder / f"{key}.safetensors"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda tmp: save_file({"features": tensor}, str(tmp), metadata=metadata))
        except OSError as err:
            raise MetapromptError(f"cannot write the feature store entry {path} ({err.strerror})") from None

    # ------------------------------------------------------------ text classifiers
    def classifier(self, clip: "PromptCLIP", classnames: list[str], templates: tuple[str, ...],
                   compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The hand-crafted classifier of ``classnames`` over ``templates``: stored, or computed and stored."""
        model = model_identity(clip)
        if model is None:
            return compute()
        key = _digest({"kind": "text classifier", **model, "classnames": list(classnames),
                       "templates": list(templates), "truncate_context": clip.truncate_context})
        stored = self.load(key, len(classnames))
        if stored is not None:
            self.counts.classifiers_served += 1
            return stored.to(clip.device)
        computed = compute()
        self.save(key, computed)
        self.counts.classifiers_computed += 1
        return computed


def model_identity(clip: "PromptCLIP") -> dict | None:
    """What determines a frozen encoder's outputs besides its inputs; None for random weights."""
    from .world import WORLD_MODEL

    name, pretrained = clip.source.name, clip.source.pretrained
    if pretrained is not None and Path(pretrained).is_file():
        weights = "sha256:" + file_digest(str(Path(pretrained).resolve()), *_stat(pretrained))
    elif pretrained is not None:
        weights = f"tag:{pretrained}"
    elif name == WORLD_MODEL:
        from importlib import resources

        from .world.model import SHIPPED_CHECKPOINT

        with resources.as_file(resources.files("metaprompt.world") / SHIPPED_CHECKPOINT) as shipped:
            weights = "sha256:" + file_digest(str(shipped), *_stat(str(shipped)))
    elif name.startswith("hf-hub:"):
        weights = "the hub model's own"
    else:
        return None
    if Path(name).is_file():  # a model config JSON: its contents, not its path
        name = "config-sha256:" + file_digest(str(Path(name).resolve()), *_stat(name))
    return {"format": FORMAT, "model": name, "weights": weights, "precision": clip.precision,
            "device": clip.device.type, "torch": torch.__version__}


def _stat(path: str) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


@lru_cache(maxsize=64)
def file_digest(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file, once per process for each (path, size, mtime)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _tensor_digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()
