"""From a dataset on disk to the items one run trains and tests on: few-shot draw, base / new classes,
leave-one-domain-out."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .data.base import DatasetSplits
from .data.fewshot import dg_task, fewshot_splits, subsample_classes
from .data.registry import build_dataset
from .errors import MetapromptError


@dataclass(frozen=True)
class TaskSpec:
    dataset: str
    root: str
    classes: str = "all"
    """``base``, ``new`` or ``all`` classes (base-to-new splits the sorted labels in halves)."""
    shots: int = 16
    """Training images per class (per class per source domain with a target domain); 0 = all."""
    seed: int = 1
    target: str | None = None
    """Leave-one-domain-out target domain (domain generalisation)."""


def build_task(spec: TaskSpec, cache_dir: str | Path | None = None, splits: DatasetSplits | None = None) -> DatasetSplits:
    """The run's train / val / test items and class names. The few-shot draw is cached in ``cache_dir``."""
    splits = splits or build_dataset(spec.dataset, spec.root)
    if spec.target:
        if spec.shots < 1:
            raise MetapromptError("domain generalisation draws shots per class per source domain: "
                                  f"expected shots >= 1, got {spec.shots}")
        return dg_task(splits, spec.target, spec.shots, spec.seed, cache_dir)
    if spec.shots:
        splits = fewshot_splits(splits, spec.shots, spec.seed, cache_dir)
    return subsample_classes(splits, spec.classes)
