"""From a dataset on disk to the items one run trains and tests on: few-shot draw, base / new classes,
leave-one-domain-out; or the draw a run recorded (its fewshot.json), to resume it on the same images.

A :class:`TaskSpec` names the data (dataset, root, classes, target domain); the draw (shots, seed) is the
run's training configuration's (``cfg.train.shots``, ``cfg.train.seed``), passed to :func:`build_task`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .data.base import DatasetSplits
from .data.fewshot import dg_task, fewshot_splits, leave_one_domain_out, recorded_items, subsample_classes
from .data.registry import build_dataset


@dataclass(frozen=True)
class TaskSpec:
    dataset: str
    root: str
    classes: str = "all"
    """``base``, ``new`` or ``all`` classes (base-to-new splits the sorted labels in halves)."""
    target: str | None = None
    """Leave-one-domain-out target domain (domain generalisation)."""


def build_task(spec: TaskSpec, shots: int = 0, seed: int = 1, splits: DatasetSplits | None = None,
               recorded: dict | None = None, source: str | Path = "fewshot.json") -> DatasetSplits:
    """The run's train / val / test items and class names: ``shots`` per class (per class per source domain
    with a target domain; 0 = all) drawn from ``seed``, or (``recorded``, the content of a run's fewshot.json,
    read from ``source``) the images a run recorded. The draw covers all classes before base / new are
    taken, as CoOp's readers draw. ``splits`` is the dataset as read (read from ``spec`` when not given)."""
    splits = splits or build_dataset(spec.dataset, spec.root)
    if spec.target:
        if recorded:
            return recorded_items(recorded, source, splits, leave_one_domain_out(splits, spec.target))
        if not shots:  # all the source images; the test set is the target's, as the protocol defines it
            return leave_one_domain_out(splits, spec.target)
        return dg_task(splits, spec.target, shots, seed)
    if recorded:
        drawn = recorded_items(recorded, source, splits, splits)
    elif shots:
        drawn = fewshot_splits(splits, shots, seed)
    else:
        drawn = splits
    return subsample_classes(drawn, spec.classes)
