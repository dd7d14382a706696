"""Few-shot subsets, base / new class halves, and leave-one-domain-out tasks (method doc section 5), drawn
as the reference readers draw them.

Dassl's ``generate_fewshot_dataset`` (and the released MetaPrompt DG readers' copy of it, per domain) groups
a split's items by label (by domain, then label) in the order they first appear in the split, and for each
group takes ``random.sample(group, K)``, or the whole group when it has fewer than K items (without drawing a
random number). Train is drawn first, then val (``min(K, 4)`` shots) from the same stream, seeded by the run's
seed. So, reading items in the reference's order (see the readers), the same seed picks the same images.

A draw is recorded in the run folder as ``fewshot.json`` (:func:`draw_record`): the images trained and
validated on, as paths relative to the dataset's image folder (valid when the data root moves, unlike the
reference's pickles of absolute paths), and the classes that had fewer images than the shots asked for.
A run that finds its record (a resumed run) takes its images from it (:func:`recorded_items`).
"""
from __future__ import annotations

import math
import os
import random
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import MetapromptError
from .base import Datum, DatasetSplits, FewShot

VAL_SHOTS_CAP = 4  # val = min(K, 4) shots per class, as in CoOp
SUBSETS = ("base", "new", "all")
# Which of the reader's splits hold a target domain's test images, where it is not ``test``: PACS tests
# on the target's train + crossval lists. (OfficeHome's reader already puts the whole domain in test;
# VLCS, DomainNet and world_dg test on the target's test split.)
DG_TARGET_SPLITS: dict[str, tuple[str, ...]] = {"pacs": ("train", "val")}
DEFAULT_TARGET_SPLITS = ("test",)
DG_VAL_SPLITS: dict[str, str] = {"domainnet": "test"}
"""Where a DG dataset's val shots come from, where it is not ``val``: the released DomainNet reader draws
them from the source domains' test lists."""


@dataclass(frozen=True)
class Shortfall:
    """A class (in a domain) that had fewer images than the shots asked for: all of them were taken."""

    classname: str
    domain: str
    images: int
    shots: int

    def as_dict(self) -> dict:
        return {"class": self.classname, "domain": self.domain, "images": self.images, "shots": self.shots}


def _groups(items: list[Datum], per_domain: bool) -> list[list[Datum]]:
    """Items grouped by label (by domain, then label), groups in first-appearance order, items in split order."""
    by_domain: dict[str, dict[int, list[Datum]]] = {}
    for item in items:
        by_domain.setdefault(item.domain if per_domain else "", {}).setdefault(item.label, []).append(item)
    return [group for labels in by_domain.values() for group in labels.values()]


def draw(items: list[Datum], shots: int, rng: random.Random, per_domain: bool = False) -> list[Datum]:
    """``shots`` items of each group (all of a group that has fewer), as the reference draws them."""
    if shots < 1:
        raise MetapromptError(f"shots must be at least 1, got {shots}")
    return [d for group in _groups(items, per_domain)
            for d in (rng.sample(group, shots) if len(group) >= shots else group)]


def few_shot(items: list[Datum], shots: int, seed: int, per_domain: bool = False) -> list[Datum]:
    """``shots`` items per class (per class and domain when ``per_domain``), drawn from ``seed``."""
    return draw(items, shots, random.Random(seed), per_domain)


def fewshot_splits(splits: DatasetSplits, shots: int, seed: int) -> DatasetSplits:
    """``splits`` with train = ``shots`` per class and val = min(shots, 4) per class drawn from val (from
    train when the dataset has no val; none drawn when val is the test set, as for ImageNet)."""
    if not splits.train:
        raise MetapromptError(f"{splits.name}: has no training images to draw {shots} shots per class from "
                              "(it is a test-only dataset)")
    rng = random.Random(seed)
    train = draw(splits.train, shots, rng)
    val = draw(splits.val or splits.train, min(shots, VAL_SHOTS_CAP), rng) if splits.draw_val else splits.val
    return splits.with_items(train=train, val=val, fewshot=FewShot(shots, seed, common_image_folder(splits)))


