"""Few-shot subsets, base / new class halves, and leave-one-domain-out tasks (method doc section 5).

Drawn subsets are cached as small JSON files listing image paths relative to the dataset's folder (the
deepest folder holding all its images), so a cache stays valid when the data root moves, unlike the
reference code's pickles of absolute paths.
"""
from __future__ import annotations

import json
import math
import os
import random
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from ..errors import MetapromptError
from .base import Datum, DatasetSplits

VAL_SHOTS_CAP = 4  # val = min(K, 4) shots per class, as in CoOp
SUBSETS = ("base", "new", "all")
# Which of the reader's splits hold a target domain's test images, where it is not ``test``: PACS tests
# on the target's train + crossval lists. (OfficeHome's reader already puts the whole domain in test;
# VLCS, DomainNet and world_dg test on the target's test split.)
DG_TARGET_SPLITS: dict[str, tuple[str, ...]] = {"pacs": ("train", "val")}
DEFAULT_TARGET_SPLITS = ("test",)


def few_shot(items: list[Datum], shots: int, seed: int, per_domain: bool = False) -> list[Datum]:
    """``shots`` items per class (per class and domain when ``per_domain``), drawn deterministically
    from ``seed``; raises when a class has fewer than ``shots`` items."""
    return _sample(items, shots, random.Random(seed), per_domain)


def _sample(items: list[Datum], shots: int, rng: random.Random, per_domain: bool) -> list[Datum]:
    if shots < 1:
        raise MetapromptError(f"shots must be at least 1, got {shots}")
    if not items:
        raise MetapromptError(f"no images to draw {shots} shots per class from")
    groups: dict[tuple[str, int], list[Datum]] = defaultdict(list)
    for item in items:
        groups[(item.domain if per_domain else "", item.label)].append(item)
    key = min(groups, key=lambda k: len(groups[k]))
    if len(groups[key]) < shots:
        smallest = groups[key][0]
        where = f" in domain {smallest.domain!r}" if per_domain else ""
        raise MetapromptError(
            f"cannot draw {shots} shots per class{' per domain' if per_domain else ''}: class "
            f"{smallest.classname!r} (label {smallest.label}){where} has only {len(groups[key])} image(s)")
    return [d for k in sorted(groups) for d in rng.sample(sorted(groups[k], key=lambda d: d.impath), shots)]


def fewshot_splits(splits: DatasetSplits, shots: int, seed: int,
                   cache_dir: str | Path | None = None) -> DatasetSplits:
    """``splits`` with train = ``shots`` per class and val = min(shots, 4) per class drawn from val (from
    train when val is empty, as CoOp). With ``cache_dir``, the draw is kept in
    ``cache_dir/shot_{K}-seed_{S}.json`` and reused by later calls."""
    if not splits.train:
        raise MetapromptError(f"{splits.name}: has no training images to draw {shots} shots per class from "
                              "(it is a test-only dataset)")
    cache = _cache_path(cache_dir, f"shot_{shots}-seed_{seed}.json")
    train, val = _draw(splits, splits.train, splits.val or splits.train, shots, seed, cache, per_domain=False)
    return splits.with_items(train=train, val=val)


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


def dg_task(splits: DatasetSplits, target: str, shots: int, seed: int,
            cache_dir: str | Path | None = None) -> DatasetSplits:
    """Leave ``target`` out: train / val = ``shots`` / min(shots, 4) per class per source domain (val
    drawn from the sources' val, or their train when there is none), test = the target's test images as
    the protocol defines them. ``domains`` lists the source domains; test items name the target. The draw
    is cached in ``cache_dir/shot_{K}-seed_{S}-target_{T}.json``."""
    if target not in splits.domains:
        known = ", ".join(splits.domains) or "(none: not a domain-generalisation dataset)"
        raise MetapromptError(f"{splits.name}: unknown target domain {target!r}; expected one of: {known}")
    sources = [d for d in splits.domains if d != target]
    train_pool = [d for d in splits.train if d.domain in sources]
    val_pool = [d for d in splits.val if d.domain in sources] or train_pool
    test = _domain_test_items(splits, {target})
    if not test:
        raise MetapromptError(f"{splits.name}: no test images for target domain {target!r} "
                              f"(looked in its {' and '.join(_target_splits(splits))} split)")
    cache = _cache_path(cache_dir, f"shot_{shots}-seed_{seed}-target_{target}.json")
    train, val = _draw(splits, train_pool, val_pool, shots, seed, cache, per_domain=True)
    return splits.with_items(train=train, val=val, test=test, domains=sources)


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


def _cache_path(cache_dir: str | Path | None, filename: str) -> Path | None:
    return None if cache_dir is None else Path(cache_dir) / filename


def _draw(splits: DatasetSplits, train_pool: list[Datum], val_pool: list[Datum], shots: int, seed: int,
          cache: Path | None, per_domain: bool) -> tuple[list[Datum], list[Datum]]:
    """Train and val shots, from ``cache`` when it exists, else drawn (one random stream, train first,
    like CoOp) and written to ``cache``."""
    base = common_image_folder(splits)
    if cache is not None and cache.is_file():
        return _load_cache(cache, base, splits.name, train_pool, val_pool)
    rng = random.Random(seed)
    train = _sample(train_pool, shots, rng, per_domain)
    val = _sample(val_pool, min(shots, VAL_SHOTS_CAP), rng, per_domain)
    if cache is not None:
        _write_cache(cache, base, splits.name, train, val)
    return train, val


def common_image_folder(splits: DatasetSplits) -> str:
    """The deepest folder holding every image of ``splits``: cached paths are relative to it."""
    folders = {os.path.dirname(d.impath) for items in (splits.train, splits.val, splits.test) for d in items}
    return os.path.commonpath(folders)


def _write_cache(cache: Path, base: str, name: str, train: list[Datum], val: list[Datum]) -> None:
    def relative(items: list[Datum]) -> list[str]:
        return [Path(os.path.relpath(d.impath, base)).as_posix() for d in items]

    cache.parent.mkdir(parents=True, exist_ok=True)
    content = {"dataset": name, "train": relative(train), "val": relative(val)}
    cache.write_text(json.dumps(content, indent=1) + "\n", encoding="utf-8")


def _load_cache(cache: Path, base: str, name: str, train_pool: list[Datum],
                val_pool: list[Datum]) -> tuple[list[Datum], list[Datum]]:
    try:
        content = json.loads(cache.read_text(encoding="utf-8"))
        cached_name, train, val = content["dataset"], content["train"], content["val"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise MetapromptError(
            f"{cache}: not a few-shot cache ({err}); expected "
            '{"dataset": name, "train": [relpath, ...], "val": [...]}; delete it to draw again') from None
    if cached_name != name:
        raise MetapromptError(f"{cache}: holds a draw of {cached_name!r}, expected one of {name!r}")
    return _resolve(cache, base, train, train_pool, "train"), _resolve(cache, base, val, val_pool, "val")


def _resolve(cache: Path, base: str, relpaths: list[str], pool: list[Datum], split: str) -> list[Datum]:
    by_path = {os.path.normpath(d.impath): d for d in pool}
    items = []
    for relpath in relpaths:
        item = by_path.get(os.path.normpath(os.path.join(base, *relpath.split("/"))))
        if item is None:
            raise MetapromptError(
                f"{cache}: lists {relpath!r} in {split}, which is not among the dataset's {split} images under "
                f"{base}; the cache is stale (delete it to draw again)")
        items.append(item)
    return items