def subsample_classes(splits: DatasetSplits, which: str) -> DatasetSplits:
    """Keep the ``base`` classes (the first ceil(n/2) labels), the ``new`` ones (the rest) or ``all``,
    relabelled from 0, in train, val and test."""
    if which not in SUBSETS:
        raise MetapromptError(f"unknown class subset {which!r}; expected one of: {', '.join(SUBSETS)}")
    if which == "all":
        return splits
    half = math.ceil(splits.num_classes / 2)
    kept = range(half) if which == "base" else range(half, splits.num_classes)
    new_label = {old: new for new, old in enumerate(kept)}

    def relabel(items: list[Datum]) -> list[Datum]:
        return [replace(d, label=new_label[d.label]) for d in items if d.label in new_label]

    return splits.with_items(classnames=[splits.classnames[i] for i in kept], train=relabel(splits.train),
                             val=relabel(splits.val), test=relabel(splits.test))


def leave_one_domain_out(splits: DatasetSplits, target: str) -> DatasetSplits:
    """``target`` left out: train / val = the source domains' train / val items (val from where the released
    reader takes it; train when the dataset has none), test = the target's test images as the protocol defines
    them. ``domains`` lists the source domains, in the dataset's order (their ids in the released code)."""
    if target not in splits.domains:
        known = ", ".join(splits.domains) or "(none: not a domain-generalisation dataset)"
        raise MetapromptError(f"{splits.name}: unknown target domain {target!r}; expected one of: {known}")
    sources = [d for d in splits.domains if d != target]
    train_pool = [d for d in splits.train if d.domain in sources]
    val_pool = [d for d in getattr(splits, DG_VAL_SPLITS.get(splits.name, "val")) if d.domain in sources]
    test = _domain_test_items(splits, {target})
    if not test:
        raise MetapromptError(f"{splits.name}: no test images for target domain {target!r} "
                              f"(looked in its {' and '.join(_target_splits(splits))} split)")
    return splits.with_items(train=train_pool, val=val_pool or train_pool, test=test, domains=sources)


def dg_task(splits: DatasetSplits, target: str, shots: int, seed: int) -> DatasetSplits:
    """Leave ``target`` out and draw ``shots`` / min(shots, 4) per class per source domain from the sources'
    train / val items, as the released MetaPrompt DG readers do."""
    if shots < 1:
        raise MetapromptError("domain generalisation draws shots per class per source domain: "
                              f"expected shots >= 1, got {shots}")
    pools = leave_one_domain_out(splits, target)
    rng = random.Random(seed)
    train = draw(pools.train, shots, rng, per_domain=True)
    val = draw(pools.val, min(shots, VAL_SHOTS_CAP), rng, per_domain=True)
    return pools.with_items(train=train, val=val,
                            fewshot=FewShot(shots, seed, common_image_folder(splits), per_domain=True))


def shortfalls(task: DatasetSplits) -> list[Shortfall]:
    """The classes (per source domain in domain generalisation) of a drawn task with fewer training images
    than its shots: the reference takes all the images such a class has."""
    if task.fewshot is None:
        return []
    shots, per_domain = task.fewshot.shots, task.fewshot.per_domain
    domains = task.domains if per_domain else [""]
    counts = Counter((d.domain if per_domain else "", d.label) for d in task.train)
    return [Shortfall(name, domain, counts[(domain, label)], shots)
            for domain in domains for label, name in enumerate(task.classnames) if counts[(domain, label)] < shots]


def shortfall_summary(task: DatasetSplits) -> dict:
    """How many classes fell short and by how many images in all (for result.json and the run's log line)."""
    short = shortfalls(task)
    return {"classes": len(short), "missing_images": sum(s.shots - s.images for s in short)}


def dg_source_test(task: DatasetSplits, splits: DatasetSplits) -> DatasetSplits:
    """``task`` (a :func:`dg_task` result) with test = its source domains' images in the splits the protocol
    tests a target domain on, less the training shots: the accuracy on the domains a prompt was tuned on,
    to set beside the held-out domain's."""
    trained = {d.impath for d in task.train}
    test = [d for d in _domain_test_items(splits, set(task.domains)) if d.impath not in trained]
    if not test:
        raise MetapromptError(f"{splits.name}: no test images in the source domains {', '.join(task.domains)}")
    return task.with_items(test=test)


def _domain_test_items(splits: DatasetSplits, domains: set[str]) -> list[Datum]:
    """The images of ``domains`` that a leave-one-domain-out protocol tests on."""
    return [d for split in _target_splits(splits) for d in getattr(splits, split) if d.domain in domains]


def _target_splits(splits: DatasetSplits) -> tuple[str, ...]:
    return DG_TARGET_SPLITS.get(splits.name, DEFAULT_TARGET_SPLITS)


def common_image_folder(splits: DatasetSplits) -> str:
    """The deepest folder holding every image of ``splits``: recorded paths are relative to it."""
    folders = {os.path.dirname(d.impath) for items in (splits.train, splits.val, splits.test) for d in items}
    return os.path.commonpath(folders)


# ------------------------------------------------------------------------------------ the record

def draw_record(task: DatasetSplits) -> dict:
    """What a run folder's fewshot.json holds: the drawn images (relative paths) and the shortfalls."""
    base = task.fewshot.base

    def relative(items: list[Datum]) -> list[str]:
        return [Path(os.path.relpath(d.impath, base)).as_posix() for d in items]

    return {"dataset": task.name, "shots": task.fewshot.shots, "seed": task.fewshot.seed,
            "per_domain": task.fewshot.per_domain, "train": relative(task.train),
            "val": relative(task.val) if task.draw_val else None,  # None: val is the test set, kept whole
            "shortfall": [s.as_dict() for s in shortfalls(task)]}


def recorded_items(record: dict, source: str | Path, splits: DatasetSplits, pools: DatasetSplits) -> DatasetSplits:
    """``pools`` (the task before its draw) with train / val as a fewshot.json ``record`` lists them."""
    _check_record(record, source)
    if record.get("dataset") != splits.name:
        raise MetapromptError(f"{source}: records a draw of {record.get('dataset')!r}, expected one of {splits.name!r}")
    base = common_image_folder(splits)
    train = _resolve(source, base, record["train"], pools.train, "train")
    val = pools.val if record["val"] is None else _resolve(source, base, record["val"], pools.val or pools.train, "val")
    return pools.with_items(train=train, val=val, fewshot=FewShot(record["shots"], record["seed"], base,
                                                                   record.get("per_domain", False)))


def _check_record(record, source: str | Path) -> None:
    def paths(value) -> bool:
        return isinstance(value, list) and all(isinstance(p, str) for p in value)

    if not (isinstance(record, dict) and paths(record.get("train")) and (record.get("val") is None or paths(record["val"]))
            and all(isinstance(record.get(k), int) and not isinstance(record.get(k), bool) for k in ("shots", "seed"))):
        found = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise MetapromptError(f"{source}: expected the draw a run records (dataset, shots, seed, and train / val lists "
                              f"of image paths), found {found}; delete the run folder (or `train --overwrite`) to draw "
                              "again")


def _resolve(source: str | Path, base: str, relpaths: list[str], pool: list[Datum], split: str) -> list[Datum]:
    by_path = {os.path.normpath(d.impath): d for d in pool}
    items = []
    for relpath in relpaths:
        item = by_path.get(os.path.normpath(os.path.join(base, *relpath.split("/"))))
        if item is None:
            raise MetapromptError(
                f"{source}: lists {relpath!r} in {split}, which is not among the dataset's {split} images under "
                f"{base} (the data changed since the run started; delete the run folder, or `train --overwrite`, to draw "
                f"again)")
        items.append(item)
    return items
